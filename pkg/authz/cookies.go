package authz

import (
	"net/http"
	"net/netip"
	"strings"

	"github.com/extauthz/extauthz/pkg/session"
)

// cookieValue returns the value of the first cookie called name in a Cookie
// header ("a=1; b=2"), without allocating.
func cookieValue(header, name string) string {
	for header != "" {
		var part string
		part, header, _ = strings.Cut(header, ";")
		part = strings.TrimSpace(part)
		if k, v, ok := strings.Cut(part, "="); ok && k == name {
			return strings.Trim(v, `"`)
		}
	}
	return ""
}

// withoutCookie returns the Cookie header without any cookie called name.
func withoutCookie(header, name string) string {
	if !strings.Contains(header, name) {
		return strings.TrimSpace(header)
	}
	var b strings.Builder
	for header != "" {
		var part string
		part, header, _ = strings.Cut(header, ";")
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		if k, _, _ := strings.Cut(part, "="); k == name {
			continue
		}
		if b.Len() > 0 {
			b.WriteString("; ")
		}
		b.WriteString(part)
	}
	return b.String()
}

// secure says whether cookies for this request get the Secure attribute.
func (e *Engine) secure(r *in) bool {
	switch e.opt.SecureCookie {
	case session.SecureNever:
		return false
	case session.SecureAuto:
		return e.scheme(r) == "https"
	}
	return true
}

// urlScheme is the scheme of the URLs that point back at the app (the
// OAuth2 redirect URI, the page after logout): https when cookies are Secure
// (they only work over https then), else the browser's. Loopback hosts are
// the exception: browsers keep Secure cookies on http://localhost, so local
// development over plain http works with the secure default.
func (e *Engine) urlScheme(r *in) string {
	if e.secure(r) && !loopbackHost(r.host) {
		return "https"
	}
	return e.scheme(r)
}

// loopbackHost says whether a canonical host[:port] names this machine as
// browsers see it: localhost, *.localhost, or a loopback address.
func loopbackHost(host string) bool {
	if a, err := netip.ParseAddrPort(host); err == nil {
		return a.Addr().IsLoopback()
	}
	name, _, _ := strings.Cut(host, ":")
	if strings.HasPrefix(host, "[") {
		name = strings.Trim(host, "[]")
	}
	if a, err := netip.ParseAddr(name); err == nil {
		return a.IsLoopback()
	}
	return name == "localhost" || strings.HasSuffix(name, ".localhost")
}

// scheme is the scheme the browser used: x-forwarded-proto (its last value,
// the one the proxy next to us set or appended) when that proxy is trusted,
// else what the proxy saw.
func (e *Engine) scheme(r *in) string {
	if e.opt.TrustForwardedProto {
		if p := r.headers["x-forwarded-proto"]; p != "" {
			if i := strings.LastIndexByte(p, ','); i >= 0 {
				p = p[i+1:]
			}
			if p = strings.ToLower(strings.TrimSpace(p)); p == "https" || p == "http" {
				return p
			}
		}
	}
	if r.scheme == "https" {
		return "https"
	}
	return "http"
}

// setCookie renders a Set-Cookie header. maxAge < 0 deletes the cookie;
// 0 makes a browser-session cookie.
func (e *Engine) setCookie(r *in, name, value, path string, maxAge int) string {
	c := http.Cookie{
		Name: name, Value: value, Path: path, HttpOnly: true,
		Secure: e.secure(r),
	}
	c.SameSite = e.opt.SameSite
	c.Partitioned = e.opt.Partitioned && c.Secure
	if maxAge < 0 {
		c.MaxAge = -1
	} else if maxAge > 0 {
		c.MaxAge = maxAge
	}
	return c.String()
}
