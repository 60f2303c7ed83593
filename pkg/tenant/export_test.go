package tenant

import "strings"

// Hostname is the host without port, lower-cased and without a trailing
// dot; "" for a host that is not a plain DNS name or IP literal (for the
// tests to check what Resolve returns).
func Hostname(host string) string {
	name, _, ok := splitHost(host)
	if !ok {
		return ""
	}
	return strings.TrimSuffix(name, ".")
}
