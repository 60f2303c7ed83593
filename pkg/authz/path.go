package authz

import (
	"errors"
	"strings"
)

// errBadPath is returned for a request target that cannot be read as one
// unambiguous path.
var errBadPath = errors.New("ambiguous or malformed path")

// canonicalPath splits a request target into the path every decision reads
// and the query, which no route decision reads (as approuter).
//
// The path is the one an upstream serves, whatever the spelling: percent
// escapes of unreserved characters decoded (%61 is a), dot segments
// resolved (RFC 3986 §5.2.4), repeated slashes merged, and path parameters
// (";jsessionid=…", as Tomcat strips them) cut from every segment, so that
// "/public/..;/admin", "//admin", "/%61dmin" and "/admin;/x" are all /admin.
// Escapes that remain are upper-cased.
//
// What cannot be made unambiguous is refused, never matched as something
// else: an encoded "/" or "\" (one upstream splits on it, another does
// not), a backslash, NUL and other control characters (raw or encoded),
// bytes outside ASCII, an invalid escape, a dot segment above the root, a
// target that does not start with "/". So are the spellings whose meaning
// depends on the upstream: a segment that is "." or ".." or empty only once
// its parameters are cut ("/admin/..;/public" is /public to Tomcat and
// /admin/… to Go, Node and nginx), and repeated slashes next to dot
// segments ("/admin//../public" is /admin/public by RFC 3986 and Envoy,
// /public by Go's path.Clean).
//
// A target that is already canonical — almost every request — is returned
// as it is, without allocating.
func canonicalPath(target string) (path, query string, err error) {
	path, query, _ = strings.Cut(target, "?")
	if path == "" || path[0] != '/' {
		return "", "", errBadPath
	}
	for i := 0; i < len(query); i++ {
		if c := query[i]; c < 0x20 || c >= 0x7f || c == '#' {
			return "", "", errBadPath
		}
	}
	clean := true
	for i := 0; i < len(path); i++ {
		switch c := path[i]; {
		case c <= 0x20 || c >= 0x7f || c == '\\' || c == '#':
			return "", "", errBadPath
		case c == '%' || c == ';':
			clean = false
		case c == '/' && i+1 < len(path) && (path[i+1] == '/' || path[i+1] == '.' && dotSegment(path[i+1:])):
			clean = false
		}
	}
	if clean {
		return path, query, nil
	}
	p, err := resolvePath(path)
	return p, query, err
}

// dotSegment says whether s starts with the segment "." or "..".
func dotSegment(s string) bool {
	s, _, _ = strings.Cut(s, "/")
	return s == "." || s == ".."
}

// resolvePath is the slow path of canonicalPath: path starts with "/" and
// holds no raw byte that is refused.
func resolvePath(path string) (string, error) {
	raws := strings.Split(path[1:], "/")
	segs := make([]string, 0, len(raws))
	trailing, empty, dots := false, false, false
	var b strings.Builder
	for i, raw := range raws {
		seg, err := decodeSegment(raw, &b)
		if err != nil {
			return "", err
		}
		dot := seg == "." || seg == ".."
		if (dot || seg == "") && strings.Contains(raw, ";") {
			return "", errBadPath // a dot or empty segment made by cutting parameters
		}
		empty = empty || seg == "" && i < len(raws)-1
		dots = dots || dot
		if empty && dots {
			return "", errBadPath // repeated slashes and dot segments: resolved differently upstream
		}
		trailing = seg == "" || dot
		switch seg {
		case "", ".":
		case "..":
			if len(segs) == 0 {
				return "", errBadPath
			}
			segs = segs[:len(segs)-1]
		default:
			segs = append(segs, seg)
		}
	}
	b.Reset()
	for _, s := range segs {
		b.WriteByte('/')
		b.WriteString(s)
	}
	if trailing || len(segs) == 0 {
		b.WriteByte('/')
	}
	return b.String(), nil
}

// decodeSegment decodes one path segment: unreserved escapes decoded,
// others kept upper-case, the parameters after ";" cut. The parameters reach
// the upstream too, so what they hold is checked as carefully as the rest.
func decodeSegment(raw string, b *strings.Builder) (string, error) {
	if !strings.ContainsAny(raw, "%;") {
		return raw, nil
	}
	b.Reset()
	params := false
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c == ';' {
			params = true
			continue
		}
		if c != '%' {
			if !params {
				b.WriteByte(c)
			}
			continue
		}
		if i+2 >= len(raw) {
			return "", errBadPath
		}
		hi, ok1 := unhex(raw[i+1])
		lo, ok2 := unhex(raw[i+2])
		if !ok1 || !ok2 {
			return "", errBadPath
		}
		i += 2
		v := hi<<4 | lo
		switch {
		case v < 0x20 || v == 0x7f || v == '/' || v == '\\':
			return "", errBadPath
		case params:
		case unreserved(v):
			b.WriteByte(v)
		default:
			b.WriteByte('%')
			b.WriteByte(upperhex[v>>4])
			b.WriteByte(upperhex[v&15])
		}
	}
	return b.String(), nil
}

const upperhex = "0123456789ABCDEF"

func unhex(c byte) (byte, bool) {
	switch {
	case c >= '0' && c <= '9':
		return c - '0', true
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10, true
	case c >= 'A' && c <= 'F':
		return c - 'A' + 10, true
	}
	return 0, false
}

// unreserved: RFC 3986 §2.3, the characters whose escapes mean the same.
func unreserved(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}
