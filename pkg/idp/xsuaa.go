package idp

import (
	"context"
	"crypto/subtle"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/extauthz/extauthz/pkg/binding"
)

// XSUAA is one tenant's SAP XSUAA authorization server. With tenantmode
// shared the tenant's server is https://<tenant>.<uaadomain>; its endpoints
// are /oauth/authorize, /oauth/token, /token_keys and /logout.do. With
// credential-type x509 the token endpoint is called with mutual TLS at the
// certurl, rewritten for the tenant the same way.
type XSUAA struct {
	creds    binding.XSUAA
	base     string // the tenant's server
	client   *http.Client
	oauth    oauth2.Config
	verifier *oidc.IDTokenVerifier
	timeout  time.Duration
}

// XSUAAConfig configures NewXSUAA.
type XSUAAConfig struct {
	Credentials binding.XSUAA
	// Tenant is the subdomain ("" for the provider's own server).
	Tenant  string
	Timeout time.Duration
	// Transport is the base transport (default: http.DefaultTransport's
	// settings); the x509 client certificate is added to a copy of it.
	Transport *http.Transport
	Now       func() time.Time
}

// serverURL is the tenant's server: https://<tenant>.<uaadomain>, or the
// binding's url for the provider itself.
func serverURL(c binding.XSUAA, tenant string) (string, error) {
	if tenant == "" {
		u, err := url.Parse(c.URL)
		if err != nil || u.Host == "" {
			return "", fmt.Errorf("url %q is not a URL", c.URL)
		}
		return strings.TrimSuffix(c.URL, "/"), nil
	}
	return "https://" + tenant + "." + c.UAADomain, nil
}

// certServerURL is the certurl with its first label (the provider's
// subdomain) replaced by the tenant's.
func certServerURL(c binding.XSUAA, tenant string) (string, error) {
	u, err := url.Parse(c.CertURL)
	if err != nil || u.Host == "" {
		return "", fmt.Errorf("certurl %q is not a URL", c.CertURL)
	}
	if tenant != "" {
		_, rest, ok := strings.Cut(u.Host, ".")
		if !ok {
			return "", fmt.Errorf("certurl %q has no subdomain to replace", c.CertURL)
		}
		u.Host = tenant + "." + rest
	}
	u.Path = ""
	return strings.TrimSuffix(u.String(), "/"), nil
}

// NewXSUAA returns the tenant's XSUAA; it contacts nothing yet.
func NewXSUAA(c XSUAAConfig) (*XSUAA, error) {
	cr := c.Credentials
	if c.Timeout <= 0 {
		c.Timeout = 5 * time.Second
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	tenant := c.Tenant
	if cr.TenantMode != "shared" {
		tenant = "" // a dedicated app: the binding's own server for everyone
	}
	base, err := serverURL(cr, tenant)
	if err != nil {
		return nil, fmt.Errorf("xsuaa: %w", err)
	}
	tokenBase := base
	tr := http.DefaultTransport.(*http.Transport).Clone()
	if c.Transport != nil {
		tr = c.Transport.Clone()
	}
	authStyle := oauth2.AuthStyleInHeader
	if cr.CredentialType == "x509" {
		cert, err := tls.X509KeyPair([]byte(cr.Certificate), []byte(cr.Key))
		if err != nil {
			return nil, fmt.Errorf("xsuaa x509 credentials: %w", err)
		}
		if tr.TLSClientConfig == nil {
			tr.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		}
		tr.TLSClientConfig.Certificates = []tls.Certificate{cert}
		if tokenBase, err = certServerURL(cr, tenant); err != nil {
			return nil, fmt.Errorf("xsuaa: %w", err)
		}
		authStyle = oauth2.AuthStyleInParams // client_id in the body, no secret
	}
	client := guardClient(&http.Client{Transport: tr, Timeout: c.Timeout}, DefaultRetryAfter, c.Now)
	x := &XSUAA{creds: cr, base: base, timeout: c.Timeout, client: client}
	x.oauth = oauth2.Config{
		ClientID: cr.ClientID, ClientSecret: cr.ClientSecret,
		Endpoint: oauth2.Endpoint{AuthURL: base + "/oauth/authorize", TokenURL: tokenBase + "/oauth/token", AuthStyle: authStyle},
	}
	keys := oidc.NewRemoteKeySet(oidc.ClientContext(context.Background(), x.client), base+"/token_keys")
	x.verifier = oidc.NewVerifier(base+"/oauth/token", keys, &oidc.Config{ClientID: cr.ClientID, Now: c.Now,
		SupportedSigningAlgs: []string{oidc.RS256, oidc.RS384, oidc.RS512, oidc.ES256, oidc.ES384, oidc.PS256}})
	return x, nil
}

func (x *XSUAA) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx = oidc.ClientContext(ctx, x.client)
	ctx = context.WithValue(ctx, oauth2.HTTPClient, x.client)
	return context.WithTimeout(ctx, x.timeout)
}

// AuthCodeURL is /oauth/authorize with state, nonce and PKCE S256.
func (x *XSUAA) AuthCodeURL(_ context.Context, state, nonce, verifier, redirectURI string) (string, error) {
	oc := x.oauth
	oc.RedirectURL = redirectURI
	return oc.AuthCodeURL(state, oidc.Nonce(nonce), oauth2.S256ChallengeOption(verifier)), nil
}

// Exchange trades the code for tokens. The access token (a JWT signed with
// the tenant's /token_keys) is verified — issuer, audience, expiry — and
// gives the user and the scopes; an ID token, when XSUAA sends one, must
// carry the login's nonce.
func (x *XSUAA) Exchange(ctx context.Context, code, verifier, redirectURI, nonce string) (*Tokens, error) {
	ctx, cancel := x.ctx(ctx)
	defer cancel()
	oc := x.oauth
	oc.RedirectURL = redirectURI
	tok, err := oc.Exchange(ctx, code, oauth2.VerifierOption(verifier))
	if err != nil {
		return nil, classify("code exchange", err)
	}
	t, err := x.tokens(ctx, tok)
	if err != nil {
		return nil, err
	}
	if raw, _ := tok.Extra("id_token").(string); raw != "" {
		idt, err := x.verifier.Verify(ctx, raw)
		if err != nil {
			return nil, fmt.Errorf("%w: id token: %w", ErrRejected, err)
		}
		if subtle.ConstantTimeCompare([]byte(idt.Nonce), []byte(nonce)) != 1 {
			return nil, fmt.Errorf("%w: id token nonce does not match the login", ErrRejected)
		}
		t.IDToken = raw
	}
	return t, nil
}

// xsuaaClaims are the access token claims extauthz reads.
type xsuaaClaims struct {
	UserID string   `json:"user_id"`
	Scope  []string `json:"scope"`
}

func (x *XSUAA) tokens(ctx context.Context, tok *oauth2.Token) (*Tokens, error) {
	at, err := x.verifier.Verify(ctx, tok.AccessToken)
	if err != nil {
		return nil, fmt.Errorf("%w: access token: %w", ErrRejected, err)
	}
	var cl xsuaaClaims
	if err := at.Claims(&cl); err != nil {
		return nil, fmt.Errorf("%w: access token claims: %w", ErrRejected, err)
	}
	sub := at.Subject
	if cl.UserID != "" {
		sub = cl.UserID
	}
	t := &Tokens{AccessToken: tok.AccessToken, RefreshToken: tok.RefreshToken, Expiry: tok.Expiry,
		Issuer: at.Issuer, Subject: sub, Scopes: cl.Scope}
	if t.Expiry.IsZero() {
		t.Expiry = at.Expiry
	}
	return t, nil
}

// Refresh uses the refresh token; the new access token must name the same user.
func (x *XSUAA) Refresh(ctx context.Context, refreshToken, subject string) (*Tokens, error) {
	ctx, cancel := x.ctx(ctx)
	defer cancel()
	tok, err := x.oauth.TokenSource(ctx, &oauth2.Token{RefreshToken: refreshToken}).Token()
	if err != nil {
		return nil, classify("refresh", err)
	}
	t, err := x.tokens(ctx, tok)
	if err != nil {
		return nil, err
	}
	if t.Subject != subject {
		return nil, errors.Join(ErrRejected, errors.New("refreshed token names another user"))
	}
	return t, nil
}

// LogoutURL is /logout.do?redirect=…&client_id=….
func (x *XSUAA) LogoutURL(_ context.Context, _, postLogoutRedirect string) (string, error) {
	q := url.Values{"redirect": {postLogoutRedirect}, "client_id": {x.creds.ClientID}}
	return x.base + "/logout.do?" + q.Encode(), nil
}
