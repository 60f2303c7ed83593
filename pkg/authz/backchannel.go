package authz

import (
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"time"

	"github.com/extauthz/extauthz/pkg/idp"
	"github.com/extauthz/extauthz/pkg/session"
)

// backchannelLogout serves OpenID Connect Back-Channel Logout 1.0: the
// identity provider POSTs a logout_token (form-encoded); extauthz verifies
// it for the tenant of the host, ends every session it names — by sid when
// present, else every session of its sub, at the token's issuer, whichever
// tenant's host each was made on — on every replica,
// and answers the provider itself: 200 with Cache-Control: no-store, or
// 400 with an error body. The app is never involved (the decision is a
// denial carrying 200, which Envoy's gRPC ext_authz returns to the client as
// it is). The body reaches the engine through Envoy's with_request_body on
// this route, or a route straight to extauthz's HTTP listener.
func (e *Engine) backchannelLogout(ctx context.Context, r *in) *Decision {
	if r.method != http.MethodPost {
		d := backchannelError(http.StatusMethodNotAllowed, ReasonBackchannelInvalid, "invalid_request", "the back-channel logout endpoint takes POST")
		d.Response = append(d.Response, Header{"allow", "POST"})
		return d
	}
	refuse := func(desc string, attrs ...slog.Attr) *Decision {
		e.audit(ctx, r, EventBackchannelRefused, nil, append([]slog.Attr{slog.String("error", desc)}, attrs...)...)
		return backchannelError(http.StatusBadRequest, ReasonBackchannelInvalid, "invalid_request", desc)
	}
	if e.providers == nil {
		return refuse("no identity provider is configured")
	}
	form, err := url.ParseQuery(string(r.body))
	raw := form.Get("logout_token")
	if err != nil || raw == "" {
		return refuse("no logout_token in the request body (a proxy must pass the body: with_request_body)")
	}
	p, err := e.provider(ctx, r.tenant)
	if err != nil {
		if d := e.idpTrouble(ctx, r, err, true); d != nil {
			return d
		}
		d := backchannelError(http.StatusServiceUnavailable, ReasonIDPUnavailable, "temporarily_unavailable", "the identity provider cannot be reached")
		d.Response = append(d.Response, Header{"retry-after", "5"})
		return d
	}
	lo, err := p.VerifyLogoutToken(ctx, raw)
	switch {
	case errors.Is(err, idp.ErrRejected), errors.Is(err, idp.ErrUnsupported):
		return refuse(err.Error())
	case err != nil:
		e.log.WarnContext(ctx, "identity provider unavailable for a back-channel logout", "error", err)
		d := backchannelError(http.StatusServiceUnavailable, ReasonIDPUnavailable, "temporarily_unavailable", "the identity provider cannot be reached")
		d.Response = append(d.Response, Header{"retry-after", "5"})
		return d
	}
	// A logout token is used once: remembered (hashed) until it could no
	// longer be accepted anyway. Recorded only once its sessions have ended:
	// a delivery that fails (503) is retried by the provider with the same
	// token, which must then be accepted. Two deliveries at once both end
	// the same sessions, which is harmless. A jti is unique at its issuer,
	// and what the token ends spans every tenant host of the issuer: the
	// mark is the issuer's, so that a token replayed to another tenant's
	// host is refused too.
	mark := "logout\x00" + lo.Issuer + "\x00" + lo.JTI
	switch seen, err := e.sessions.Seen(ctx, mark); {
	case err != nil:
		return backchannelStoreError(e, ctx, err)
	case seen:
		return refuse("logout token replayed", slog.String("subject", lo.Subject), slog.String("sid", lo.SID))
	}
	// The provider's session and subject are its issuer's, not this host's
	// tenant's: with an issuer shared by several tenant hosts, the token
	// ends the sessions on all of them (session/idpsession.go).
	var ended []string
	if lo.SID != "" {
		ended, err = e.sessions.EndIDPSession(ctx, lo.Issuer, lo.SID)
	} else {
		ended, err = e.sessions.EndIDPSubject(ctx, lo.Issuer, lo.Subject)
	}
	for _, fp := range ended {
		e.audit(ctx, r, EventLogout, nil, slog.String("via", "backchannel"), slog.String("subject", lo.Subject),
			slog.String("session", fp), slog.String("sid", lo.SID))
	}
	if err != nil {
		return backchannelStoreError(e, ctx, err) // not recorded: the provider's retry is accepted
	}
	if err := e.sessions.Once(ctx, mark, time.Until(lo.Until)); err != nil && !errors.Is(err, session.ErrSeen) {
		return backchannelStoreError(e, ctx, err)
	}
	e.log.InfoContext(ctx, "back-channel logout", "tenant", r.tenant, "issuer", lo.Issuer, "subject", lo.Subject, "sid", lo.SID, "sessions", len(ended))
	d := &Decision{Status: http.StatusOK, Reason: ReasonBackchannelLogout,
		Response: []Header{{"cache-control", "no-store"}}}
	d.TenantVerified = true // its identity provider signed for it
	return d
}

func backchannelStoreError(e *Engine, ctx context.Context, err error) *Decision {
	e.log.WarnContext(ctx, "session store unavailable during a back-channel logout", "error", err)
	d := backchannelError(http.StatusServiceUnavailable, ReasonStoreUnavailable, "temporarily_unavailable", "the session store cannot be reached")
	d.Response = append(d.Response, Header{"retry-after", "1"})
	return d
}

// backchannelError is an error answer to the identity provider: JSON with
// error and error_description (section 2.8), never cached.
func backchannelError(status int, reason Reason, code, desc string) *Decision {
	b, _ := json.Marshal(map[string]string{"error": code, "error_description": desc})
	return &Decision{
		Status: status, Reason: reason, Body: string(b) + "\n",
		Response: []Header{{"content-type", "application/json"}, {"cache-control", "no-store"}},
	}
}
