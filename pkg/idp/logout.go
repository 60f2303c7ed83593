package idp

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
)

// OpenID Connect Back-Channel Logout 1.0: the identity provider POSTs a
// logout token (a signed JWT) when a user's session there ends.

// BackChannelLogoutEvent is the member of a logout token's events claim.
const BackChannelLogoutEvent = "http://schemas.openid.net/event/backchannel-logout"

// LogoutTokenMaxAge is how old (by its iat) a logout token may be; one
// issued up to LogoutTokenSkew in the future is accepted (clocks differ).
const (
	LogoutTokenMaxAge = 5 * time.Minute
	LogoutTokenSkew   = time.Minute
)

// ErrUnsupported means the identity provider does not send logout tokens
// (XSUAA).
var ErrUnsupported = errors.New("back-channel logout is not supported by this identity provider")

// Logout is what a verified logout token says.
type Logout struct {
	Issuer  string
	Subject string // "" when the token names only a sid
	SID     string // "" when the token names only a subject
	JTI     string
	// Until is how long the token could be replayed: remember its jti until then.
	Until time.Time
}

// VerifyLogoutToken verifies a logout token as section 2.6 of the
// specification asks: signature (the provider's keys), iss, aud (our client
// id), iat (within LogoutTokenMaxAge), exp when present, the back-channel
// logout event, no nonce, a sid or a sub, a jti. Any failure wraps
// ErrRejected; a provider that cannot be reached gives another error. The
// caller checks the jti against replays.
func (p *Provider) VerifyLogoutToken(ctx context.Context, raw string) (*Logout, error) {
	d, err := p.discover(ctx)
	if err != nil {
		return nil, err
	}
	ctx, cancel := p.ctx(ctx)
	defer cancel()
	return verifyLogoutToken(ctx, d.logoutVerifier, raw, p.cfg.Now())
}

// logoutVerifier checks signature, issuer and audience; expiry is checked
// by verifyLogoutToken, since the specification's drafts had no exp and
// providers (Ory Hydra) still send none.
func logoutVerifier(op *oidc.Provider, clientID string, now func() time.Time) *oidc.IDTokenVerifier {
	return op.Verifier(&oidc.Config{ClientID: clientID, Now: now, SkipExpiryCheck: true})
}

func verifyLogoutToken(ctx context.Context, v *oidc.IDTokenVerifier, raw string, now time.Time) (*Logout, error) {
	if raw == "" {
		return nil, fmt.Errorf("%w: no logout_token", ErrRejected)
	}
	t, err := v.Verify(ctx, raw)
	if err != nil {
		// go-oidc fails a bad signature, issuer or audience, and a failed
		// fetch of the keys, alike: the sender gets 400 either way.
		return nil, fmt.Errorf("%w: logout token: %w", ErrRejected, err)
	}
	var c struct {
		Events map[string]json.RawMessage `json:"events"`
		Nonce  *json.RawMessage           `json:"nonce"`
		SID    string                     `json:"sid"`
		JTI    string                     `json:"jti"`
		IAT    *json.Number               `json:"iat"`
		EXP    *json.Number               `json:"exp"`
	}
	if err := t.Claims(&c); err != nil {
		return nil, fmt.Errorf("%w: logout token claims: %w", ErrRejected, err)
	}
	ev, ok := c.Events[BackChannelLogoutEvent]
	var obj map[string]json.RawMessage
	if !ok || json.Unmarshal(ev, &obj) != nil || obj == nil {
		return nil, fmt.Errorf("%w: logout token: no back-channel logout event", ErrRejected)
	}
	if c.Nonce != nil {
		return nil, fmt.Errorf("%w: logout token carries a nonce (an ID token?)", ErrRejected)
	}
	if c.SID == "" && t.Subject == "" {
		return nil, fmt.Errorf("%w: logout token names neither sid nor sub", ErrRejected)
	}
	if c.JTI == "" {
		return nil, fmt.Errorf("%w: logout token has no jti", ErrRejected)
	}
	if c.IAT == nil {
		return nil, fmt.Errorf("%w: logout token has no iat", ErrRejected)
	}
	iat := t.IssuedAt
	if now.Sub(iat) > LogoutTokenMaxAge || iat.Sub(now) > LogoutTokenSkew {
		return nil, fmt.Errorf("%w: logout token issued at %s, outside the accepted window", ErrRejected, iat.UTC().Format(time.RFC3339))
	}
	until := iat.Add(LogoutTokenMaxAge)
	if c.EXP != nil {
		if !t.Expiry.After(now.Add(-LogoutTokenSkew)) {
			return nil, fmt.Errorf("%w: logout token expired at %s", ErrRejected, t.Expiry.UTC().Format(time.RFC3339))
		}
		if t.Expiry.After(until) {
			until = t.Expiry
		}
	}
	return &Logout{Issuer: t.Issuer, Subject: t.Subject, SID: c.SID, JTI: c.JTI, Until: until.Add(LogoutTokenSkew)}, nil
}

// VerifyLogoutToken: XSUAA sends no logout tokens.
func (x *XSUAA) VerifyLogoutToken(context.Context, string) (*Logout, error) {
	return nil, ErrUnsupported
}
