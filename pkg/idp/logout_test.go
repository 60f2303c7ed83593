package idp

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// LogoutToken signs claims as the provider (or with key, when not nil).
func (p *testProvider) sign(t *testing.T, claims map[string]any, key *rsa.PrivateKey) string {
	t.Helper()
	p.mu.Lock()
	k, kid := p.key, p.kid
	p.mu.Unlock()
	if key != nil {
		k = key
	}
	signer, err := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: k, KeyID: kid}},
		(&jose.SignerOptions{}).WithType("logout+jwt"))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(claims)
	jws, err := signer.Sign(b)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := jws.CompactSerialize()
	return s
}

func (p *testProvider) logoutClaims() map[string]any {
	return map[string]any{
		"iss": p.srv.URL, "aud": []string{"client"}, "iat": time.Now().Unix(), "jti": "jti-1",
		"events": map[string]any{BackChannelLogoutEvent: map[string]any{}}, "sid": "idp-session-1",
	}
}

func TestVerifyLogoutToken(t *testing.T) {
	tp := newTestProvider(t)
	prov, err := New(Config{Issuer: tp.srv.URL, ClientID: "client", ClientSecret: "secret"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	// Hydra's shape: sid, no sub, no exp.
	lo, err := prov.VerifyLogoutToken(ctx, tp.sign(t, tp.logoutClaims(), nil))
	if err != nil {
		t.Fatal(err)
	}
	if lo.SID != "idp-session-1" || lo.Subject != "" || lo.JTI != "jti-1" || lo.Issuer != tp.srv.URL || !lo.Until.After(time.Now().Add(LogoutTokenMaxAge)) {
		t.Fatalf("logout = %+v", lo)
	}
	// The final specification's shape: sub and exp too.
	c := tp.logoutClaims()
	c["sub"], c["exp"] = "alice", time.Now().Add(time.Hour).Unix()
	lo, err = prov.VerifyLogoutToken(ctx, tp.sign(t, c, nil))
	if err != nil || lo.Subject != "alice" || lo.Until.Before(time.Now().Add(time.Hour)) {
		t.Fatalf("logout = %+v, %v", lo, err)
	}

	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	for name, mutate := range map[string]func(c map[string]any) *rsa.PrivateKey{
		"bad signature":  func(c map[string]any) *rsa.PrivateKey { return other },
		"wrong audience": func(c map[string]any) *rsa.PrivateKey { c["aud"] = []string{"another-client"}; return nil },
		"wrong issuer":   func(c map[string]any) *rsa.PrivateKey { c["iss"] = "https://other.example"; return nil },
		"expired":        func(c map[string]any) *rsa.PrivateKey { c["exp"] = time.Now().Add(-2 * time.Minute).Unix(); return nil },
		"old iat": func(c map[string]any) *rsa.PrivateKey {
			c["iat"] = time.Now().Add(-10 * time.Minute).Unix()
			return nil
		},
		"future iat": func(c map[string]any) *rsa.PrivateKey { c["iat"] = time.Now().Add(10 * time.Minute).Unix(); return nil },
		"no iat":     func(c map[string]any) *rsa.PrivateKey { delete(c, "iat"); return nil },
		"no event":   func(c map[string]any) *rsa.PrivateKey { delete(c, "events"); return nil },
		"other event": func(c map[string]any) *rsa.PrivateKey {
			c["events"] = map[string]any{"urn:other": map[string]any{}}
			return nil
		},
		"event not object": func(c map[string]any) *rsa.PrivateKey {
			c["events"] = map[string]any{BackChannelLogoutEvent: "x"}
			return nil
		},
		"nonce (ID token)":    func(c map[string]any) *rsa.PrivateKey { c["nonce"] = "n"; return nil },
		"neither sid nor sub": func(c map[string]any) *rsa.PrivateKey { delete(c, "sid"); return nil },
		"no jti":              func(c map[string]any) *rsa.PrivateKey { delete(c, "jti"); return nil },
	} {
		c := tp.logoutClaims()
		key := mutate(c)
		_, err := prov.VerifyLogoutToken(ctx, tp.sign(t, c, key))
		if !errors.Is(err, ErrRejected) {
			t.Errorf("%s: err = %v, want ErrRejected", name, err)
		}
	}
	for _, raw := range []string{"", "not-a-jwt", strings.Repeat("a.", 2) + "b"} {
		if _, err := prov.VerifyLogoutToken(ctx, raw); !errors.Is(err, ErrRejected) {
			t.Errorf("%q: err = %v, want ErrRejected", raw, err)
		}
	}
	// An ID token is not a logout token.
	if _, err := prov.VerifyLogoutToken(ctx, tp.idToken("alice", "n")); !errors.Is(err, ErrRejected) {
		t.Errorf("an ID token: err = %v, want ErrRejected", err)
	}
}

func TestXSUAAHasNoBackChannelLogout(t *testing.T) {
	var x XSUAA
	if _, err := x.VerifyLogoutToken(context.Background(), "x"); !errors.Is(err, ErrUnsupported) {
		t.Fatal(err)
	}
}

// Anyone can post logout tokens signed by a key of their own: go-oidc
// fetches the key set again for each, and the transport keeps those fetches
// to a burst, then one every few seconds.
func TestForgedLogoutTokensDoNotFetchKeysEachTime(t *testing.T) {
	tp := newTestProvider(t)
	prov, err := New(Config{Issuer: tp.srv.URL, ClientID: "client", ClientSecret: "secret"})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := prov.VerifyLogoutToken(ctx, tp.sign(t, tp.logoutClaims(), nil)); err != nil {
		t.Fatal(err) // discovery and the key set, once
	}
	before := tp.jwks.Load()
	attacker, _ := rsa.GenerateKey(rand.Reader, 2048)
	for range 300 {
		if _, err := prov.VerifyLogoutToken(ctx, tp.sign(t, tp.logoutClaims(), attacker)); !errors.Is(err, ErrRejected) {
			t.Fatalf("a forged token: %v", err)
		}
	}
	if n := tp.jwks.Load() - before; n > refetchBurst+1 {
		t.Fatalf("300 forged tokens made %d key set fetches, want at most %d", n, refetchBurst+1)
	}
	// A genuine token still verifies meanwhile.
	c := tp.logoutClaims()
	c["jti"] = "jti-2"
	if _, err := prov.VerifyLogoutToken(ctx, tp.sign(t, c, nil)); err != nil {
		t.Fatal(err)
	}
}
