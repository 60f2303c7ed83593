package authz

import (
	"net/http"
	"strings"
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
func (e *Engine) secure(r *Request) bool {
	switch e.opt.SecureCookie {
	case "true":
		return true
	case "false":
		return false
	}
	return e.scheme(r) == "https"
}

// scheme is the scheme the browser used: x-forwarded-proto (first hop) when
// present, else what the proxy saw.
func (e *Engine) scheme(r *Request) string {
	if p := r.Headers["x-forwarded-proto"]; p != "" {
		p, _, _ = strings.Cut(p, ",")
		if p = strings.ToLower(strings.TrimSpace(p)); p == "https" || p == "http" {
			return p
		}
	}
	if r.Scheme == "https" {
		return "https"
	}
	return "http"
}

// setCookie renders a Set-Cookie header. maxAge < 0 deletes the cookie;
// 0 makes a browser-session cookie.
func (e *Engine) setCookie(r *Request, name, value, path string, maxAge int) string {
	c := http.Cookie{
		Name: name, Value: value, Path: path, HttpOnly: true,
		Secure: e.secure(r),
	}
	switch e.opt.SameSite {
	case "None":
		c.SameSite = http.SameSiteNoneMode
	case "Strict":
		c.SameSite = http.SameSiteStrictMode
	default:
		c.SameSite = http.SameSiteLaxMode
	}
	c.Partitioned = e.opt.Partitioned && c.Secure
	if maxAge < 0 {
		c.MaxAge = -1
	} else if maxAge > 0 {
		c.MaxAge = maxAge
	}
	return c.String()
}

// returnPath is where the browser goes back to after the login: the request
// target if it is a plain path on this host, else "/".
func returnPath(target string) string {
	if !strings.HasPrefix(target, "/") || strings.HasPrefix(target, "//") || strings.HasPrefix(target, "/\\") ||
		strings.ContainsAny(target, "\r\n\t\\") || len(target) > 4096 {
		return "/"
	}
	return target
}
