package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"
)

func addr(dst *string, v string) error {
	_, port, err := net.SplitHostPort(v)
	if err != nil {
		return fmt.Errorf("%q is not host:port", v)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q: bad port", v)
	}
	*dst = v
	return nil
}

func boolean(dst *bool, v string) error {
	b, err := strconv.ParseBool(v)
	if err != nil {
		return fmt.Errorf("%q is not true or false", v)
	}
	*dst = b
	return nil
}

func oneOf(dst *string, v string, allowed ...string) error {
	if !slices.Contains(allowed, v) {
		return fmt.Errorf("%q is not one of %s", v, strings.Join(allowed, ", "))
	}
	*dst = v
	return nil
}

func nonEmpty(dst *string, v string) error {
	if strings.TrimSpace(v) == "" {
		return errors.New("must not be empty")
	}
	*dst = v
	return nil
}

// duration parses a Go duration; with minutes, a plain number is minutes
// (approuter's SESSION_TIMEOUT and JWT_REFRESH).
func duration(dst *time.Duration, v string, minutes bool) error {
	v = strings.TrimSpace(v)
	if minutes {
		if n, err := strconv.ParseFloat(v, 64); err == nil {
			if n < 0 {
				return fmt.Errorf("%q: must not be negative", v)
			}
			*dst = time.Duration(n * float64(time.Minute))
			return nil
		}
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		if minutes {
			return fmt.Errorf("%q is neither minutes nor a duration such as 30m", v)
		}
		return fmt.Errorf("%q is not a duration such as 250ms or 15s", v)
	}
	if d < 0 {
		return fmt.Errorf("%q: must not be negative", v)
	}
	*dst = d
	return nil
}

func path(dst *string, v string) error {
	if !strings.HasPrefix(v, "/") || strings.HasPrefix(v, "//") || strings.ContainsAny(v, "?# \\") {
		return fmt.Errorf("%q must be an absolute path such as /logout", v)
	}
	*dst = v
	return nil
}

// cookieName accepts an RFC 6265 token.
func cookieName(dst *string, v string) error {
	if v == "" {
		return errors.New("must not be empty")
	}
	for _, r := range v {
		if r <= ' ' || r >= 0x7f || strings.ContainsRune(`()<>@,;:\"/[]?={}`, r) {
			return fmt.Errorf("%q is not a valid cookie name", v)
		}
	}
	*dst = v
	return nil
}

func secrets(dst *[]Secret, v string) error {
	var out []Secret
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, Secret(s))
		}
	}
	*dst = out
	return nil
}

// cookies reads approuter's COOKIES JSON.
func (c *Config) cookies(v string) error {
	c.SameSite, c.Partitioned = http.SameSiteLaxMode, false
	if strings.TrimSpace(v) == "" {
		return nil
	}
	var raw struct {
		SameSite    *string `json:"SameSite"`
		Partitioned *bool   `json:"Partitioned"`
	}
	d := json.NewDecoder(strings.NewReader(v))
	d.DisallowUnknownFields()
	if err := d.Decode(&raw); err != nil {
		return fmt.Errorf(`must be JSON such as {"SameSite":"None","Partitioned":true}: %v`, err)
	}
	if raw.SameSite != nil {
		s := *raw.SameSite
		switch strings.ToLower(s) {
		case "lax":
			c.SameSite = http.SameSiteLaxMode
		case "strict":
			c.SameSite = http.SameSiteStrictMode
		case "none":
			c.SameSite = http.SameSiteNoneMode
		default:
			return fmt.Errorf("SameSite: %q is not None, Lax or Strict", s)
		}
	}
	if raw.Partitioned != nil {
		c.Partitioned = *raw.Partitioned
	}
	return nil
}

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
