package authz

import (
	"net/http"
	"net/url"
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

// methodOverrides are the headers with which frameworks let a request stand
// for another method (Express's method-override, ASP.NET Core's
// UseHttpMethodOverride, Jersey, Symfony, Laravel; SAPUI5's OData model
// tunnels MERGE and DELETE through POST with X-HTTP-Method).
var methodOverrides = []string{"x-http-method-override", "x-http-method", "x-method-override"}

// impliedMethods are the methods other than its own that the upstream may
// serve a request as, each of which it must be allowed for too: the method
// override headers and a _method query parameter (Symfony and Laravel read
// it, upper-cased), and GET for HEAD (frameworks answer HEAD with the GET
// handler). ok is false for an override that is not a method.
func impliedMethods(method, query string, headers map[string]string) (implied []string, ok bool) {
	add := func(m string) bool {
		m = strings.ToUpper(strings.TrimSpace(m))
		if !validMethod(m) {
			return false
		}
		if m != method && !slices.Contains(implied, m) {
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
	if containsFold(query, "_method") {
		q, err := url.ParseQuery(query)
		if err != nil {
			return nil, false
		}
		for k, vs := range q {
			if strings.EqualFold(k, "_method") {
				for _, m := range vs {
					if !add(m) {
						return nil, false
					}
				}
			}
		}
	}
	if method == http.MethodHead {
		add(http.MethodGet)
	}
	return implied, true
}

// containsFold is strings.Contains without regard to ASCII case, without
// allocating.
func containsFold(s, sub string) bool {
	for i := 0; i+len(sub) <= len(s); i++ {
		if s[i] == sub[0] && strings.EqualFold(s[i:i+len(sub)], sub) {
			return true
		}
	}
	return false
}
