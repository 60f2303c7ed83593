package authz

import (
	"context"
	"errors"
	"html"
	"log/slog"
	"net/http"
	"net/url"
	"strings"

	"golang.org/x/oauth2"

	"github.com/extauthz/extauthz/pkg/idp"
	"github.com/extauthz/extauthz/pkg/session"
	"github.com/extauthz/extauthz/proto/sessionpb"
)

// stateCookieName is the cookie that carries one login's sealed state. Each
// login has its own, so logins in several tabs do not undo each other. Its
// path is the callback's, so a session cookie named __Host-… (which
// browsers keep only with Path=/) lends it __Secure- instead.
func (e *Engine) stateCookieName(state string) string {
	name := e.opt.CookieName
	if e.hostCookies() {
		name = "__Secure-" + name[len("__Host-"):]
	}
	return name + "_login_" + state[:10]
}

// hostCookies says whether the session cookie is a __Host- one: bound to
// this very host, so that no sibling subdomain can set or shadow it.
func (e *Engine) hostCookies() bool {
	name := e.opt.CookieName
	return len(name) >= len("__Host-") && strings.EqualFold(name[:len("__Host-")], "__Host-")
}

// bindingCookieName is, with __Host- cookies, the browser's login binding:
// a random value in a __Host- cookie that each login's state is sealed to.
// A __Secure- state cookie can be planted from a sibling subdomain (it may
// carry Domain); without the binding, one that an attacker got for his own
// login would sign the victim in as the attacker at the callback. The
// binding cannot be planted, and never goes upstream.
func (e *Engine) bindingCookieName() string { return e.opt.CookieName + "_b" }

// loginBinding is what a login of r is sealed to besides its tenant: the
// host, and with __Host- cookies the browser's binding (set is the cookie
// to set when the browser has none yet; "" when it has, or needs none).
func (e *Engine) loginBinding(r *in, create bool) (binding, set string) {
	if !e.hostCookies() {
		return r.host, ""
	}
	b := cookieValue(r.headers["cookie"], e.bindingCookieName())
	if len(b) != 43 || strings.Trim(b, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_") != "" {
		if !create {
			return "", ""
		}
		b = session.RandomString(32)
		set = e.setCookie(r, e.bindingCookieName(), b, "/", 0)
	}
	return r.host + "\x00" + b, set
}

// maxReturnTarget bounds the return path kept in the state cookie; a longer
// target returns to "/". Every login started in a browser sends its cookie
// to the callback until it expires, so a state cookie stays near 1 KB: it
// takes some 50 logins started at once (a hostile page opening navigations)
// before the callback's Cookie header nears Envoy's 60 KiB.
const maxReturnTarget = 512

// startLogin sends a browser to the identity provider. It writes nothing to
// the store: the login state goes, sealed, into the state cookie.
func (e *Engine) startLogin(ctx context.Context, r *in) *Decision {
	p, err := e.provider(ctx, r.tenant)
	if err != nil {
		return e.idpUnavailable(ctx, r, err, true)
	}
	redirectURI := e.urlScheme(r) + "://" + r.host + e.opt.CallbackPath
	verifier := oauth2.GenerateVerifier()
	nonce := session.RandomString(32)
	binding, setBinding := e.loginBinding(r, true)
	login, err := e.sessions.SealLogin(&sessionpb.LoginState{
		Tenant: r.tenant, Nonce: nonce, PkceVerifier: verifier, ReturnPath: returnTarget(r),
		RedirectUri: redirectURI,
	}, binding)
	if err != nil {
		return e.storeError(ctx, err)
	}
	authURL, err := p.AuthCodeURL(ctx, login.State, nonce, verifier, redirectURI)
	if err != nil {
		return e.idpUnavailable(ctx, r, err, true)
	}
	d := redirect(ReasonLoginRedirect, authURL,
		e.setCookie(r, e.stateCookieName(login.State), login.Cookie, e.opt.CallbackPath, int(e.sessions.LoginTTL().Seconds())))
	if setBinding != "" {
		d.Response = append(d.Response, Header{"set-cookie", setBinding})
	}
	return d
}

// returnTarget is where the browser goes back to after the login: the
// canonical path and the query, a path on this host; "/" when too long.
func returnTarget(r *in) string {
	t := r.path
	if r.query != "" {
		t += "?" + r.query
	}
	if len(t) > maxReturnTarget {
		return "/"
	}
	return t
}

// callback completes a login: the browser comes back from the identity
// provider with a code and the state.
func (e *Engine) callback(ctx context.Context, r *in) *Decision {
	if e.providers == nil {
		return page(http.StatusNotFound, ReasonCallbackUnconfigured, "Login is not configured", "No identity provider is configured.")
	}
	q, err := url.ParseQuery(r.query)
	if err != nil {
		return page(http.StatusBadRequest, ReasonCallbackInvalid, "Login failed", "The login callback's query is malformed.")
	}
	state := q.Get("state")
	if len(state) != session.CookieValueLen {
		return page(http.StatusBadRequest, ReasonCallbackInvalid, "Login failed", "The login callback lacks its state.")
	}
	// The state cookie is this login's; whatever happens next, the login is
	// over for this browser.
	name := e.stateCookieName(state)
	clear := []string{e.setCookie(r, name, "", e.opt.CallbackPath, -1)}
	binding, _ := e.loginBinding(r, false)
	ls, err := e.sessions.OpenLogin(state, cookieValue(r.headers["cookie"], name), r.tenant, binding)
	if err != nil {
		e.log.DebugContext(ctx, "login state refused", "reason", err)
		return withCookies(page(http.StatusBadRequest, ReasonCallbackUnknownState, "Login failed",
			"This login was not started in this browser, has expired or was already completed. Cookies must be enabled."), clear)
	}
	// From here on the login is known: "Start again" leads back to the page
	// it was started for, not to the app's root.
	again := startAgain(ls.GetReturnPath())
	if idpErr := q.Get("error"); idpErr != "" {
		status := http.StatusBadRequest
		if idpErr == "access_denied" {
			status = http.StatusForbidden
		}
		msg := "The identity provider answered: " + idpErr
		desc := q.Get("error_description")
		if desc != "" {
			msg += " (" + desc + ")"
		}
		e.audit(ctx, r, EventLoginFailed, nil, slog.String("idp_error", clip(idpErr)), slog.String("idp_error_description", clip(desc)))
		return withCookies(pageWith(status, ReasonCallbackIDPError, "Login failed", msg, again), clear)
	}
	code := q.Get("code")
	if code == "" {
		return withCookies(pageWith(http.StatusBadRequest, ReasonCallbackInvalid, "Login failed", "The login callback lacks its code.", again), clear)
	}
	p, err := e.provider(ctx, r.tenant)
	if err != nil {
		return withCookies(e.loginUnavailable(ctx, r, err), clear)
	}
	tok, err := p.Exchange(ctx, code, ls.GetPkceVerifier(), ls.GetRedirectUri(), ls.GetNonce())
	if errors.Is(err, idp.ErrRejected) {
		e.audit(ctx, r, EventLoginFailed, nil, slog.String("error", err.Error()))
		return withCookies(pageWith(http.StatusBadRequest, ReasonCallbackRejected, "Login failed", "The identity provider did not accept this login.", again), clear)
	}
	if err != nil {
		return withCookies(e.loginUnavailable(ctx, r, err), clear)
	}
	// One session per login, however often the callback is replayed. Marked
	// only now, after a successful exchange: nobody without a login at the
	// identity provider makes extauthz write anything.
	switch err := e.sessions.UseLogin(ctx, state, ls); {
	case errors.Is(err, session.ErrLoginUsed):
		return withCookies(pageWith(http.StatusBadRequest, ReasonCallbackUnknownState, "Login failed",
			"This login was already completed.", again), clear)
	case err != nil:
		return e.storeError(ctx, err)
	}
	// The provider may have ended its session (back-channel logout) between
	// issuing the code and this callback: no session for it.
	switch ended, err := e.sessions.SIDEnded(ctx, tok.Issuer, tok.SID); {
	case err != nil:
		return e.storeError(ctx, err)
	case ended:
		return withCookies(pageWith(http.StatusForbidden, ReasonCallbackRejected, "Login failed",
			"Your session at the identity provider has ended. Log in again.", again), clear)
	}
	rec := &sessionpb.Session{
		Tenant: r.tenant, Issuer: tok.Issuer, Subject: tok.Subject, Sid: tok.SID,
		AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, IdToken: tok.IDToken,
		Scopes: tok.Scopes, CsrfToken: session.RandomString(32),
	}
	setTokenTimes(rec, tok, e.opt.Now().Unix())
	s, cookie, err := e.sessions.Create(ctx, rec)
	if err != nil {
		return e.storeError(ctx, err)
	}
	e.audit(ctx, r, EventLogin, s)
	d := redirect(ReasonLoginComplete, ls.GetReturnPath(),
		append([]string{e.setCookie(r, e.opt.CookieName, cookie, "/", 0)}, clear...)...)
	d.TenantVerified = true
	return d
}

// setTokenTimes records when the access token was obtained and when it
// expires (0: the identity provider said nothing).
func setTokenTimes(rec *sessionpb.Session, tok *idp.Tokens, now int64) {
	rec.AccessTokenObtainedAt = now
	rec.AccessTokenExpiry = 0
	if !tok.Expiry.IsZero() {
		rec.AccessTokenExpiry = tok.Expiry.Unix()
	}
}

// logout deletes the session, clears the cookie and sends the browser to the
// identity provider's logout. Only the app's own pages may log a user out:
// a request another site made (Sec-Fetch-Site cross-site or same-site, a
// sibling tenant included) gets a page asking to confirm, and changes
// nothing.
func (e *Engine) logout(ctx context.Context, r *in) *Decision {
	if e.opt.LogoutMethod == http.MethodPost && r.method != http.MethodPost {
		d := deny(http.StatusMethodNotAllowed, ReasonLogoutMethod, "Method not allowed: log out with POST.\n")
		d.Response = append(d.Response, Header{"allow", "POST"})
		return d
	}
	if site := strings.ToLower(strings.TrimSpace(r.headers["sec-fetch-site"])); site == "cross-site" || site == "same-site" {
		return pageWith(http.StatusForbidden, ReasonLogoutCrossSite, "Log out?",
			"Another site asked to log you out of this one. Use the button to log out, or go back.",
			`<form method="post" action="`+html.EscapeString(e.opt.LogoutPath)+`"><button>Log out</button></form>`+"\n<p><a href=\"/\">Back to the app</a></p>")
	}
	var idTokenHint string
	hadSession := false
	if c := cookieValue(r.headers["cookie"], e.opt.CookieName); c != "" {
		s, err := e.sessions.Load(ctx, c, r.tenant)
		switch {
		case err == nil:
			idTokenHint, hadSession = s.Record.GetIdToken(), true
			if err := e.sessions.Delete(ctx, s); err != nil {
				return e.storeError(ctx, err) // never claim a logout that did not happen
			}
			e.audit(ctx, r, EventLogout, s, slog.String("via", "user"))
		case errors.Is(err, session.ErrNoSession):
			// Nothing to delete: perhaps an earlier logout's delete landed
			// unanswered. Every replica's cache is told again.
			e.sessions.Forget(ctx, c)
		case errors.Is(err, session.ErrOtherTenant):
			// Another tenant's session stays.
		default:
			return e.storeError(ctx, err)
		}
	}
	post := e.opt.PostLogoutRedirect
	if post[0] == '/' {
		post = e.urlScheme(r) + "://" + r.host + post
	}
	target := post
	provider := e.provider
	if hadSession {
		provider = e.sessionProvider
	}
	if p, err := provider(ctx, r.tenant); err != nil {
		// The local session is deleted: the browser goes to the page after
		// the logout, without the provider's logout.
		if d := e.idpTrouble(ctx, r, err, !hadSession); d != nil && d.Reason == ReasonUnknownHost {
			return d
		}
	} else if p != nil {
		u, err := p.LogoutURL(ctx, idTokenHint, post)
		if err != nil {
			e.log.WarnContext(ctx, "identity provider logout URL unavailable; the local session is deleted", "error", err)
		} else if u != "" {
			target = u
		}
	}
	return redirect(ReasonLogout, target, e.setCookie(r, e.opt.CookieName, "", "/", -1))
}

// idpUnavailable answers a request whose tenant's identity provider could
// not be had: the page of an outage, unless idpTrouble says it is not one.
// anonymous: the request carries no evidence that the tenant exists (no
// session, no login of this host under way).
func (e *Engine) idpUnavailable(ctx context.Context, r *in, err error, anonymous bool) *Decision {
	if d := e.idpTrouble(ctx, r, err, anonymous); d != nil {
		return d
	}
	d := page(http.StatusBadGateway, ReasonIDPUnavailable, "Login unavailable",
		"The identity provider cannot be reached. Try again shortly.")
	d.Response = append(d.Response, Header{"retry-after", "5"})
	return d
}

// loginUnavailable is idpUnavailable for a callback whose login state
// opened: extauthz started this login for this tenant, whose provider
// answered then, so an outage now is that tenant's, counted under its name
// (what the shipped IdP alert pages on), not among unverified tenants.
// A tenant the provider says it does not know (anymore) is not that: the
// login's state proves only that it knew it then.
func (e *Engine) loginUnavailable(ctx context.Context, r *in, err error) *Decision {
	unknown := errors.Is(err, idp.ErrUnknownTenant)
	d := e.idpUnavailable(ctx, r, err, unknown)
	d.TenantVerified = d.Reason == ReasonIDPUnavailable
	return d
}

// idpTrouble sorts out why a tenant's identity provider could not be had,
// and answers what is not an outage of the provider; for an outage it
// writes the warning (at most about one a second, with the count dropped)
// and returns nil: the caller answers in its own form. None of these
// answers nor warnings can be set off by anyone at will, so that the
// idp_unavailable alert means what it says:
//   - the caller went away (Envoy cancels a check whose client reset):
//     nobody reads the answer (499, canceled);
//   - an anonymous request for a tenant the provider does not know (its
//     discovery is not found): a host not served (404). With a session or a
//     login under way the tenant exists: its provider is failing;
//   - too many fetches for new tenants at once (503, idp_busy: anyone can
//     name new tenants, and a tenant whose login or session proved it is
//     never held up).
func (e *Engine) idpTrouble(ctx context.Context, r *in, err error, anonymous bool) *Decision {
	switch {
	case ctx.Err() != nil:
		return canceled()
	case anonymous && errors.Is(err, idp.ErrUnknownTenant):
		e.log.DebugContext(ctx, "unknown tenant", "tenant", r.tenant, "error", err)
		return deny(http.StatusNotFound, ReasonUnknownHost, notServed)
	case errors.Is(err, idp.ErrBusy):
		d := page(http.StatusServiceUnavailable, ReasonIDPBusy, "Login busy",
			"Too many logins are starting at once. Try again in a moment.")
		d.Response = append(d.Response, Header{"retry-after", "2"})
		return d
	}
	if l := e.idpWarnings; l.lim.Allow() {
		attrs := []any{"tenant", r.tenant, "error", err}
		if n := l.dropped.Swap(0); n > 0 {
			attrs = append(attrs, "suppressed", n)
		}
		e.log.WarnContext(ctx, "identity provider unavailable", attrs...)
	} else {
		l.dropped.Add(1)
	}
	return nil
}

// page is a small HTML answer for a browser, with a way back to the app.
func page(status int, reason Reason, title, msg string) *Decision {
	return pageWith(status, reason, title, msg, startAgain("/"))
}

// startAgain is the link back from a failed login: to the page the login
// was started for (a path on this host, as the state cookie kept it), where
// the browser either is signed in by now (another tab's login) or starts a
// new login for that page.
func startAgain(target string) string {
	if !strings.HasPrefix(target, "/") || strings.HasPrefix(target, "//") || strings.HasPrefix(target, "/\\") {
		target = "/"
	}
	return `<p><a href="` + html.EscapeString(target) + `">Start again</a></p>`
}

// pageWith is page with the given HTML (trusted) after the message.
func pageWith(status int, reason Reason, title, msg, actions string) *Decision {
	return &Decision{
		Status: status, Reason: reason,
		Response: []Header{{"content-type", "text/html; charset=utf-8"}, {"cache-control", "no-store"}},
		Body: "<!doctype html>\n<title>" + html.EscapeString(title) + "</title>\n<h1>" + html.EscapeString(title) +
			"</h1>\n<p>" + html.EscapeString(msg) + "</p>\n" + actions + "\n",
	}
}

func withCookies(d *Decision, cookies []string) *Decision {
	for _, c := range cookies {
		d.Response = append(d.Response, Header{"set-cookie", c})
	}
	return d
}

// clip bounds what a client can make an audit line carry.
func clip(s string) string {
	if len(s) > 200 {
		return s[:200]
	}
	return s
}

// provider is the identity provider of a tenant; nil, nil when none is configured.
func (e *Engine) provider(ctx context.Context, tenant string) (idp.Client, error) {
	if e.providers == nil {
		return nil, nil
	}
	return e.providers.Provider(ctx, tenant)
}

// sessionProvider is provider for a request with a session of tenant: the
// session is evidence that the tenant exists (idp.Registry.Vouch).
func (e *Engine) sessionProvider(ctx context.Context, tenant string) (idp.Client, error) {
	if v, ok := e.providers.(interface{ Vouch(tenant string) }); ok {
		v.Vouch(tenant)
	}
	return e.provider(ctx, tenant)
}
