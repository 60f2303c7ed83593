package config

import "log/slog"

// Secret is a string that never prints: logs and error messages show
// "[redacted]". Use string(s) where the value is really needed.
type Secret string

func (s Secret) String() string {
	if s == "" {
		return ""
	}
	return "[redacted]"
}

// LogValue makes slog print the redacted form.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.String()) }

// GoString covers %#v.
func (s Secret) GoString() string { return s.String() }
