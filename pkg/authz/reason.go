package authz

// Reason is why a decision was taken: a short, fixed label for metrics and
// logs. The constants below are every reason there is; metrics label checks
// with them and with nothing else (see Reasons).
type Reason string

// The reasons of allowed requests (forwarded upstream).
const (
	ReasonSession     Reason = "session"      // a valid session: forwarded with its access token
	ReasonPublicRoute Reason = "public_route" // a route of authenticationType none
)

// The reasons of the requests extauthz answers itself (Allow false): the
// refusals, and the redirects and pages of the login and the logout.
const (
	// Hosts and paths.
	ReasonUnknownHost Reason = "unknown_host" // a host not served here: 404
	ReasonBadPath     Reason = "bad_path"     // a path that cannot be made unambiguous: 400
	ReasonBadMethod   Reason = "bad_method"   // a method not upper-case, or not a token: 400
	ReasonNoRoute     Reason = "no_route"     // no xs-app.json route: 404
	// ReasonHeadersTooLarge: more header bytes than the limit (431). The
	// adapters in pkg/envoy decide it, before the engine is asked.
	ReasonHeadersTooLarge Reason = "headers_too_large"

	// No usable session: a browser navigation is sent to the login
	// (ReasonLoginRedirect), anything else gets 401 with one of these.
	ReasonNoSession       Reason = "no_session"       // no session cookie
	ReasonInvalidSession  Reason = "invalid_session"  // the cookie opens no session (forged, expired, logged out)
	ReasonTokenExpired    Reason = "token_expired"    // the access token expired and cannot be refreshed
	ReasonRefreshRejected Reason = "refresh_rejected" // the identity provider refused the refresh: session ended
	ReasonLoginRedirect   Reason = "login_redirect"   // 302 to the identity provider's authorize endpoint

	// A session, refused.
	ReasonOtherTenant  Reason = "other_tenant"  // the session is another tenant's: 403
	ReasonMissingScope Reason = "missing_scope" // the route needs a scope the session lacks: 403
	ReasonCSRF         Reason = "csrf"          // the route needs the session's x-csrf-token: 403

	// Dependencies down: 502/503, never an allow.
	ReasonStoreUnavailable Reason = "store_unavailable" // the session store failed
	ReasonIDPUnavailable   Reason = "idp_unavailable"   // the identity provider cannot be reached
	ReasonRefreshWait      Reason = "refresh_wait"      // the token expired and another request's refresh did not finish in time
	// Not outages: too many new tenants' providers fetched at once (503),
	// and a check whose caller went away before its answer (499).
	ReasonIDPBusy  Reason = "idp_busy"
	ReasonCanceled Reason = "canceled"

	// The login callback.
	ReasonLoginComplete        Reason = "login_complete"         // 302 back to the page, with the new session's cookie
	ReasonCallbackUnconfigured Reason = "callback_unconfigured"  // no identity provider configured: 404
	ReasonCallbackInvalid      Reason = "callback_invalid"       // no state, no code, a malformed query: 400
	ReasonCallbackUnknownState Reason = "callback_unknown_state" // a state this browser did not start, expired or used: 400
	ReasonCallbackIDPError     Reason = "callback_idp_error"     // the identity provider answered with an error: 400/403
	ReasonCallbackRejected     Reason = "callback_rejected"      // the identity provider refused the code: 400

	// Logout.
	ReasonLogout          Reason = "logout"            // 302 to the identity provider's logout, session deleted
	ReasonLogoutCrossSite Reason = "logout_cross_site" // another site asked: a page to confirm, nothing changed
	ReasonLogoutMethod    Reason = "logout_method"     // GET when logoutMethod is POST: 405

	// Back-channel logout (the identity provider's logout token).
	ReasonBackchannelLogout  Reason = "backchannel_logout"  // verified; its sessions ended: 200
	ReasonBackchannelInvalid Reason = "backchannel_invalid" // no, a bad or a replayed logout token, or not POST: 400/405
)

// Reasons are all the reasons a decision can have: the only values of the
// checks metric's reason label.
func Reasons() []Reason {
	return []Reason{
		ReasonSession, ReasonPublicRoute,
		ReasonUnknownHost, ReasonBadPath, ReasonBadMethod, ReasonNoRoute, ReasonHeadersTooLarge,
		ReasonNoSession, ReasonInvalidSession, ReasonTokenExpired, ReasonRefreshRejected, ReasonLoginRedirect,
		ReasonOtherTenant, ReasonMissingScope, ReasonCSRF,
		ReasonStoreUnavailable, ReasonIDPUnavailable, ReasonRefreshWait, ReasonIDPBusy, ReasonCanceled,
		ReasonLoginComplete, ReasonCallbackUnconfigured, ReasonCallbackInvalid, ReasonCallbackUnknownState,
		ReasonCallbackIDPError, ReasonCallbackRejected,
		ReasonLogout, ReasonLogoutCrossSite, ReasonLogoutMethod,
		ReasonBackchannelLogout, ReasonBackchannelInvalid,
	}
}
