package authz

import (
	"net/http"
	"slices"
	"strings"
)

// validMethod says whether a request method can be decided on as it is
// spelled: a token (RFC 9110 §5.6.2) of at most 32 characters with no
// lower-case letter.
//
// Methods are case-sensitive (RFC 9110 §9.1) and xs-app.json's httpMethods
// and scope keys are upper-case, so "delete" matches neither a DELETE-only
// route nor a DELETE scope; but ASP.NET Core, Flask/werkzeug and others
// serve it as DELETE, and Envoy passes it on over HTTP/2 (nginx and Node
// refuse it). As with a path whose meaning depends on the upstream, such a
// spelling is refused, never decided as something else; so are empty
// methods, and separators or control characters that no proxy sends.
func validMethod(m string) bool {
	if m == "" || len(m) > 32 {
		return false
	}
	for i := 0; i < len(m); i++ {
		c := m[i]
		if !('A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0) {
			return false
		}
	}
	return true
}

// maxImplied bounds the methods a request may stand for besides its own
// (each is decided like the request): a client sends one override, and
// HEAD adds GET.
const maxImplied = 4

// methodOverrides are the headers with which frameworks let a request stand
// for another method (Express's method-override, ASP.NET Core's
// UseHttpMethodOverride, Jersey, Symfony, Laravel; SAPUI5's OData model
// tunnels MERGE and DELETE through POST with X-HTTP-Method).
var methodOverrides = []string{"x-http-method-override", "x-http-method", "x-method-override"}

// impliedMethods are the methods other than its own that the upstream may
// serve a request as, each of which it must be allowed for too: the method
// override headers, and the query parameters frameworks read as overrides
// (overrideParams), and GET for HEAD, the request's own or an override's
// (frameworks answer HEAD with the GET handler). Empty values are skipped,
// as frameworks skip them; ok is false for an override that is not a
// method, or for more than maxImplied of them.
func impliedMethods(method, query string, headers map[string]string) (implied []string, ok bool) {
	add := func(m string) bool {
		m = strings.ToUpper(strings.TrimSpace(m))
		if m == "" {
			return true
		}
		if !validMethod(m) {
			return false
		}
		if m != method && !slices.Contains(implied, m) {
			if len(implied) == maxImplied {
				return false // no client asks for more: a request fanned out into checks
			}
			implied = append(implied, m)
		}
		return true
	}
	for _, h := range methodOverrides {
		if v, present := headers[h]; present {
			for _, m := range strings.Split(v, ",") { // a repeated header, joined
				if !add(m) {
					return nil, false
				}
			}
		}
	}
	if !overrideParams(query, add) {
		return nil, false
	}
	if (method == http.MethodHead || slices.Contains(implied, http.MethodHead)) && !add(http.MethodGet) {
		return nil, false
	}
	return implied, true
}

// overrideParams calls add with the value of every query parameter a
// framework may read as a method override, and says whether each was a
// method: _method (Express's method-override, Spring, gorilla, Symfony,
// Laravel, Rails) and the override headers' names (ServiceStack reads them
// from the query too). Parameters are split at "&" and ";". It allocates
// only for a key that needs decoding.
func overrideParams(query string, add func(string) bool) bool {
	for query != "" {
		var kv string
		if i := strings.IndexAny(query, "&;"); i >= 0 {
			kv, query = query[:i], query[i+1:]
		} else {
			kv, query = query, ""
		}
		k, v, _ := strings.Cut(kv, "=")
		if !isOverrideKey(k) {
			continue
		}
		if !add(decodeParam(v)) {
			return false
		}
	}
	return true
}

// isOverrideKey says whether a raw query key names a method override, read
// as frameworks read keys: percent-decoded with "+" a space (and Jetty's
// %uXXXX); leading spaces dropped, "." and " " turned into "_" and the name
// ended at the first NUL, "[" or "]" (PHP); leading brackets dropped (qs,
// Express's query parser, unwraps "[_method]"; Rack 2 strips any run of
// "[" and "]"); and, for the override headers' names, control and non-ASCII
// characters ignored (ServiceStack looks keys up in a NameValueCollection
// whose culture-aware comparison on .NET 5+ ignores them: NUL, soft hyphen,
// zero-width space). Both readings decode into small buffers on the stack:
// an override key is short once its spaces and brackets are gone.
func isOverrideKey(k string) bool {
	var cut, ignoring [32]byte // the name cut at NUL; the name without control and non-ASCII characters
	nc, ni, cutDone, started := 0, 0, false, false
scan:
	for i := 0; i < len(k); i++ {
		c := k[i]
		switch {
		case c == '+':
			c = ' '
		case c == '%' && i+2 < len(k) && isHex(k[i+1]) && isHex(k[i+2]):
			c = hexByte(k[i+1])<<4 | hexByte(k[i+2])
			i += 2
		case c == '%' && i+5 < len(k) && (k[i+1] == 'u' || k[i+1] == 'U') && isHex(k[i+2]) && isHex(k[i+3]) && isHex(k[i+4]) && isHex(k[i+5]):
			if k[i+2] != '0' || k[i+3] != '0' || k[i+4] > '7' {
				c = 0xFF // not ASCII
			} else {
				c = hexByte(k[i+4])<<4 | hexByte(k[i+5])
			}
			i += 5
		}
		switch {
		case !started && (c == ' ' || c == '[' || c == ']'):
			continue
		case c == '[' || c == ']':
			break scan
		}
		started = true
		if c == 0 {
			cutDone = true
		}
		if !cutDone {
			if nc == len(cut) {
				cutDone, nc = true, len(cut)+1 // too long: no override name
			} else {
				cut[nc] = c
				nc++
			}
		}
		if c >= 0x20 && c < 0x7F {
			if ni == len(ignoring) {
				if nc > len(cut) {
					return false
				}
				ni = len(ignoring) + 1
				continue
			}
			if ni < len(ignoring) {
				ignoring[ni] = c
				ni++
			}
		}
	}
	if nc <= len(cut) {
		key := cut[:nc]
		if nc == len("_method") && (key[0] == '_' || key[0] == '.' || key[0] == ' ') && foldEqual(key[1:], "method") {
			return true
		}
	}
	if ni <= len(ignoring) {
		for _, h := range methodOverrides {
			if foldEqual(ignoring[:ni], h) {
				return true
			}
		}
	}
	return false
}

// foldEqual is strings.EqualFold for ASCII, of bytes and a string.
func foldEqual(b []byte, s string) bool {
	if len(b) != len(s) {
		return false
	}
	for i := range b {
		x, y := b[i], s[i]
		if 'A' <= x && x <= 'Z' {
			x += 'a' - 'A'
		}
		if 'A' <= y && y <= 'Z' {
			y += 'a' - 'A'
		}
		if x != y {
			return false
		}
	}
	return true
}

func isHex(c byte) bool { _, ok := unhex(c); return ok }

func hexByte(c byte) byte { d, _ := unhex(c); return d }

// decodeParam decodes a query key or value as the most lenient framework
// does: "+" is a space, %XX a byte and %uXXXX a character (Jetty); a "%"
// that starts neither stays.
func decodeParam(s string) string {
	if !strings.ContainsAny(s, "%+") {
		return s
	}
	hex := func(h string) (r rune, ok bool) {
		for i := 0; i < len(h); i++ {
			d, ok := unhex(h[i])
			if !ok {
				return 0, false
			}
			r = r<<4 | rune(d)
		}
		return r, true
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c == '+' {
			b.WriteByte(' ')
			continue
		}
		if c == '%' && i+2 < len(s) {
			if r, ok := hex(s[i+1 : i+3]); ok {
				b.WriteByte(byte(r))
				i += 2
				continue
			}
		}
		if c == '%' && i+5 < len(s) && (s[i+1] == 'u' || s[i+1] == 'U') {
			if r, ok := hex(s[i+2 : i+6]); ok {
				b.WriteRune(r)
				i += 5
				continue
			}
		}
		b.WriteByte(c)
	}
	return b.String()
}
