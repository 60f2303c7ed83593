package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"
)

// integer parses a whole number within [min, max].
func integer(dst *int, v string, min, max int) error {
	n, err := strconv.Atoi(strings.TrimSpace(v))
	if err != nil {
		return fmt.Errorf("%q is not a whole number", v)
	}
	if n < min || n > max {
		return fmt.Errorf("%d: must be between %d and %d", n, min, max)
	}
	*dst = n
	return nil
}

// positiveDuration parses a duration above zero.
func positiveDuration(dst *time.Duration, v string) error {
	var d time.Duration
	if err := duration(&d, v, false); err != nil {
		return err
	}
	if d == 0 {
		return fmt.Errorf("%q: must be above zero", v)
	}
	*dst = d
	return nil
}
