package idp

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
	"golang.org/x/oauth2"

	"github.com/extauthz/extauthz/internal/redistest"
	"github.com/extauthz/extauthz/pkg/binding"
)

// fakeXSUAA speaks XSUAA's endpoints for any tenant subdomain of
// xsuaa.test: the tenant comes from the Host, as on SAP BTP.
type fakeXSUAA struct {
	srv     *httptest.Server
	key     *ecdsa.PrivateKey
	mu      sync.Mutex
	codes   map[string]string // code -> tenant
	x509    atomic.Int32      // token requests that came with a client certificate
	secrets atomic.Int32      // token requests with the client secret
}

// unescape undoes the form encoding RFC 6749 puts on basic credentials.
func unescape(s string) string { u, _ := url.QueryUnescape(s); return u }

func tenantOf(host string) string {
	h, _, _ := strings.Cut(host, ":")
	t, _, _ := strings.Cut(h, ".")
	return t
}

func (f *fakeXSUAA) token(tenant string, exp time.Duration) string {
	signer, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: f.key, KeyID: "key-1"}}, nil)
	claims, _ := json.Marshal(map[string]any{
		"iss": "https://" + tenant + ".xsuaa.test/oauth/token", "aud": []string{"sb-myapp!t1", "myapp!t1"},
		"sub": "user-guid-1", "user_id": "user-guid-1", "user_name": "alice", "zid": "zone-" + tenant,
		"ext_attr": map[string]string{"zdn": tenant}, "scope": []string{"openid", "myapp!t1.Display"},
		"exp": time.Now().Add(exp).Unix(), "iat": time.Now().Unix(), "client_id": "sb-myapp!t1",
	})
	jws, _ := signer.Sign(claims)
	s, _ := jws.CompactSerialize()
	return s
}

func newFakeXSUAA(t *testing.T, pki *redistest.PKI) *fakeXSUAA {
	f := &fakeXSUAA{codes: map[string]string{}}
	f.key, _ = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	mux := http.NewServeMux()
	mux.HandleFunc("/token_keys", func(w http.ResponseWriter, r *http.Request) {
		json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &f.key.PublicKey, KeyID: "key-1", Algorithm: "ES256", Use: "sig"}}})
	})
	mux.HandleFunc("/oauth/token", func(w http.ResponseWriter, r *http.Request) {
		r.ParseForm()
		tenant := tenantOf(r.Host)
		w.Header().Set("content-type", "application/json")
		fail := func(code string) { w.WriteHeader(400); json.NewEncoder(w).Encode(map[string]string{"error": code}) }
		if strings.Contains(r.Host, ".cert.") {
			if r.TLS == nil || len(r.TLS.PeerCertificates) == 0 || r.Form.Get("client_id") != "sb-myapp!t1" {
				w.WriteHeader(401)
				return
			}
			f.x509.Add(1)
		} else if id, secret, ok := r.BasicAuth(); !ok || unescape(id) != "sb-myapp!t1" || unescape(secret) != "xsuaa-secret" {
			w.WriteHeader(401)
			return
		} else {
			f.secrets.Add(1)
		}
		switch r.Form.Get("grant_type") {
		case "authorization_code":
			f.mu.Lock()
			ct, ok := f.codes[r.Form.Get("code")]
			delete(f.codes, r.Form.Get("code"))
			f.mu.Unlock()
			if !ok || ct != tenant || r.Form.Get("code_verifier") == "" {
				fail("invalid_grant")
				return
			}
		case "refresh_token":
			if r.Form.Get("refresh_token") != "rt-"+tenant {
				fail("invalid_grant")
				return
			}
		default:
			fail("unsupported_grant_type")
			return
		}
		json.NewEncoder(w).Encode(map[string]any{"access_token": f.token(tenant, time.Hour), "token_type": "bearer",
			"expires_in": 3600, "refresh_token": "rt-" + tenant, "scope": "openid myapp!t1.Display"})
	})
	f.srv = httptest.NewUnstartedServer(mux)
	cert, err := tls.LoadX509KeyPair(pki.CertFile, pki.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pki.CA)
	f.srv.TLS = &tls.Config{Certificates: []tls.Certificate{cert}, ClientCAs: pool, ClientAuth: tls.VerifyClientCertIfGiven}
	f.srv.StartTLS()
	t.Cleanup(f.srv.Close)
	return f
}

// transport reaches the fake for every *.xsuaa.test host.
func (f *fakeXSUAA) transport(pki *redistest.PKI) *http.Transport {
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(pki.CA)
	addr := f.srv.Listener.Addr().String()
	return &http.Transport{
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, addr)
		},
		TLSClientConfig: &tls.Config{RootCAs: pool, ServerName: "localhost"},
	}
}

// authorize plays the browser at /oauth/authorize: it checks the URL and
// returns a code for the tenant.
func (f *fakeXSUAA) authorize(t *testing.T, authURL, tenant string) string {
	u, _ := url.Parse(authURL)
	if u.Host != tenant+".xsuaa.test" || u.Path != "/oauth/authorize" || u.Query().Get("code_challenge_method") != "S256" {
		t.Fatalf("authorize URL %s", authURL)
	}
	code := "code-" + tenant + "-" + u.Query().Get("state")
	f.mu.Lock()
	f.codes[code] = tenant
	f.mu.Unlock()
	return code
}

func xsuaaCreds() binding.XSUAA {
	return binding.XSUAA{ClientID: "sb-myapp!t1", ClientSecret: "xsuaa-secret", URL: "https://provider.xsuaa.test",
		UAADomain: "xsuaa.test", XSAppName: "myapp!t1", TenantMode: "shared"}
}

func TestXSUAATenantsLoginRefreshLogout(t *testing.T) {
	pki, err := redistest.NewPKI(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	f := newFakeXSUAA(t, pki)
	ctx := context.Background()
	for _, tenant := range []string{"tenant-a", "tenant-b"} {
		x, err := NewXSUAA(XSUAAConfig{Credentials: xsuaaCreds(), Tenant: tenant, Transport: f.transport(pki)})
		if err != nil {
			t.Fatal(err)
		}
		v := oauth2.GenerateVerifier()
		u, _ := x.AuthCodeURL(ctx, "state1", "nonce1", v, "https://"+tenant+".app.test/login/callback")
		tok, err := x.Exchange(ctx, f.authorize(t, u, tenant), v, "https://"+tenant+".app.test/login/callback", "nonce1")
		if err != nil {
			t.Fatalf("%s: %v", tenant, err)
		}
		if tok.Subject != "user-guid-1" || tok.Issuer != "https://"+tenant+".xsuaa.test/oauth/token" ||
			!strings.Contains(strings.Join(tok.Scopes, " "), "myapp!t1.Display") || tok.RefreshToken != "rt-"+tenant {
			t.Fatalf("%s: tokens %+v", tenant, tok)
		}
		if _, err := x.Refresh(ctx, "rt-"+tenant, "user-guid-1"); err != nil {
			t.Fatalf("%s refresh: %v", tenant, err)
		}
		if _, err := x.Refresh(ctx, "rt-other", "user-guid-1"); !errors.Is(err, ErrRejected) {
			t.Fatalf("%s: foreign refresh token: %v, want ErrRejected", tenant, err)
		}
		lo, _ := x.LogoutURL(ctx, "", "https://"+tenant+".app.test/")
		want := "https://" + tenant + ".xsuaa.test/logout.do?client_id=sb-myapp%21t1&redirect=https%3A%2F%2F" + tenant + ".app.test%2F"
		if lo != want {
			t.Fatalf("logout URL %s, want %s", lo, want)
		}
	}
	// A token minted for tenant-b does not verify as tenant-a's (issuer).
	a, _ := NewXSUAA(XSUAAConfig{Credentials: xsuaaCreds(), Tenant: "tenant-a", Transport: f.transport(pki)})
	if _, err := a.verifier.Verify(ctx, f.token("tenant-b", time.Hour)); err == nil {
		t.Fatal("tenant-a accepted a token of tenant-b")
	}
	if _, err := a.verifier.Verify(ctx, f.token("tenant-a", -time.Minute)); err == nil {
		t.Fatal("an expired token verified")
	}
}

func TestXSUAAx509(t *testing.T) {
	dir := t.TempDir()
	pki, err := redistest.NewPKI(dir)
	if err != nil {
		t.Fatal(err)
	}
	f := newFakeXSUAA(t, pki)
	certPEM, _ := os.ReadFile(pki.ClientCertFile)
	keyPEM, _ := os.ReadFile(pki.ClientKeyFile)
	c := xsuaaCreds()
	c.ClientSecret, c.CredentialType = "", "x509"
	c.Certificate, c.Key, c.CertURL = string(certPEM), string(keyPEM), "https://provider.authentication.cert.xsuaa.test"
	x, err := NewXSUAA(XSUAAConfig{Credentials: c, Tenant: "tenant-a", Transport: f.transport(pki)})
	if err != nil {
		t.Fatal(err)
	}
	if got := x.oauth.Endpoint.TokenURL; got != "https://tenant-a.authentication.cert.xsuaa.test/oauth/token" {
		t.Fatalf("token URL %s: the certurl must be rewritten for the tenant", got)
	}
	ctx := context.Background()
	v := oauth2.GenerateVerifier()
	u, _ := x.AuthCodeURL(ctx, "s", "n", v, "https://tenant-a.app.test/login/callback")
	if _, err := x.Exchange(ctx, f.authorize(t, u, "tenant-a"), v, "https://tenant-a.app.test/login/callback", "n"); err != nil {
		t.Fatal(err)
	}
	if f.x509.Load() != 1 || f.secrets.Load() != 0 {
		t.Fatalf("token requests: %d with a client certificate, %d with a secret; want 1 and 0", f.x509.Load(), f.secrets.Load())
	}
	c.Key = "not a key"
	if _, err := NewXSUAA(XSUAAConfig{Credentials: c, Tenant: "tenant-a"}); err == nil {
		t.Fatal("a broken x509 key was accepted")
	}
}
