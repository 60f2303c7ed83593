// Package authz is the decision engine: a request comes in, a decision goes
// out. It knows sessions and the identity provider, and nothing of gRPC or
// HTTP; pkg/envoy turns its decisions into Envoy's responses.
package authz

import (
	"context"
	"crypto/subtle"
	"errors"
	"log/slog"
	"net/http"
	"slices"
	"strings"
	"time"

	"golang.org/x/sync/singleflight"
	"golang.org/x/time/rate"

	"github.com/extauthz/extauthz/pkg/idp"
	"github.com/extauthz/extauthz/pkg/policy"
	"github.com/extauthz/extauthz/pkg/session"
)

// Providers gives the identity provider of a tenant ("" in single-tenant
// mode). It is asked only when a login, a refresh or a logout needs one.
// *idp.Registry is one.
type Providers interface {
	Provider(ctx context.Context, tenant string) (idp.Client, error)
}

// Tenants decides which hosts are served, and their tenant: Resolve
// returns the request's host in canonical form (lower-case, no trailing
// dot, the port if any: what URLs back to the request are built from) and
// its tenant ("" in single-tenant mode). An error means extauthz does not
// serve the host: no login, no session, 404. forwardedHost is
// x-forwarded-host, which the implementation uses only when trusted.
type Tenants interface {
	Resolve(host, forwardedHost string) (canonical, tenant string, err error)
}

// Options configure the engine.
type Options struct {
	CookieName string
	// SecureCookie: "true" (default), "false" or "auto" (Secure when the
	// browser came over https: the proxy's scheme, or x-forwarded-proto
	// when TrustForwardedProto).
	SecureCookie session.SecureMode
	// TrustForwardedProto: x-forwarded-proto says the browser's scheme (only
	// behind a proxy that sets it and drops the client's).
	TrustForwardedProto bool
	SameSite            http.SameSite // default Lax
	Partitioned         bool

	CallbackPath string
	LogoutPath   string
	// BackchannelLogoutPath receives the identity provider's logout tokens
	// (OpenID Connect Back-Channel Logout; default /logout/backchannel).
	BackchannelLogoutPath string
	PostLogoutRedirect    string // a path on the request's host, or an absolute URL

	// RefreshAhead: refresh the access token this long before it expires
	// (approuter's JWT_REFRESH); 0 turns refresh ahead off (an expired token
	// is still refreshed).
	RefreshAhead time.Duration
	// RefreshLockTTL bounds how long one refresh may hold the session's lock
	// (default 10s); keep it above the IdP timeout.
	RefreshLockTTL time.Duration
	// Policy is xs-app.json's routes: public routes, scopes, CSRF. nil:
	// every path needs a session, no scope, no CSRF check.
	Policy *policy.Policy
	// LogoutMethod is the method the logout endpoint takes: GET (default,
	// also POST) or POST only (xs-app.json logout.logoutMethod).
	LogoutMethod string

	// Audit receives the security events (see audit.go); nil: the engine's
	// logger with "audit": true.
	Audit *slog.Logger
	// XFFTrustedHops: the client address in audit lines is the n-th address
	// from the right of x-forwarded-for (1: the one the proxy in front of
	// extauthz appended); 0: Envoy's source address, x-forwarded-for unread.
	XFFTrustedHops int

	Now func() time.Time
}

// Engine decides. It is safe for concurrent use.
type Engine struct {
	sessions  *session.Manager
	providers Providers // nil: no login configured
	tenants   Tenants
	opt       Options
	log       *slog.Logger
	// auditLimits bound the audit lines anyone can set off (audit.go).
	auditLimits map[Event]*auditLimit
	// idpWarnings bound the "identity provider unavailable" warnings.
	idpWarnings *auditLimit
	// waits shares, per session, the wait for another request's refresh.
	waits singleflight.Group
}

// New returns an engine. providers may be nil: requests without a session
// are then refused (401) since nobody can log in. tenants decides which
// hosts are served; it is required (there is no "any host").
func New(sessions *session.Manager, providers Providers, tenants Tenants, opt Options, log *slog.Logger) *Engine {
	if tenants == nil {
		panic("authz.New: nil Tenants")
	}
	if opt.CookieName == "" {
		opt.CookieName = "JSESSIONID"
	}
	if opt.SecureCookie == "" {
		opt.SecureCookie = session.SecureAlways
	}
	if opt.SameSite == 0 || opt.SameSite == http.SameSiteDefaultMode {
		opt.SameSite = http.SameSiteLaxMode
	}
	if opt.CallbackPath == "" {
		opt.CallbackPath = "/login/callback"
	}
	if opt.LogoutPath == "" {
		opt.LogoutPath = "/logout"
	}
	if opt.BackchannelLogoutPath == "" {
		opt.BackchannelLogoutPath = "/logout/backchannel"
	}
	if opt.Audit == nil {
		opt.Audit = log.With("audit", true)
	}
	if opt.PostLogoutRedirect == "" {
		opt.PostLogoutRedirect = "/"
	}
	if opt.RefreshLockTTL <= 0 {
		opt.RefreshLockTTL = 10 * time.Second
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	return &Engine{sessions: sessions, providers: providers, tenants: tenants, opt: opt, log: log, auditLimits: newAuditLimits(),
		idpWarnings: &auditLimit{lim: rate.NewLimiter(idpWarnRate, idpWarnBurst)}}
}

// StaticProvider serves one provider for every tenant (single-tenant mode).
type StaticProvider struct{ P idp.Client }

// Provider implements Providers.
func (s StaticProvider) Provider(context.Context, string) (idp.Client, error) { return s.P, nil }

// in is a request as every decision reads it, parsed once at the door:
// the host and tenant it was resolved to, and the canonical path. No
// decision reads Request.Host or Request.Path again.
type in struct {
	method, scheme string
	headers        map[string]string
	host, tenant   string
	path, query    string
	body           []byte
	clientAddr     string
}

// Check decides about one request.
func (e *Engine) Check(ctx context.Context, r *Request) *Decision {
	host, tenant, err := e.tenants.Resolve(r.Host, r.Headers["x-forwarded-host"])
	if err != nil {
		return deny(http.StatusNotFound, ReasonUnknownHost, notServed)
	}
	path, query, err := canonicalPath(r.Path)
	if err == nil && r.Verbatim {
		if raw, _, _ := strings.Cut(r.Path, "?"); path != raw {
			err = errBadPath // the canonical form differs from what the app will be sent
		}
	}
	if err != nil {
		d := deny(http.StatusBadRequest, ReasonBadPath, "Bad request: the path is malformed or ambiguous.\n")
		d.Tenant = tenant
		return d
	}
	implied, ok := impliedMethods(r.Method, query, r.Headers)
	if !ok || !validMethod(r.Method) {
		d := deny(http.StatusBadRequest, ReasonBadMethod, "Bad request: the method is malformed or ambiguous.\n")
		d.Tenant = tenant
		return d
	}
	req := &in{method: r.Method, scheme: r.Scheme, headers: r.Headers, host: host, tenant: tenant, path: path, query: query,
		body: r.Body, clientAddr: r.ClientAddr}
	d := e.check(ctx, req)
	// The upstream may serve the request as another method (an override,
	// HEAD as GET): allowed only if that method would be too.
	for _, m := range implied {
		if !d.Allow {
			break
		}
		as := *req
		as.method = m
		if o := e.check(ctx, &as); !o.Allow {
			d = o
		}
	}
	d.Tenant = tenant
	return d
}

func (e *Engine) check(ctx context.Context, r *in) *Decision {
	switch r.path {
	case e.opt.CallbackPath:
		return e.callback(ctx, r)
	case e.opt.LogoutPath:
		return e.logout(ctx, r)
	case e.opt.BackchannelLogoutPath:
		return e.backchannelLogout(ctx, r)
	}
	var route *policy.Route
	if e.opt.Policy != nil {
		route = e.opt.Policy.Match(r.path, r.method)
		switch {
		case route != nil && route.Public():
			return e.public(r)
		case route == nil && !e.opt.Policy.RequireAuthForUnknownRoutes:
			return deny(http.StatusNotFound, ReasonNoRoute, "Not found.\n")
		}
	}
	cookie := cookieValue(r.headers["cookie"], e.opt.CookieName)
	if cookie == "" {
		return e.unauthenticated(ctx, r, ReasonNoSession)
	}
	s, err := e.sessions.Load(ctx, cookie, r.tenant)
	switch {
	case errors.Is(err, session.ErrNoSession):
		e.log.DebugContext(ctx, "session cookie does not open a session", "reason", err)
		switch {
		case errors.Is(err, session.ErrInvalidCookie):
			e.audit(ctx, r, EventForgedCookie, nil)
		case errors.Is(err, session.ErrExpired):
			e.audit(ctx, r, EventSessionExpired, nil, slog.String("expiry", "absolute"))
		}
		return e.unauthenticated(ctx, r, ReasonInvalidSession)
	case errors.Is(err, session.ErrOtherTenant):
		e.audit(ctx, r, EventOtherTenant, nil) // the audit line says it; no second line
		return deny(http.StatusForbidden, ReasonOtherTenant, "Forbidden: you cannot use a session from another tenant.\n")
	case err != nil:
		return e.storeError(ctx, err)
	}
	d := e.decide(ctx, r, route, s)
	switch d.Reason {
	case ReasonMissingScope:
		e.audit(ctx, r, EventScopeRefused, s)
	case ReasonCSRF:
		e.audit(ctx, r, EventCSRFRefused, s)
	}
	d.TenantVerified = true // a session of this tenant opened
	return d
}

// decide is the decision for a request with an open session.
func (e *Engine) decide(ctx context.Context, r *in, route *policy.Route, s *session.Session) *Decision {
	s, d := e.refreshIfDue(ctx, r, s)
	if d != nil {
		return d
	}
	if e.opt.Policy != nil {
		if route == nil {
			return deny(http.StatusNotFound, ReasonNoRoute, "Not found.\n") // REQUIRE_AUTH_FOR_UNKNOWN_ROUTES: authenticated first
		}
		if d := e.authorize(r, route, s); d != nil {
			return d
		}
	}
	d = e.allow(r, s)
	if (r.method == http.MethodGet || r.method == http.MethodHead) && strings.EqualFold(r.headers["x-csrf-token"], "fetch") {
		d.Response = append(d.Response, Header{"x-csrf-token", s.Record.GetCsrfToken()})
	}
	return d
}

// authorize checks a route's scopes and CSRF protection for a session.
func (e *Engine) authorize(r *in, route *policy.Route, s *session.Session) *Decision {
	if need, restricted := route.ScopesFor(r.method); restricted && !slices.ContainsFunc(need, func(sc string) bool {
		return slices.Contains(s.Record.GetScopes(), sc)
	}) {
		return deny(http.StatusForbidden, ReasonMissingScope, "Forbidden: you lack the authorization (scope) this page needs.\n")
	}
	if route.NeedsCSRF(r.method) {
		want := s.Record.GetCsrfToken()
		got := r.headers["x-csrf-token"]
		if want == "" || subtle.ConstantTimeCompare([]byte(got), []byte(want)) != 1 {
			d := deny(http.StatusForbidden, ReasonCSRF, "Forbidden: CSRF token validation failed.\n")
			d.Response = append(d.Response, Header{"x-csrf-token", "Required"})
			return d
		}
	}
	return nil
}

// public lets a request to a public route through without a session, and
// without the session cookie.
func (e *Engine) public(r *in) *Decision {
	d := &Decision{Allow: true, Status: http.StatusOK, Reason: ReasonPublicRoute}
	e.stripSessionCookie(d, r)
	return d
}

// allow forwards the request with the access token and without the session
// cookie.
func (e *Engine) allow(r *in, s *session.Session) *Decision {
	d := &Decision{
		Allow: true, Status: http.StatusOK, Reason: ReasonSession,
		// Room for the cookie header stripSessionCookie adds: one allocation.
		Upstream: append(make([]Header, 0, 2), Header{"authorization", s.Authorization()}),
	}
	e.stripSessionCookie(d, r)
	return d
}

// stripSessionCookie keeps the session cookie from the upstream: the
// cookie header is rewritten without it, or removed when nothing is left.
func (e *Engine) stripSessionCookie(d *Decision, r *in) {
	cookies := r.headers["cookie"]
	if cookies == "" {
		return
	}
	rest := withoutCookie(cookies, e.opt.CookieName)
	if e.hostCookies() {
		rest = withoutCookie(rest, e.bindingCookieName())
	}
	if rest != "" {
		d.Upstream = append(d.Upstream, Header{"cookie", rest})
	} else {
		d.Remove = []string{"cookie"}
	}
}

// unauthenticated answers a request without a usable session: a browser
// navigation goes to the login, anything else gets 401.
func (e *Engine) unauthenticated(ctx context.Context, r *in, reason Reason) *Decision {
	if !isNavigation(r) {
		return deny(http.StatusUnauthorized, reason, "Unauthorized: no valid session. Log in again.\n")
	}
	if e.providers == nil {
		return deny(http.StatusUnauthorized, reason, "Unauthorized: no valid session, and no identity provider is configured to log in with.\n")
	}
	return e.startLogin(ctx, r)
}

// isNavigation says whether a browser is navigating to a page (as opposed
// to a script's request): approuter's rule (GET or HEAD, not
// X-Requested-With: XMLHttpRequest), plus the browser's own Sec-Fetch-Mode,
// which fetch() calls set and X-Requested-With-less SPAs rely on.
func isNavigation(r *in) bool {
	if r.method != http.MethodGet && r.method != http.MethodHead {
		return false
	}
	if strings.EqualFold(r.headers["x-requested-with"], "XMLHttpRequest") {
		return false
	}
	if m := r.headers["sec-fetch-mode"]; m != "" && m != "navigate" {
		return false
	}
	return true
}

func (e *Engine) storeError(ctx context.Context, err error) *Decision {
	if ctx.Err() != nil {
		return canceled() // the caller is gone, not the store
	}
	e.log.WarnContext(ctx, "session store unavailable", "error", err)
	d := deny(http.StatusServiceUnavailable, ReasonStoreUnavailable, "Service unavailable: the session store cannot be reached. Try again shortly.\n")
	d.Response = append(d.Response, Header{"retry-after", "1"})
	return d
}

// notServed is the answer's body for a host not served here.
const notServed = "Not found: this host is not served here.\n"

// canceled is the answer to a check whose caller went away meanwhile: nobody
// reads it (499, as nginx logs a client that closed the request).
func canceled() *Decision { return deny(499, ReasonCanceled, "") }

func deny(status int, reason Reason, body string) *Decision {
	return &Decision{
		Status: status, Reason: reason, Body: body,
		Response: []Header{{"content-type", "text/plain; charset=utf-8"}, {"cache-control", "no-store"}},
	}
}

func redirect(reason Reason, location string, cookies ...string) *Decision {
	d := &Decision{
		Status: http.StatusFound, Reason: reason,
		Response: []Header{{"location", location}, {"cache-control", "no-store"}},
	}
	for _, c := range cookies {
		d.Response = append(d.Response, Header{"set-cookie", c})
	}
	return d
}
