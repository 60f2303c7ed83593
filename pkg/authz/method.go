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
// override headers and a _method query parameter (in any spelling a
// framework reads as one: overrideParams), and GET for HEAD, the request's
// own or an override's (frameworks answer HEAD with the GET handler). ok is
// false for an override that is not a method.
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
	if !overrideParams(query, add) {
		return nil, false
	}
	if method == http.MethodHead || slices.Contains(implied, http.MethodHead) {
		add(http.MethodGet)
	}
	return implied, true
}

// overrideParams calls add with the value of every query parameter a
// framework may read as _method, and says whether each was a method. A key
// is read as frameworks read it: percent-decoded and "+" a space (Node's
// querystring, Tomcat, Python, Go: %5Fmethod is _method), and as PHP
// (Symfony, Laravel) names its variables: leading spaces dropped, "." and
// " " turned into "_", an array's "[...]" cut ("?.method=", "?_method[]=").
// Parameters are split at "&" and ";". It allocates only for a key that
// is escaped.
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
		v = strings.ReplaceAll(v, "+", " ")
		if u, err := url.PathUnescape(v); err == nil {
			v = u
		}
		if !add(v) {
			return false
		}
	}
	return true
}

// isOverrideKey says whether a raw query key names _method (overrideParams).
func isOverrideKey(k string) bool {
	if len(k) < len("method") || len(k) > 64 {
		return false
	}
	if strings.ContainsAny(k, "%+") {
		u, err := url.PathUnescape(strings.ReplaceAll(k, "+", " "))
		if err != nil {
			return false // an upstream cannot read it either
		}
		k = u
	}
	k = strings.TrimLeft(k, " ")
	if i := strings.IndexByte(k, '['); i >= 0 {
		k = k[:i]
	}
	if len(k) != len("_method") {
		return false
	}
	if c := k[0]; c != '_' && c != '.' && c != ' ' {
		return false
	}
	return strings.EqualFold(k[1:], "method")
}
