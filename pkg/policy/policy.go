// Package policy reads approuter's xs-app.json and answers, for a request,
// which route it takes: whether it needs a login, which scopes it needs, and
// whether it is CSRF protected. Routing and proxying stay Envoy's job.
package policy

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
)

// Policy is a compiled xs-app.json.
type Policy struct {
	Routes []Route
	// Public: authenticationMethod "none" — no route needs a login.
	Public bool
	// RequireAuthForUnknownRoutes: a request that matches no route is
	// authenticated before it gets 404 (approuter's REQUIRE_AUTH_FOR_UNKNOWN_ROUTES).
	RequireAuthForUnknownRoutes bool

	CallbackEndpoint string // login.callbackEndpoint
	LogoutEndpoint   string // logout.logoutEndpoint
	LogoutPage       string // logout.logoutPage
	LogoutMethod     string // logout.logoutMethod: GET (default) or POST
	SessionTimeout   int    // minutes, 0 = not set

	// Ignored lists the proxying fields found, which Envoy handles.
	Ignored []string
}

// AuthType is a route's authenticationType.
type AuthType string

const (
	AuthXSUAA AuthType = "xsuaa" // a login (the default)
	AuthIAS   AuthType = "ias"   // a login
	AuthNone  AuthType = "none"  // public: no login
)

// Route is one compiled routes[] entry.
type Route struct {
	Index    int
	Source   *regexp.Regexp
	Methods  []string // empty: every method
	AuthType AuthType
	// Scopes by method ("" = default); nil: no scope needed.
	Scopes map[string][]string
	CSRF   bool
}

// Public says whether the route needs no login.
func (r *Route) Public() bool { return r.AuthType == AuthNone }

// ScopesFor is the scopes a method needs on this route, any one of which
// passes. restricted is false when the route names no scope (every logged-in
// user passes). A scope object that lists neither the method nor "default"
// gives an empty list, which no user passes: approuter's
// scope[method] || scope.default || [].
func (r *Route) ScopesFor(method string) (scopes []string, restricted bool) {
	if r.Scopes == nil {
		return nil, false
	}
	if s, ok := r.Scopes[method]; ok {
		return s, true
	}
	return r.Scopes[""], true
}

// NeedsCSRF says whether a request with this method must carry the
// session's CSRF token.
func (r *Route) NeedsCSRF(method string) bool {
	return r.CSRF && !r.Public() && method != http.MethodGet && method != http.MethodHead && method != http.MethodOptions
}

// Match returns the first route whose source matches the path and whose
// httpMethods (if any) include the method; nil when none does.
func (p *Policy) Match(path, method string) *Route {
	for i := range p.Routes {
		r := &p.Routes[i]
		if !r.Source.MatchString(path) {
			continue
		}
		if len(r.Methods) > 0 && !slices.Contains(r.Methods, method) {
			continue
		}
		return r
	}
	return nil
}

// Fields of xs-app.json that belong to approuter's proxying: accepted, and
// left to Envoy.
var (
	proxyRouteFields = []string{"destination", "target", "service", "endpoint", "localDir", "welcomeFile", "cacheControl",
		"replace", "identityProvider", "preferLocal", "dynamicIdentityProvider", "cacheControlEnabled"}
	proxyAppFields = []string{"welcomeFile", "destinations", "compression", "websockets", "errorPage", "headers", "cors",
		"whitelistService", "responseHeaders", "destinationsCache", "pluginMetadataEndpoint"}
	routeFields = []string{"source", "httpMethods", "authenticationType", "scope", "csrfProtection"}
	appFields   = []string{"authenticationMethod", "sessionTimeout", "routes", "login", "logout"}
)

type rawApp struct {
	AuthenticationMethod *string                      `json:"authenticationMethod"`
	SessionTimeout       *int                         `json:"sessionTimeout"`
	Routes               []map[string]json.RawMessage `json:"routes"`
	Login                *struct {
		CallbackEndpoint string `json:"callbackEndpoint"`
	} `json:"login"`
	Logout *struct {
		LogoutEndpoint string `json:"logoutEndpoint"`
		LogoutPage     string `json:"logoutPage"`
		LogoutMethod   string `json:"logoutMethod"`
	} `json:"logout"`
}

// checkFields reports unknown keys (case-sensitive, as approuter's schema)
// and collects the proxying ones.
func checkFields(where string, m map[string]json.RawMessage, known, proxy []string, ignored map[string]bool) []error {
	var errs []error
	for k := range m {
		switch {
		case slices.Contains(known, k):
		case slices.Contains(proxy, k):
			ignored[k] = true
		default:
			errs = append(errs, fmt.Errorf("%s%s: unknown field", where, k))
		}
	}
	sort.Slice(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
	return errs
}

// LoadFile reads and compiles an xs-app.json file.
func LoadFile(path, xsappname string, requireAuthForUnknown bool) (*Policy, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	p, err := Parse(b, xsappname)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	p.RequireAuthForUnknownRoutes = requireAuthForUnknown
	return p, nil
}

// Parse compiles an xs-app.json document. Every problem is reported, each
// with the route's index and field. $XSAPPNAME in scopes becomes xsappname.
func Parse(doc []byte, xsappname string) (*Policy, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(doc, &top); err != nil {
		return nil, fmt.Errorf("not a JSON object: %w", err)
	}
	ignored := map[string]bool{}
	errs := checkFields("", top, appFields, proxyAppFields, ignored)
	var raw rawApp
	if err := json.Unmarshal(doc, &raw); err != nil {
		return nil, fmt.Errorf("not a valid xs-app.json: %w", err)
	}
	p := &Policy{LogoutMethod: http.MethodGet}
	if raw.AuthenticationMethod != nil {
		switch *raw.AuthenticationMethod {
		case "none":
			p.Public = true
		case "route":
		default:
			errs = append(errs, fmt.Errorf("authenticationMethod: %q is not route or none", *raw.AuthenticationMethod))
		}
	}
	if raw.SessionTimeout != nil {
		if *raw.SessionTimeout <= 0 {
			errs = append(errs, errors.New("sessionTimeout: must be a positive number of minutes"))
		}
		p.SessionTimeout = *raw.SessionTimeout
	}
	if raw.Login != nil {
		p.CallbackEndpoint = raw.Login.CallbackEndpoint
		if p.CallbackEndpoint != "" && !strings.HasPrefix(p.CallbackEndpoint, "/") {
			errs = append(errs, fmt.Errorf("login.callbackEndpoint: %q must start with /", p.CallbackEndpoint))
		}
	}
	if raw.Logout != nil {
		p.LogoutEndpoint, p.LogoutPage = raw.Logout.LogoutEndpoint, raw.Logout.LogoutPage
		if p.LogoutEndpoint != "" && !strings.HasPrefix(p.LogoutEndpoint, "/") {
			errs = append(errs, fmt.Errorf("logout.logoutEndpoint: %q must start with /", p.LogoutEndpoint))
		}
		switch m := strings.ToUpper(raw.Logout.LogoutMethod); m {
		case "", http.MethodGet:
		case http.MethodPost:
			p.LogoutMethod = http.MethodPost
		default:
			errs = append(errs, fmt.Errorf("logout.logoutMethod: %q is not GET or POST", raw.Logout.LogoutMethod))
		}
	}
	for i, rm := range raw.Routes {
		where := fmt.Sprintf("routes[%d]", i)
		errs = append(errs, checkFields(where+".", rm, routeFields, proxyRouteFields, ignored)...)
		var rr struct {
			Source             json.RawMessage `json:"source"`
			HTTPMethods        []string        `json:"httpMethods"`
			AuthenticationType *string         `json:"authenticationType"`
			Scope              json.RawMessage `json:"scope"`
			CSRFProtection     *bool           `json:"csrfProtection"`
		}
		b, _ := json.Marshal(rm)
		if err := json.Unmarshal(b, &rr); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", where, err))
			continue
		}
		r := Route{Index: i, AuthType: AuthXSUAA, CSRF: true}
		var src string
		if err := json.Unmarshal(rr.Source, &src); err != nil || src == "" {
			// approuter also allows {"path": …, "matchCase": …}
			var obj struct {
				Path      string `json:"path"`
				MatchCase *bool  `json:"matchCase"`
			}
			if json.Unmarshal(rr.Source, &obj) != nil || obj.Path == "" {
				errs = append(errs, fmt.Errorf("%s.source: required, a regular expression", where))
				continue
			}
			src = obj.Path
			if obj.MatchCase != nil && !*obj.MatchCase {
				src = "(?i)" + src
			}
		}
		re, err := regexp.Compile(src)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s.source: %q is not a regular expression: %v", where, src, err))
			continue
		}
		r.Source = re
		for _, m := range rr.HTTPMethods {
			m = strings.ToUpper(m)
			if !slices.Contains([]string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "TRACE", "CONNECT"}, m) {
				errs = append(errs, fmt.Errorf("%s.httpMethods: %q is not an HTTP method", where, m))
			}
			r.Methods = append(r.Methods, m)
		}
		if rr.AuthenticationType != nil {
			switch t := AuthType(*rr.AuthenticationType); t {
			case AuthXSUAA, AuthIAS, AuthNone:
				r.AuthType = t
			case "basic":
				errs = append(errs, fmt.Errorf("%s.authenticationType: basic is not supported (it sends passwords to the app); use xsuaa or ias", where))
			default:
				errs = append(errs, fmt.Errorf("%s.authenticationType: %q is not xsuaa, ias or none", where, t))
			}
		}
		if p.Public {
			r.AuthType = AuthNone
		}
		if rr.CSRFProtection != nil {
			r.CSRF = *rr.CSRFProtection
		}
		scopes, err := parseScope(rr.Scope, xsappname)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s.scope: %w", where, err))
		}
		r.Scopes = scopes
		p.Routes = append(p.Routes, r)
	}
	for f := range ignored {
		p.Ignored = append(p.Ignored, f)
	}
	sort.Strings(p.Ignored)
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	return p, nil
}

// parseScope reads a string, a list, or an object keyed by HTTP method with
// "default".
func parseScope(raw json.RawMessage, xsappname string) (map[string][]string, error) {
	if len(raw) == 0 || string(raw) == "null" {
		return nil, nil
	}
	sub := func(s string) (string, error) {
		if strings.Contains(s, "$XSAPPNAME") {
			if xsappname == "" {
				return "", fmt.Errorf("%q uses $XSAPPNAME but no xsuaa binding gives xsappname", s)
			}
			s = strings.ReplaceAll(s, "$XSAPPNAME", xsappname)
		}
		if s == "" {
			return "", errors.New("empty scope")
		}
		return s, nil
	}
	list := func(raw json.RawMessage) ([]string, error) {
		var one string
		if json.Unmarshal(raw, &one) == nil {
			s, err := sub(one)
			return []string{s}, err
		}
		var many []string
		if err := json.Unmarshal(raw, &many); err != nil || len(many) == 0 {
			return nil, errors.New("must be a scope, a non-empty list of scopes, or an object of them by HTTP method")
		}
		for i := range many {
			s, err := sub(many[i])
			if err != nil {
				return nil, err
			}
			many[i] = s
		}
		return many, nil
	}
	out := map[string][]string{}
	if raw[0] != '{' {
		l, err := list(raw)
		out[""] = l
		return out, err
	}
	var byMethod map[string]json.RawMessage
	if err := json.Unmarshal(raw, &byMethod); err != nil {
		return nil, errors.New("must be a scope, a list of scopes, or an object of them by HTTP method")
	}
	var errs []error
	for k, v := range byMethod {
		key := strings.ToUpper(k)
		if k == "default" {
			key = ""
		} else if !slices.Contains([]string{"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"}, key) {
			errs = append(errs, fmt.Errorf("%q is not an HTTP method or default", k))
			continue
		}
		l, err := list(v)
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", k, err))
		}
		out[key] = l
	}
	return out, errors.Join(errs...)
}
