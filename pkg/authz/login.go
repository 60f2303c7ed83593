package authz

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"errors"
	"html"
	"net/http"
	"net/url"
	"time"

	"golang.org/x/oauth2"

	"github.com/extauthz/extauthz/pkg/idp"
	"github.com/extauthz/extauthz/pkg/session"
	tenancy "github.com/extauthz/extauthz/pkg/tenant"
	"github.com/extauthz/extauthz/proto/sessionpb"
)

// stateCookieName is the cookie that binds one login to one browser. Each
// login has its own, so logins in several tabs do not undo each other.
func (e *Engine) stateCookieName(state string) string {
	return e.opt.CookieName + "_login_" + state[:10]
}

// startLogin sends a browser to the identity provider.
func (e *Engine) startLogin(ctx context.Context, r *Request, tenant string) *Decision {
	host, ok := tenancy.ValidHost(r.Host)
	if !ok {
		return deny(http.StatusBadRequest, "bad_host", "Bad request: invalid Host header.\n")
	}
	p, err := e.provider(ctx, tenant)
	if err != nil {
		return e.idpUnavailable(ctx, err)
	}
	redirectURI := e.scheme(r) + "://" + host + e.opt.CallbackPath
	verifier := oauth2.GenerateVerifier()
	nonce := session.RandomString(32)
	browser := session.RandomString(32)
	bsum := sha256.Sum256([]byte(browser))
	state, err := e.sessions.PutLogin(ctx, &sessionpb.LoginState{
		Tenant: tenant, Nonce: nonce, PkceVerifier: verifier, ReturnPath: returnPath(r.Path),
		BrowserBinding: bsum[:], RedirectUri: redirectURI,
	})
	if err != nil {
		return e.storeError(ctx, err)
	}
	authURL, err := p.AuthCodeURL(ctx, state, nonce, verifier, redirectURI)
	if err != nil {
		return e.idpUnavailable(ctx, err)
	}
	return redirect("login_redirect", authURL,
		e.setCookie(r, e.stateCookieName(state), browser, e.opt.CallbackPath, int(e.opt.LoginTTL/time.Second)))
}

// callback completes a login: the browser comes back from the identity
// provider with a code and the state.
func (e *Engine) callback(ctx context.Context, r *Request, tenant, query string) *Decision {
	if e.providers == nil {
		return page(http.StatusNotFound, "callback_unconfigured", "Login is not configured", "No identity provider is configured.")
	}
	q, err := url.ParseQuery(query)
	if err != nil {
		return page(http.StatusBadRequest, "callback_invalid", "Login failed", "The login callback's query is malformed.")
	}
	state := q.Get("state")
	var clear []string
	if len(state) >= 10 {
		clear = []string{e.setCookie(r, e.stateCookieName(state), "", e.opt.CallbackPath, -1)}
	}
	if idpErr := q.Get("error"); idpErr != "" {
		if state != "" {
			_, _ = e.sessions.TakeLogin(ctx, state) // this login is over either way
		}
		status := http.StatusBadRequest
		if idpErr == "access_denied" {
			status = http.StatusForbidden
		}
		msg := "The identity provider answered: " + idpErr
		if desc := q.Get("error_description"); desc != "" {
			msg += " (" + desc + ")"
		}
		return withCookies(page(status, "callback_idp_error", "Login failed", msg), clear)
	}
	code := q.Get("code")
	if state == "" || code == "" {
		return withCookies(page(http.StatusBadRequest, "callback_invalid", "Login failed", "The login callback lacks its code or state."), clear)
	}
	ls, err := e.sessions.TakeLogin(ctx, state)
	if errors.Is(err, session.ErrNoSession) {
		return withCookies(page(http.StatusBadRequest, "callback_unknown_state", "Login failed",
			"This login is unknown, has expired or was already completed."), clear)
	}
	if err != nil {
		return e.storeError(ctx, err)
	}
	browser := cookieValue(r.Headers["cookie"], e.stateCookieName(state))
	bsum := sha256.Sum256([]byte(browser))
	if browser == "" || subtle.ConstantTimeCompare(bsum[:], ls.GetBrowserBinding()) != 1 {
		return withCookies(page(http.StatusBadRequest, "callback_foreign_browser", "Login failed",
			"This login was not started in this browser (its login cookie is missing or wrong). Cookies must be enabled."), clear)
	}
	if ls.GetTenant() != tenant {
		return withCookies(page(http.StatusBadRequest, "callback_other_tenant", "Login failed",
			"This login was started on another tenant's host."), clear)
	}
	p, err := e.provider(ctx, tenant)
	if err != nil {
		return withCookies(e.idpUnavailable(ctx, err), clear)
	}
	tok, err := p.Exchange(ctx, code, ls.GetPkceVerifier(), ls.GetRedirectUri(), ls.GetNonce())
	if errors.Is(err, idp.ErrRejected) {
		e.log.InfoContext(ctx, "login rejected", "error", err)
		return withCookies(page(http.StatusBadRequest, "callback_rejected", "Login failed", "The identity provider did not accept this login."), clear)
	}
	if err != nil {
		return withCookies(e.idpUnavailable(ctx, err), clear)
	}
	rec := &sessionpb.Session{
		Tenant: tenant, Issuer: tok.Issuer, Subject: tok.Subject, Sid: tok.SID,
		AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, IdToken: tok.IDToken,
		Scopes: tok.Scopes, CsrfToken: session.RandomString(32),
	}
	if !tok.Expiry.IsZero() {
		rec.AccessTokenExpiry = tok.Expiry.Unix()
	}
	_, cookie, err := e.sessions.Create(ctx, rec)
	if err != nil {
		return e.storeError(ctx, err)
	}
	e.log.InfoContext(ctx, "login", "subject", rec.GetSubject(), "tenant", rec.GetTenant())
	d := redirect("login_complete", ls.GetReturnPath(),
		append([]string{e.setCookie(r, e.opt.CookieName, cookie, "/", 0)}, clear...)...)
	d.TenantVerified = true
	return d
}

// logout deletes the session, clears the cookie and sends the browser to the
// identity provider's logout.
func (e *Engine) logout(ctx context.Context, r *Request, tenant string) *Decision {
	host, ok := tenancy.ValidHost(r.Host)
	if !ok {
		return deny(http.StatusBadRequest, "bad_host", "Bad request: invalid Host header.\n")
	}
	var idTokenHint string
	if c := cookieValue(r.Headers["cookie"], e.opt.CookieName); c != "" {
		s, err := e.sessions.Load(ctx, c, tenant)
		switch {
		case err == nil:
			idTokenHint = s.Record.GetIdToken()
			if err := e.sessions.Delete(ctx, s); err != nil {
				return e.storeError(ctx, err) // never claim a logout that did not happen
			}
		case errors.Is(err, session.ErrNoSession), errors.Is(err, session.ErrOtherTenant):
			// Nothing of this tenant to delete; another tenant's session stays.
		default:
			return e.storeError(ctx, err)
		}
	}
	post := e.opt.PostLogoutRedirect
	if post[0] == '/' {
		post = e.scheme(r) + "://" + host + post
	}
	target := post
	if p, err := e.provider(ctx, tenant); err != nil {
		e.log.WarnContext(ctx, "identity provider unavailable at logout; the local session is deleted", "error", err)
	} else if p != nil {
		u, err := p.LogoutURL(ctx, idTokenHint, post)
		if err != nil {
			e.log.WarnContext(ctx, "identity provider logout URL unavailable; the local session is deleted", "error", err)
		} else if u != "" {
			target = u
		}
	}
	return redirect("logout", target, e.setCookie(r, e.opt.CookieName, "", "/", -1))
}

func (e *Engine) idpUnavailable(ctx context.Context, err error) *Decision {
	e.log.WarnContext(ctx, "identity provider unavailable", "error", err)
	d := page(http.StatusBadGateway, "idp_unavailable", "Login unavailable",
		"The identity provider cannot be reached. Try again shortly.")
	d.Response = append(d.Response, Header{"retry-after", "5"})
	return d
}

// page is a small HTML answer for a browser.
func page(status int, reason, title, msg string) *Decision {
	return &Decision{
		Status: status, Reason: reason,
		Response: []Header{{"content-type", "text/html; charset=utf-8"}, {"cache-control", "no-store"}},
		Body: "<!doctype html>\n<title>" + html.EscapeString(title) + "</title>\n<h1>" + html.EscapeString(title) +
			"</h1>\n<p>" + html.EscapeString(msg) + "</p>\n<p><a href=\"/\">Start again</a></p>\n",
	}
}

func withCookies(d *Decision, cookies []string) *Decision {
	for _, c := range cookies {
		d.Response = append(d.Response, Header{"set-cookie", c})
	}
	return d
}
