package authz

import "strings"

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
