// Package tenant finds the tenant of a request from its host, as approuter's
// TENANT_HOST_PATTERN does: a regular expression whose first capture group is
// the tenant's subdomain.
package tenant

import (
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// MaxHostLen bounds the hosts looked at; longer ones match nothing.
const MaxHostLen = 253

// Resolver maps hosts to tenants. The zero value is single-tenant.
type Resolver struct {
	pattern *regexp.Regexp
	// trustForwardedHost takes x-forwarded-host instead of the host, for a
	// trusted proxy in front of Envoy that rewrites Host.
	trustForwardedHost bool
}

// ErrNoTenant is returned for a host outside the pattern.
var ErrNoTenant = errors.New("host does not match TENANT_HOST_PATTERN")

// New compiles a pattern. An empty pattern means single-tenant. The pattern
// must have a capture group.
func New(pattern string, trustForwardedHost bool) (*Resolver, error) {
	r := &Resolver{trustForwardedHost: trustForwardedHost}
	if pattern == "" {
		return r, nil
	}
	re, err := regexp.Compile(pattern)
	if err != nil {
		return nil, fmt.Errorf("not a regular expression: %w", err)
	}
	if re.NumSubexp() < 1 {
		return nil, errors.New("needs a capture group for the tenant, e.g. ^(.*)\\.app\\.example\\.com$")
	}
	r.pattern = re
	return r, nil
}

// MultiTenant says whether a pattern is set.
func (r *Resolver) MultiTenant() bool { return r.pattern != nil }

// Resolve returns the tenant of a request. host is the Host/:authority;
// forwardedHost the x-forwarded-host header. Single-tenant: "" and no error.
func (r *Resolver) Resolve(host, forwardedHost string) (string, error) {
	if r.pattern == nil {
		return "", nil
	}
	if r.trustForwardedHost && forwardedHost != "" {
		host, _, _ = strings.Cut(forwardedHost, ",")
	}
	h := Hostname(host)
	if h == "" {
		return "", ErrNoTenant
	}
	m := r.pattern.FindStringSubmatch(h)
	if m == nil || !validLabel(m[1]) {
		return "", ErrNoTenant
	}
	return m[1], nil
}

// Hostname is the host without port, lower-cased and without a trailing
// dot; "" for a host that is not a plain DNS name or IP literal.
func Hostname(host string) string {
	name, _, ok := splitHost(host)
	if !ok {
		return ""
	}
	return strings.TrimSuffix(name, ".")
}

// ValidHost returns a request's host[:port], lower-cased, if it is a plain
// DNS name or IP literal with an optional port (no userinfo, path, spaces
// or other tricks), for building URLs that point back at it.
func ValidHost(host string) (string, bool) {
	name, port, ok := splitHost(host)
	if !ok {
		return "", false
	}
	if port != "" {
		return name + ":" + port, true
	}
	return name, true
}

// splitHost parses host[:port]: a DNS name or a bracketed IPv6 literal, and
// a port 1-65535 when there is a colon.
func splitHost(host string) (name, port string, ok bool) {
	host = strings.ToLower(strings.TrimSpace(host))
	if host == "" || len(host) > MaxHostLen+6 {
		return "", "", false
	}
	name = host
	if strings.HasPrefix(host, "[") {
		end := strings.IndexByte(host, ']')
		if end < 2 {
			return "", "", false
		}
		name, port = host[:end+1], host[end+1:]
		if port != "" && port[0] != ':' {
			return "", "", false
		}
		port = strings.TrimPrefix(port, ":")
		for _, c := range name[1:end] {
			if !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c == ':' || c == '.') {
				return "", "", false
			}
		}
	} else if i := strings.LastIndexByte(host, ':'); i >= 0 {
		name, port = host[:i], host[i+1:]
		if port == "" {
			return "", "", false
		}
	}
	if port != "" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 || port[0] == '+' {
			return "", "", false
		}
	}
	if name[0] == '[' {
		return name, port, true
	}
	if len(name) > MaxHostLen || strings.HasPrefix(name, ".") || strings.HasPrefix(name, "-") || strings.Contains(name, "..") || strings.TrimSuffix(name, ".") == "" {
		return "", "", false
	}
	for _, c := range name {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return "", "", false
		}
	}
	return name, port, true
}

// validLabel accepts a tenant subdomain: one or more DNS labels.
func validLabel(s string) bool {
	if s == "" || len(s) > 63*4 || strings.HasPrefix(s, ".") || strings.HasSuffix(s, ".") || strings.HasPrefix(s, "-") {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '.' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}
