package session

import "fmt"

// SecureMode says when session and login cookies get the Secure attribute
// (approuter's SECURE_SESSION_COOKIE).
type SecureMode string

const (
	// SecureAlways: every cookie is Secure (the default).
	SecureAlways SecureMode = "true"
	// SecureNever: no cookie is Secure (plain-http development only).
	SecureNever SecureMode = "false"
	// SecureAuto: Secure when the browser came over https.
	SecureAuto SecureMode = "auto"
)

// ParseSecureMode reads "true", "false" or "auto".
func ParseSecureMode(v string) (SecureMode, error) {
	switch m := SecureMode(v); m {
	case SecureAlways, SecureNever, SecureAuto:
		return m, nil
	}
	return "", fmt.Errorf("%q is not one of auto, true, false", v)
}
