// Package idp is one tenant's identity provider: OIDC discovery (cached,
// fetched once), the authorize URL, the code exchange with PKCE, ID token
// verification, refresh, and the logout URL.
package idp

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"
	"golang.org/x/sync/singleflight"
)

// ErrRejected means the identity provider answered and said no (a bad or
// used code, a revoked refresh token, a token that does not verify). Any
// other error means it could not be asked (down, slow, broken answer).
var ErrRejected = errors.New("rejected by the identity provider")

// Config is one OpenID Connect client registration.
type Config struct {
	Issuer       string
	ClientID     string
	ClientSecret string
	Scopes       []string
	// Timeout bounds every call to the provider (default 5s).
	Timeout time.Duration
	// Now is the clock for token checks (default time.Now).
	Now func() time.Time
	// ClientAuth is how the client authenticates at the token endpoint:
	// "client_secret_basic", "client_secret_post", or "" to follow
	// discovery's token_endpoint_auth_methods_supported.
	ClientAuth string
	// ScopeClaim, when set, names an ID token claim (a list or a
	// space-separated string, e.g. IAS's "groups") whose values join the
	// session's scopes.
	ScopeClaim string
	// RetryAfter: a failed discovery or key fetch is answered from memory
	// this long (default DefaultRetryAfter).
	RetryAfter time.Duration
}

// Tokens is what a login or a refresh yields.
type Tokens struct {
	AccessToken  string
	RefreshToken string
	IDToken      string
	Expiry       time.Time // zero when the provider gave no expires_in
	Issuer       string
	Subject      string
	SID          string
	Scopes       []string
}

// Provider is a generic OIDC provider. Discovery happens on first use, once
// however many requests need it at the same time; a failure is remembered
// for RetryAfter, then retried by the next request.
type Provider struct {
	cfg    Config
	client *http.Client
	group  singleflight.Group

	mu       sync.RWMutex
	d        *discovered
	err      error     // the last discovery failure
	failedAt time.Time // when it failed
}

type discovered struct {
	provider *oidc.Provider
	verifier *oidc.IDTokenVerifier
	// logoutVerifier checks logout tokens (no expiry check of its own).
	logoutVerifier *oidc.IDTokenVerifier
	oauth          oauth2.Config
	endSession     string
}

// New returns a Provider; it does not contact the issuer yet.
func New(cfg Config) (*Provider, error) {
	// Which issuers are acceptable (https, plain http on loopback only) is
	// the configuration's to check; here only that it is a URL.
	if u, err := url.Parse(cfg.Issuer); err != nil || u.Host == "" || (u.Scheme != "https" && u.Scheme != "http") {
		return nil, fmt.Errorf("issuer %q is not an absolute http(s) URL", cfg.Issuer)
	}
	if cfg.ClientID == "" {
		return nil, errors.New("no client id")
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = 5 * time.Second
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if len(cfg.Scopes) == 0 {
		cfg.Scopes = []string{oidc.ScopeOpenID}
	}
	if cfg.RetryAfter <= 0 {
		cfg.RetryAfter = DefaultRetryAfter
	}
	client := guardClient(&http.Client{Timeout: cfg.Timeout}, cfg.RetryAfter, cfg.Now)
	return &Provider{cfg: cfg, client: client}, nil
}

func (p *Provider) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx = oidc.ClientContext(ctx, p.client)
	ctx = context.WithValue(ctx, oauth2.HTTPClient, p.client)
	return context.WithTimeout(ctx, p.cfg.Timeout)
}

// Discover fetches the provider's discovery document, unless it has been
// already (or has failed within RetryAfter).
func (p *Provider) Discover(ctx context.Context) error {
	_, err := p.discover(ctx)
	return err
}

func (p *Provider) discover(ctx context.Context) (*discovered, error) {
	p.mu.RLock()
	d, failed, failedAt := p.d, p.err, p.failedAt
	p.mu.RUnlock()
	if d != nil {
		return d, nil
	}
	if failed != nil && p.cfg.Now().Sub(failedAt) < p.cfg.RetryAfter {
		return nil, failed
	}
	v, err, _ := p.group.Do("discover", func() (any, error) {
		// Detached from the first caller's cancellation: its result serves all.
		ctx, cancel := p.ctx(context.WithoutCancel(ctx))
		defer cancel()
		op, err := oidc.NewProvider(ctx, p.cfg.Issuer)
		if err != nil {
			err = fmt.Errorf("oidc discovery at %s: %w", p.cfg.Issuer, err)
			p.mu.Lock()
			p.err, p.failedAt = err, p.cfg.Now()
			p.mu.Unlock()
			return nil, err
		}
		var extra struct {
			EndSession  string   `json:"end_session_endpoint"`
			AuthMethods []string `json:"token_endpoint_auth_methods_supported"`
		}
		_ = op.Claims(&extra)
		endpoint := op.Endpoint()
		endpoint.AuthStyle = authStyle(p.cfg.ClientAuth, extra.AuthMethods, p.cfg.ClientSecret)
		d := &discovered{
			provider:       op,
			verifier:       op.Verifier(&oidc.Config{ClientID: p.cfg.ClientID, Now: p.cfg.Now}),
			logoutVerifier: logoutVerifier(op, p.cfg.ClientID, p.cfg.Now),
			oauth: oauth2.Config{
				ClientID: p.cfg.ClientID, ClientSecret: p.cfg.ClientSecret,
				Endpoint: endpoint, Scopes: p.cfg.Scopes,
			},
			endSession: extra.EndSession,
		}
		p.mu.Lock()
		p.d = d
		p.mu.Unlock()
		return d, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(*discovered), nil
}

// AuthCodeURL is the authorize endpoint URL for a login with state, nonce and
// PKCE S256 (from verifier).
func (p *Provider) AuthCodeURL(ctx context.Context, state, nonce, verifier, redirectURI string) (string, error) {
	d, err := p.discover(ctx)
	if err != nil {
		return "", err
	}
	oc := d.oauth
	oc.RedirectURL = redirectURI
	return oc.AuthCodeURL(state, oidc.Nonce(nonce), oauth2.S256ChallengeOption(verifier)), nil
}

// Exchange trades a code for tokens and verifies the ID token, its nonce
// included.
func (p *Provider) Exchange(ctx context.Context, code, verifier, redirectURI, nonce string) (*Tokens, error) {
	d, err := p.discover(ctx)
	if err != nil {
		return nil, err
	}
	ctx, cancel := p.ctx(ctx)
	defer cancel()
	oc := d.oauth
	oc.RedirectURL = redirectURI
	tok, err := oc.Exchange(ctx, code, oauth2.VerifierOption(verifier))
	if err != nil {
		return nil, classify("code exchange", err)
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return nil, fmt.Errorf("%w: the token response has no id_token (is the openid scope granted?)", ErrRejected)
	}
	t, err := p.verify(ctx, d, tok, raw)
	if err != nil {
		return nil, err
	}
	if subtle.ConstantTimeCompare([]byte(t.nonce), []byte(nonce)) != 1 {
		return nil, fmt.Errorf("%w: id token nonce does not match the login", ErrRejected)
	}
	return t.Tokens, nil
}

type verified struct {
	*Tokens
	nonce string
}

func (p *Provider) verify(ctx context.Context, d *discovered, tok *oauth2.Token, raw string) (*verified, error) {
	idt, err := d.verifier.Verify(ctx, raw)
	if err != nil {
		return nil, fmt.Errorf("%w: id token: %w", ErrRejected, err)
	}
	var claims map[string]any
	_ = idt.Claims(&claims)
	sid, _ := claims["sid"].(string)
	t := tokens(tok, raw, idt.Issuer, idt.Subject, sid)
	if p.cfg.ScopeClaim != "" {
		switch v := claims[p.cfg.ScopeClaim].(type) {
		case string:
			t.Scopes = append(t.Scopes, strings.Fields(v)...)
		case []any:
			for _, x := range v {
				if s, ok := x.(string); ok {
					t.Scopes = append(t.Scopes, s)
				}
			}
		}
	}
	return &verified{Tokens: t, nonce: idt.Nonce}, nil
}

// authStyle is how the client authenticates at the token endpoint: as
// configured, else from the provider's token_endpoint_auth_methods_supported:
// client_secret_basic (the default of OpenID Connect Discovery) unless only
// client_secret_post is offered; a client without a secret sends its id in
// the body. Never x/oauth2's auto-detection, which sends a rejected code a
// second time.
func authStyle(configured string, supported []string, secret string) oauth2.AuthStyle {
	switch {
	case secret == "" || configured == "client_secret_post":
		return oauth2.AuthStyleInParams
	case configured == "client_secret_basic":
		return oauth2.AuthStyleInHeader
	case len(supported) > 0 && !slices.Contains(supported, "client_secret_basic") && slices.Contains(supported, "client_secret_post"):
		return oauth2.AuthStyleInParams
	}
	return oauth2.AuthStyleInHeader
}

func tokens(tok *oauth2.Token, idToken, iss, sub, sid string) *Tokens {
	t := &Tokens{
		AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, IDToken: idToken,
		Expiry: tok.Expiry, Issuer: iss, Subject: sub, SID: sid,
	}
	if s, ok := tok.Extra("scope").(string); ok {
		t.Scopes = strings.Fields(s)
	}
	return t
}

// Refresh uses a refresh token. The result keeps the old refresh or ID token
// when the provider sends no new one (the caller merges). A new ID token must
// verify and name the same subject.
func (p *Provider) Refresh(ctx context.Context, refreshToken, subject string) (*Tokens, error) {
	d, err := p.discover(ctx)
	if err != nil {
		return nil, err
	}
	ctx, cancel := p.ctx(ctx)
	defer cancel()
	tok, err := d.oauth.TokenSource(ctx, &oauth2.Token{RefreshToken: refreshToken}).Token()
	if err != nil {
		return nil, classify("refresh", err)
	}
	raw, _ := tok.Extra("id_token").(string)
	if raw == "" {
		return tokens(tok, "", "", subject, ""), nil
	}
	t, err := p.verify(ctx, d, tok, raw)
	if err != nil {
		return nil, err
	}
	if t.Subject != subject {
		return nil, fmt.Errorf("%w: refreshed id token names another subject", ErrRejected)
	}
	return t.Tokens, nil
}

// LogoutURL is the end_session_endpoint with id_token_hint and
// post_logout_redirect_uri, or "" when the provider has none.
func (p *Provider) LogoutURL(ctx context.Context, idTokenHint, postLogoutRedirect string) (string, error) {
	d, err := p.discover(ctx)
	if err != nil {
		return "", err
	}
	if d.endSession == "" {
		return "", nil
	}
	u, err := url.Parse(d.endSession)
	if err != nil {
		return "", fmt.Errorf("end_session_endpoint: %w", err)
	}
	q := u.Query()
	if idTokenHint != "" {
		q.Set("id_token_hint", idTokenHint)
	}
	q.Set("post_logout_redirect_uri", postLogoutRedirect)
	q.Set("client_id", p.cfg.ClientID)
	u.RawQuery = q.Encode()
	return u.String(), nil
}

// classify marks answers of the provider that say no (4xx) as ErrRejected.
func classify(op string, err error) error {
	var re *oauth2.RetrieveError
	if errors.As(err, &re) && re.Response != nil && re.Response.StatusCode >= 400 && re.Response.StatusCode < 500 {
		code := re.ErrorCode
		if code == "" {
			code = re.Response.Status
		}
		return fmt.Errorf("%w: %s: %s", ErrRejected, op, code)
	}
	return fmt.Errorf("%s: %w", op, err)
}
