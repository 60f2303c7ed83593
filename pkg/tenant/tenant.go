// Package tenant decides which hosts extauthz serves and, in multitenant
// mode, the tenant of each: approuter's TENANT_HOST_PATTERN, a regular
// expression whose first capture group is the tenant's subdomain. Without a
// pattern one tenant is served on the hosts the configuration names
// (EXTAUTHZ_ALLOWED_HOSTS, or Cloud Foundry's application_uris), and on
// loopback names only when nothing names a host.
package tenant

import (
	"errors"
	"fmt"
	"net/netip"
	"regexp"
	"strconv"
	"strings"
)

// MaxHostLen bounds the hosts looked at; longer ones match nothing.
const MaxHostLen = 253

// Resolver maps hosts to tenants. It is safe for concurrent use.
type Resolver struct {
	pattern *regexp.Regexp
	// exact and suffixes are the allowed hosts of single-tenant mode
	// ("*.example.com" is the suffix ".example.com"); both empty: loopback.
	exact    map[string]bool
	suffixes []string
	// trustForwardedHost takes x-forwarded-host instead of the host, for a
	// trusted proxy in front of Envoy that rewrites Host.
	trustForwardedHost bool
}

// Options configure a Resolver.
type Options struct {
	// Pattern is TENANT_HOST_PATTERN; "" is single-tenant.
	Pattern string
	// AllowedHosts are the host names served in single-tenant mode (no
	// port; "*.example.com" allows every subdomain). None: loopback only.
	AllowedHosts []string
	// TrustForwardedHost: the host is x-forwarded-host when present.
	TrustForwardedHost bool
}

var (
	// ErrUnknownHost is returned for a well-formed host extauthz does not
	// serve: outside TENANT_HOST_PATTERN or the allowed hosts.
	ErrUnknownHost = errors.New("host is not one of ours")
	// ErrBadHost is returned for a Host that is not a DNS name or IP
	// literal with an optional port.
	ErrBadHost = errors.New("invalid host")
)

// New compiles the options. The pattern must have a capture group.
func New(o Options) (*Resolver, error) {
	r := &Resolver{trustForwardedHost: o.TrustForwardedHost, exact: map[string]bool{}}
	for _, h := range o.AllowedHosts {
		name, err := AllowedHost(h)
		if err != nil {
			return nil, err
		}
		if s, ok := strings.CutPrefix(name, "*"); ok {
			r.suffixes = append(r.suffixes, s)
		} else {
			r.exact[name] = true
		}
	}
	if o.Pattern == "" {
		return r, nil
	}
	re, err := regexp.Compile(o.Pattern)
	if err != nil {
		return nil, fmt.Errorf("not a regular expression: %w", err)
	}
	if re.NumSubexp() < 1 {
		return nil, errors.New("needs a capture group for the tenant, e.g. ^(.*)\\.app\\.example\\.com$")
	}
	r.pattern = re
	return r, nil
}

// AllowedHost checks one entry of an allowed-host list and returns it
// lower-cased without a trailing dot: a DNS name, an IP literal, or
// "*.<name>".
func AllowedHost(h string) (string, error) {
	name := strings.ToLower(strings.TrimSpace(h))
	wild := strings.HasPrefix(name, "*.")
	if wild {
		name = name[2:]
	}
	n, port, ok := splitHost(name)
	if !ok || port != "" || wild && n[0] == '[' {
		return "", fmt.Errorf("%q is not a host name (a DNS name, an IP address or *.<domain>, without port or path)", h)
	}
	n = strings.TrimSuffix(n, ".")
	if wild {
		return "*." + n, nil
	}
	return n, nil
}

// MultiTenant says whether a pattern is set.
func (r *Resolver) MultiTenant() bool { return r.pattern != nil }

// LoopbackOnly says whether nothing names a host, so that only loopback
// names are served.
func (r *Resolver) LoopbackOnly() bool {
	return r.pattern == nil && len(r.exact) == 0 && len(r.suffixes) == 0
}

// Resolve returns a request's host in canonical form (lower-case name
// without a trailing dot, and the port if any: what URLs pointing back at
// the request are built from) and its tenant ("" in single-tenant mode).
// host is the Host/:authority; forwardedHost the x-forwarded-host header,
// used only when trusted. The error is ErrBadHost or ErrUnknownHost.
func (r *Resolver) Resolve(host, forwardedHost string) (canonical, tenant string, err error) {
	if r.trustForwardedHost && forwardedHost != "" {
		host = lastValue(forwardedHost)
	}
	name, port, ok := splitHost(host)
	if !ok {
		return "", "", ErrBadHost
	}
	name = strings.TrimSuffix(name, ".")
	canonical = name
	if port != "" {
		canonical += ":" + port
	}
	switch {
	case r.pattern != nil:
		m := r.pattern.FindStringSubmatch(name)
		if m == nil || !validLabel(m[1]) {
			return "", "", ErrUnknownHost
		}
		return canonical, m[1], nil
	case r.LoopbackOnly():
		if !loopback(name) {
			return "", "", ErrUnknownHost
		}
	case !r.exact[name] && !r.matchSuffix(name):
		return "", "", ErrUnknownHost
	}
	return canonical, "", nil
}

func (r *Resolver) matchSuffix(name string) bool {
	for _, s := range r.suffixes {
		if len(name) > len(s) && strings.HasSuffix(name, s) {
			return true
		}
	}
	return false
}

// loopback: localhost and its subdomains (RFC 6761), 127.0.0.0/8, [::1].
func loopback(name string) bool {
	if name == "localhost" || strings.HasSuffix(name, ".localhost") {
		return true
	}
	a, err := netip.ParseAddr(strings.Trim(name, "[]"))
	return err == nil && a.IsLoopback()
}

// splitHost parses host[:port]: a DNS name or a bracketed IPv6 literal, and
// a port 1-65535 when there is a colon. The name is lower-cased.
func splitHost(host string) (name, port string, ok bool) {
	if host == "" || len(host) > MaxHostLen+6 {
		return "", "", false
	}
	host = strings.ToLower(host)
	name = host
	if strings.HasPrefix(host, "[") {
		end := strings.IndexByte(host, ']')
		if end < 2 {
			return "", "", false
		}
		name, port = host[:end+1], host[end+1:]
		if port != "" && (port[0] != ':' || len(port) == 1) {
			return "", "", false
		}
		port = strings.TrimPrefix(port, ":")
		if a, err := netip.ParseAddr(name[1:end]); err != nil || !a.Is6() || a.Zone() != "" {
			return "", "", false
		}
	} else if i := strings.LastIndexByte(host, ':'); i >= 0 {
		name, port = host[:i], host[i+1:]
		if port == "" || name == "" {
			return "", "", false
		}
	}
	if port != "" {
		n, err := strconv.Atoi(port)
		if err != nil || n < 1 || n > 65535 || port[0] == '+' || port[0] == '0' {
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

// lastValue is the last of a header's comma-separated values: the one the
// proxy next to us set or appended. The first may be the client's own,
// kept by a proxy that appends (Envoy's append_x_forwarded_host).
func lastValue(v string) string {
	if i := strings.LastIndexByte(v, ','); i >= 0 {
		v = v[i+1:]
	}
	return strings.TrimSpace(v)
}
