package idp

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"golang.org/x/oauth2"
)

// testProvider is an httptest OpenID provider: discovery, JWKS, token
// endpoint (code with PKCE, refresh), end_session_endpoint.
type testProvider struct {
	srv         *httptest.Server
	mu          sync.Mutex
	key         *rsa.PrivateKey
	kid         string
	discovery   atomic.Int32
	jwks        atomic.Int32
	tokenCalls  atomic.Int32
	authMethods []string             // token_endpoint_auth_methods_supported, if any
	postOnly    bool                 // the client is registered for client_secret_post
	codes       map[string]codeGrant // code -> grant
	nonceOver   string               // put this nonce into ID tokens instead
	refreshErr  int                  // HTTP status to answer refresh with
}

type codeGrant struct{ challenge, nonce, redirect string }

func newTestProvider(t *testing.T) *testProvider {
	p := &testProvider{codes: map[string]codeGrant{}}
	p.rotate()
	mux := http.NewServeMux()
	mux.HandleFunc("/.well-known/openid-configuration", func(w http.ResponseWriter, r *http.Request) {
		p.discovery.Add(1)
		json.NewEncoder(w).Encode(map[string]any{
			"issuer": p.srv.URL, "authorization_endpoint": p.srv.URL + "/auth", "token_endpoint": p.srv.URL + "/token",
			"jwks_uri": p.srv.URL + "/jwks", "end_session_endpoint": p.srv.URL + "/logout",
			"id_token_signing_alg_values_supported": []string{"RS256"},
			"token_endpoint_auth_methods_supported": p.authMethods,
		})
	})
	mux.HandleFunc("/jwks", func(w http.ResponseWriter, r *http.Request) {
		p.jwks.Add(1)
		p.mu.Lock()
		defer p.mu.Unlock()
		json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &p.key.PublicKey, KeyID: p.kid, Algorithm: "RS256", Use: "sig"}}})
	})
	mux.HandleFunc("/token", p.token)
	p.srv = httptest.NewServer(mux)
	t.Cleanup(p.srv.Close)
	return p
}

func (p *testProvider) rotate() {
	k, _ := rsa.GenerateKey(rand.Reader, 2048)
	p.mu.Lock()
	p.key, p.kid = k, base64.RawURLEncoding.EncodeToString(k.N.Bytes()[:8])
	p.mu.Unlock()
}

func (p *testProvider) idToken(sub, nonce string) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	signer, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: p.key, KeyID: p.kid}}, nil)
	if p.nonceOver != "" {
		nonce = p.nonceOver
	}
	claims, _ := json.Marshal(map[string]any{
		"iss": p.srv.URL, "sub": sub, "aud": "client", "exp": time.Now().Add(time.Hour).Unix(),
		"iat": time.Now().Unix(), "nonce": nonce, "sid": "idp-session-1", "groups": []string{"Admins", "Buyers"},
	})
	jws, _ := signer.Sign(claims)
	s, _ := jws.CompactSerialize()
	return s
}

func (p *testProvider) token(w http.ResponseWriter, r *http.Request) {
	p.tokenCalls.Add(1)
	r.ParseForm()
	fail := func(status int, code string) {
		w.Header().Set("content-type", "application/json")
		w.WriteHeader(status)
		json.NewEncoder(w).Encode(map[string]string{"error": code})
	}
	id, secret, _ := r.BasicAuth()
	if p.postOnly || slices.Equal(p.authMethods, []string{"client_secret_post"}) {
		id, secret = r.PostForm.Get("client_id"), r.PostForm.Get("client_secret")
	}
	if id != "client" || secret != "secret" {
		fail(401, "invalid_client")
		return
	}
	w.Header().Set("content-type", "application/json")
	switch r.Form.Get("grant_type") {
	case "authorization_code":
		p.mu.Lock()
		g, ok := p.codes[r.Form.Get("code")]
		delete(p.codes, r.Form.Get("code"))
		p.mu.Unlock()
		sum := sha256.Sum256([]byte(r.Form.Get("code_verifier")))
		if !ok || base64.RawURLEncoding.EncodeToString(sum[:]) != g.challenge || r.Form.Get("redirect_uri") != g.redirect {
			fail(400, "invalid_grant")
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"access_token": "at-1", "token_type": "Bearer", "expires_in": 300,
			"refresh_token": "rt-1", "id_token": p.idToken("alice", g.nonce), "scope": "openid email"})
	case "refresh_token":
		if p.refreshErr != 0 {
			fail(p.refreshErr, "invalid_grant")
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"access_token": "at-2", "token_type": "Bearer", "expires_in": 300,
			"refresh_token": "rt-2", "id_token": p.idToken("alice", "")})
	default:
		fail(400, "unsupported_grant_type")
	}
}

// authorize plays the browser at the authorize endpoint: it records the
// grant and returns a code.
func (p *testProvider) authorize(t *testing.T, authURL string) string {
	u, err := url.Parse(authURL)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	if q.Get("code_challenge_method") != "S256" || q.Get("nonce") == "" || q.Get("state") == "" || q.Get("response_type") != "code" {
		t.Fatalf("authorize URL lacks PKCE S256, nonce or state: %s", authURL)
	}
	code := "code-" + q.Get("state")
	p.mu.Lock()
	p.codes[code] = codeGrant{challenge: q.Get("code_challenge"), nonce: q.Get("nonce"), redirect: q.Get("redirect_uri")}
	p.mu.Unlock()
	return code
}

func newProvider(t *testing.T, p *testProvider) *Provider {
	prov, err := New(Config{Issuer: p.srv.URL, ClientID: "client", ClientSecret: "secret", Scopes: []string{"openid", "email"}})
	if err != nil {
		t.Fatal(err)
	}
	return prov
}

func TestLoginExchangeRefreshLogout(t *testing.T) {
	ctx := context.Background()
	tp := newTestProvider(t)
	prov := newProvider(t, tp)
	verifier := oauth2.GenerateVerifier()
	authURL, err := prov.AuthCodeURL(ctx, "state-1", "nonce-1", verifier, "https://app/login/callback")
	if err != nil {
		t.Fatal(err)
	}
	code := tp.authorize(t, authURL)
	tok, err := prov.Exchange(ctx, code, verifier, "https://app/login/callback", "nonce-1")
	if err != nil {
		t.Fatal(err)
	}
	if tok.AccessToken != "at-1" || tok.RefreshToken != "rt-1" || tok.Subject != "alice" || tok.SID != "idp-session-1" ||
		tok.Issuer != tp.srv.URL || strings.Join(tok.Scopes, " ") != "openid email" || time.Until(tok.Expiry) < 4*time.Minute {
		t.Fatalf("tokens %+v", tok)
	}
	// A used code is rejected.
	if _, err := prov.Exchange(ctx, code, verifier, "https://app/login/callback", "nonce-1"); !errors.Is(err, ErrRejected) {
		t.Fatalf("reused code: %v, want ErrRejected", err)
	}
	ref, err := prov.Refresh(ctx, "rt-1", "alice")
	if err != nil || ref.AccessToken != "at-2" || ref.RefreshToken != "rt-2" {
		t.Fatalf("refresh: %+v %v", ref, err)
	}
	if _, err := prov.Refresh(ctx, "rt-1", "mallory"); !errors.Is(err, ErrRejected) {
		t.Fatalf("refresh for another subject: %v, want ErrRejected", err)
	}
	tp.refreshErr = 400
	if _, err := prov.Refresh(ctx, "rt-1", "alice"); !errors.Is(err, ErrRejected) {
		t.Fatalf("revoked refresh token: %v, want ErrRejected", err)
	}
	tp.refreshErr = 503
	if _, err := prov.Refresh(ctx, "rt-1", "alice"); err == nil || errors.Is(err, ErrRejected) {
		t.Fatalf("provider error 503: %v, want a transient error", err)
	}
	lu, err := prov.LogoutURL(ctx, "the-id-token", "https://app/")
	if err != nil {
		t.Fatal(err)
	}
	u, _ := url.Parse(lu)
	if u.Path != "/logout" || u.Query().Get("id_token_hint") != "the-id-token" || u.Query().Get("post_logout_redirect_uri") != "https://app/" {
		t.Fatalf("logout URL %s", lu)
	}
	if n := tp.discovery.Load(); n != 1 {
		t.Fatalf("discovery fetched %d times, want once", n)
	}
}

func TestScopeClaim(t *testing.T) {
	ctx := context.Background()
	tp := newTestProvider(t)
	prov, err := New(Config{Issuer: tp.srv.URL, ClientID: "client", ClientSecret: "secret", ScopeClaim: "groups"})
	if err != nil {
		t.Fatal(err)
	}
	v := oauth2.GenerateVerifier()
	u, _ := prov.AuthCodeURL(ctx, "s", "n", v, "https://app/cb")
	tok, err := prov.Exchange(ctx, tp.authorize(t, u), v, "https://app/cb", "n")
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(tok.Scopes, " "); got != "openid email Admins Buyers" {
		t.Fatalf("scopes %q: the groups claim must join the token's scopes", got)
	}
}

func TestExchangeRejectsWrongNonceAndVerifier(t *testing.T) {
	ctx := context.Background()
	tp := newTestProvider(t)
	prov := newProvider(t, tp)
	verifier := oauth2.GenerateVerifier()
	authURL, _ := prov.AuthCodeURL(ctx, "s", "nonce-1", verifier, "https://app/cb")
	code := tp.authorize(t, authURL)
	if _, err := prov.Exchange(ctx, code, oauth2.GenerateVerifier(), "https://app/cb", "nonce-1"); !errors.Is(err, ErrRejected) {
		t.Fatalf("wrong PKCE verifier: %v, want ErrRejected", err)
	}
	authURL, _ = prov.AuthCodeURL(ctx, "s2", "nonce-2", verifier, "https://app/cb")
	code = tp.authorize(t, authURL)
	tp.nonceOver = "someone-elses-nonce"
	if _, err := prov.Exchange(ctx, code, verifier, "https://app/cb", "nonce-2"); !errors.Is(err, ErrRejected) || !strings.Contains(err.Error(), "nonce") {
		t.Fatalf("wrong nonce: %v, want ErrRejected naming the nonce", err)
	}
}

// A rejected code costs one token call: the client authenticates the way
// the provider says, never by x/oauth2's trial and error.
func TestRejectedCodeIsOneTokenCall(t *testing.T) {
	ctx := context.Background()
	for _, methods := range [][]string{nil, {"client_secret_basic", "client_secret_post"}, {"client_secret_post"}} {
		tp := newTestProvider(t)
		tp.authMethods = methods
		prov := newProvider(t, tp)
		for i := range 5 {
			if _, err := prov.Exchange(ctx, "forged-code", oauth2.GenerateVerifier(), "https://app/cb", "n"); !errors.Is(err, ErrRejected) {
				t.Fatalf("%v: forged code %d: %v, want ErrRejected", methods, i, err)
			}
		}
		if n := tp.tokenCalls.Load(); n != 5 {
			t.Errorf("%v: 5 forged codes made %d token calls, want 5", methods, n)
		}
		verifier := oauth2.GenerateVerifier()
		authURL, _ := prov.AuthCodeURL(ctx, "s", "n1", verifier, "https://app/cb")
		if _, err := prov.Exchange(ctx, tp.authorize(t, authURL), verifier, "https://app/cb", "n1"); err != nil {
			t.Errorf("%v: a good code: %v", methods, err)
		}
	}
	// Configured: client_secret_post although discovery offers basic too.
	tp := newTestProvider(t)
	prov, err := New(Config{Issuer: tp.srv.URL, ClientID: "client", ClientSecret: "secret", Scopes: []string{"openid"}, ClientAuth: "client_secret_post"})
	if err != nil {
		t.Fatal(err)
	}
	tp.authMethods = []string{"client_secret_basic", "client_secret_post"}
	tp.postOnly = true
	verifier := oauth2.GenerateVerifier()
	authURL, _ := prov.AuthCodeURL(ctx, "s", "n1", verifier, "https://app/cb")
	if _, err := prov.Exchange(ctx, tp.authorize(t, authURL), verifier, "https://app/cb", "n1"); err != nil || tp.tokenCalls.Load() != 1 {
		t.Errorf("configured client_secret_post: %v after %d token calls", err, tp.tokenCalls.Load())
	}
}

func TestDiscoveryOnceUnderConcurrencyAndRetriedAfterFailure(t *testing.T) {
	tp := newTestProvider(t)
	down := httptest.NewServer(http.NotFoundHandler())
	down.Close()
	bad, _ := New(Config{Issuer: down.URL, ClientID: "client", Timeout: time.Second})
	if _, err := bad.AuthCodeURL(context.Background(), "s", "n", "v", "https://app/cb"); err == nil {
		t.Fatal("discovery of a dead issuer succeeded")
	}
	prov := newProvider(t, tp)
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if _, err := prov.AuthCodeURL(context.Background(), "s", "n", "v", "https://app/cb"); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if n := tp.discovery.Load(); n != 1 {
		t.Fatalf("20 concurrent first requests fetched discovery %d times, want 1", n)
	}
}

func TestUnknownSigningKeyRefetchesJWKS(t *testing.T) {
	ctx := context.Background()
	tp := newTestProvider(t)
	prov := newProvider(t, tp)
	login := func() error {
		v := oauth2.GenerateVerifier()
		u, _ := prov.AuthCodeURL(ctx, "s", "n", v, "https://app/cb")
		_, err := prov.Exchange(ctx, tp.authorize(t, u), v, "https://app/cb", "n")
		return err
	}
	if err := login(); err != nil {
		t.Fatal(err)
	}
	before := tp.jwks.Load()
	tp.rotate() // the provider signs with a new key
	if err := login(); err != nil {
		t.Fatalf("after key rotation: %v", err)
	}
	if n := tp.jwks.Load() - before; n != 1 {
		t.Fatalf("a token signed by an unknown key caused %d JWKS fetches, want 1", n)
	}
}
