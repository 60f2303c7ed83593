package idp

import (
	"context"
	"crypto/rand"
	"crypto/rsa"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-jose/go-jose/v4"
)

// tenantIdP is an httptest identity provider for many tenants, each with
// its issuer at /t/<tenant>, as IAS or Keycloak realms are. It knows a few
// tenants and answers 404 for the others; it counts every request per
// tenant and the fetches running at once.
type tenantIdP struct {
	srv   *httptest.Server
	key   *rsa.PrivateKey
	known map[string]bool
	delay time.Duration // of every answer

	mu        sync.Mutex
	discovery map[string]int
	jwks      map[string]int
	token     map[string]int
	failJWKS  map[string]bool
	failAll   map[string]bool
	running   atomic.Int32
	peak      atomic.Int32
}

func newTenantIdP(t *testing.T, known ...string) *tenantIdP {
	key, _ := rsa.GenerateKey(rand.Reader, 2048)
	p := &tenantIdP{key: key, known: map[string]bool{}, discovery: map[string]int{}, jwks: map[string]int{}, token: map[string]int{},
		failJWKS: map[string]bool{}, failAll: map[string]bool{}}
	for _, k := range known {
		p.known[k] = true
	}
	p.srv = httptest.NewServer(http.HandlerFunc(p.serve))
	t.Cleanup(p.srv.Close)
	return p
}

func (p *tenantIdP) issuer(tenant string) string { return p.srv.URL + "/t/" + tenant }

func (p *tenantIdP) count(m map[string]int, tenant string) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	return m[tenant]
}

func (p *tenantIdP) total(m map[string]int) int {
	p.mu.Lock()
	defer p.mu.Unlock()
	n := 0
	for _, c := range m {
		n += c
	}
	return n
}

func (p *tenantIdP) serve(w http.ResponseWriter, r *http.Request) {
	if n := p.running.Add(1); n > p.peak.Load() {
		p.peak.Store(n) // racy max, close enough: only ever read after the load
	}
	defer p.running.Add(-1)
	time.Sleep(p.delay)
	rest, ok := strings.CutPrefix(r.URL.Path, "/t/")
	tenant, what, _ := strings.Cut(rest, "/")
	if !ok {
		http.NotFound(w, r)
		return
	}
	p.mu.Lock()
	switch what {
	case ".well-known/openid-configuration":
		p.discovery[tenant]++
	case "jwks":
		p.jwks[tenant]++
	case "token":
		p.token[tenant]++
	}
	failAll, failJWKS := p.failAll[tenant], p.failJWKS[tenant]
	p.mu.Unlock()
	switch {
	case !p.known[tenant]:
		http.NotFound(w, r)
	case failAll:
		http.Error(w, "down", http.StatusServiceUnavailable)
	case what == ".well-known/openid-configuration":
		iss := p.issuer(tenant)
		json.NewEncoder(w).Encode(map[string]any{"issuer": iss, "authorization_endpoint": iss + "/auth", "token_endpoint": iss + "/token",
			"jwks_uri": iss + "/jwks", "id_token_signing_alg_values_supported": []string{"RS256"}})
	case what == "jwks" && failJWKS:
		http.Error(w, "down", http.StatusServiceUnavailable)
	case what == "jwks":
		json.NewEncoder(w).Encode(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: &p.key.PublicKey, KeyID: "k1", Algorithm: "RS256", Use: "sig"}}})
	case what == "token" && r.PostFormValue("code") == "good":
		signer, _ := jose.NewSigner(jose.SigningKey{Algorithm: jose.RS256, Key: jose.JSONWebKey{Key: p.key, KeyID: "k1"}}, nil)
		claims, _ := json.Marshal(map[string]any{"iss": p.issuer(tenant), "sub": "alice", "aud": "client",
			"exp": time.Now().Add(time.Hour).Unix(), "iat": time.Now().Unix(), "nonce": "n"})
		jws, _ := signer.Sign(claims)
		idt, _ := jws.CompactSerialize()
		w.Header().Set("content-type", "application/json")
		json.NewEncoder(w).Encode(map[string]any{"access_token": "at", "token_type": "Bearer", "expires_in": 300, "refresh_token": "rt", "id_token": idt})
	case what == "token":
		w.Header().Set("content-type", "application/json")
		w.WriteHeader(http.StatusBadRequest)
		json.NewEncoder(w).Encode(map[string]string{"error": "invalid_grant"})
	default:
		http.NotFound(w, r)
	}
}

// clock is a settable clock for the registry and its providers.
type clock struct{ ns atomic.Int64 }

func newClock() *clock                   { c := &clock{}; c.ns.Store(time.Now().UnixNano()); return c }
func (c *clock) now() time.Time          { return time.Unix(0, c.ns.Load()) }
func (c *clock) advance(d time.Duration) { c.ns.Add(int64(d)) }

func (p *tenantIdP) registry(o RegistryOptions, c *clock) *Registry {
	o.Now = c.now
	return NewRegistryWith(func(tenant string) (Client, error) {
		return New(Config{Issuer: p.issuer(tenant), ClientID: "client", ClientSecret: "secret", Timeout: 5 * time.Second, Now: c.now})
	}, o)
}

func login(ctx context.Context, r *Registry, tenant, code string) error {
	c, err := r.Provider(ctx, tenant)
	if err != nil {
		return err
	}
	_, err = c.Exchange(ctx, code, "verifier", "https://"+tenant+".app.test/login/callback", "n")
	return err
}

// TestRandomTenantsCostBoundedFetches: 300 random tenants, each asked ten
// times at once, make one discovery fetch each (failures are remembered),
// never more than MaxFetches at a time, and the registry keeps at most
// MaxUnproven of them; the proven tenant stays, and is fetched no more.
func TestRandomTenantsCostBoundedFetches(t *testing.T) {
	ctx := context.Background()
	idp := newTenantIdP(t, "acme")
	c := newClock()
	r := idp.registry(RegistryOptions{MaxUnproven: 20, MaxFetches: 4}, c)
	if err := login(ctx, r, "acme", "good"); err != nil {
		t.Fatal(err)
	}
	if r.Proven() != 1 {
		t.Fatalf("a login did not prove its tenant")
	}
	idp.delay = 5 * time.Millisecond
	var wg sync.WaitGroup
	sem := make(chan struct{}, 64)
	for i := range 300 {
		tenant := fmt.Sprintf("rnd%04d", i)
		for range 10 {
			sem <- struct{}{}
			wg.Go(func() {
				defer func() { <-sem }()
				if _, err := r.Provider(ctx, tenant); err == nil || errors.Is(err, ErrBusy) {
					t.Errorf("random tenant %s: %v, want its provider's 404", tenant, err)
				}
			})
		}
	}
	wg.Wait()
	fetches := idp.total(idp.discovery) - 1
	t.Logf("300 random tenants x 10 requests: %d discovery fetches, at most %d at once; registry holds %d", fetches, idp.peak.Load(), r.Len())
	if fetches != 300 {
		t.Errorf("%d discovery fetches for 300 random tenants asked 10 times each, want 300", fetches)
	}
	if p := idp.peak.Load(); p > 4 {
		t.Errorf("%d fetches at once, want at most MaxFetches (4)", p)
	}
	if n := r.Len(); n > 21 {
		t.Errorf("registry holds %d tenants, want at most 20 unproven + 1 proven", n)
	}
	if _, err := r.Provider(ctx, "acme"); err != nil || idp.count(idp.discovery, "acme") != 1 || r.Proven() != 1 {
		t.Errorf("the proven tenant was pushed out: %v, %d discoveries", err, idp.count(idp.discovery, "acme"))
	}
	// A random tenant asked again within RetryAfter is answered from memory;
	// after it, asked again (once).
	if _, err := r.Provider(ctx, "rnd0299"); err == nil || idp.count(idp.discovery, "rnd0299") != 1 {
		t.Errorf("a remembered failure: %v, %d fetches", err, idp.count(idp.discovery, "rnd0299"))
	}
	c.advance(DefaultRetryAfter + time.Second)
	r.Provider(ctx, "rnd0299")
	r.Provider(ctx, "rnd0299")
	if n := idp.count(idp.discovery, "rnd0299"); n != 2 {
		t.Errorf("after RetryAfter: %d fetches, want 2", n)
	}
}

// TestUnprovenNeverPushOutProven: many proven tenants and a flood of
// unknown ones; the proven stay.
func TestUnprovenNeverPushOutProven(t *testing.T) {
	ctx := context.Background()
	known := []string{"a", "b", "c", "d", "e"}
	idp := newTenantIdP(t, known...)
	r := idp.registry(RegistryOptions{MaxTenants: 5, MaxUnproven: 3}, newClock())
	for _, k := range known {
		if err := login(ctx, r, k, "good"); err != nil {
			t.Fatal(err)
		}
	}
	for i := range 1000 {
		r.Provider(ctx, fmt.Sprint("x", i))
	}
	if r.Proven() != 5 || r.Len() != 8 {
		t.Fatalf("proven %d, held %d; want 5 and 8", r.Proven(), r.Len())
	}
	for _, k := range known {
		if _, err := r.Provider(ctx, k); err != nil || idp.count(idp.discovery, k) != 1 {
			t.Fatalf("%s refetched (%d) or failed: %v", k, idp.count(idp.discovery, k), err)
		}
	}
	// A failed code exchange proves nothing.
	if err := login(ctx, r, "x999", "bad"); err == nil {
		t.Fatal("an unknown tenant's exchange succeeded")
	}
	if r.Proven() != 5 {
		t.Fatal("a failure proved a tenant")
	}
}

// TestDiscoveryOncePerTenantThroughTheRegistry: concurrent first requests
// for one tenant make one build and one discovery.
func TestDiscoveryOncePerTenantThroughTheRegistry(t *testing.T) {
	idp := newTenantIdP(t, "acme")
	idp.delay = 50 * time.Millisecond
	var builds atomic.Int32
	c := newClock()
	r := NewRegistryWith(func(tenant string) (Client, error) {
		builds.Add(1)
		return New(Config{Issuer: idp.issuer(tenant), ClientID: "client", Now: c.now})
	}, RegistryOptions{Now: c.now})
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			if _, err := r.Provider(context.Background(), "acme"); err != nil {
				t.Error(err)
			}
		})
	}
	wg.Wait()
	if b, d := builds.Load(), idp.count(idp.discovery, "acme"); b != 1 || d != 1 {
		t.Fatalf("50 concurrent first requests: %d builds, %d discovery fetches; want 1 and 1", b, d)
	}
}

// TestProviderDownIsAskedOncePerRetryAfter: a proven tenant's provider
// down at rebuild keeps the working client; a new tenant's failure is
// remembered; a failing JWKS is fetched once per RetryAfter.
func TestProviderDownIsAskedOncePerRetryAfter(t *testing.T) {
	ctx := context.Background()
	idp := newTenantIdP(t, "acme", "globex")
	c := newClock()
	r := idp.registry(RegistryOptions{TTL: time.Minute}, c)
	if err := login(ctx, r, "acme", "good"); err != nil {
		t.Fatal(err)
	}
	idp.mu.Lock()
	idp.failAll["acme"], idp.failAll["globex"] = true, true
	idp.mu.Unlock()
	c.advance(2 * time.Minute) // acme's client is due for a rebuild
	for range 20 {
		if _, err := r.Provider(ctx, "acme"); err != nil {
			t.Fatalf("a proven tenant whose provider is down at rebuild: %v", err)
		}
		if _, err := r.Provider(ctx, "globex"); err == nil {
			t.Fatal("a tenant whose provider is down")
		}
	}
	if a, g := idp.count(idp.discovery, "acme"), idp.count(idp.discovery, "globex"); a != 2 || g != 1 {
		t.Fatalf("20 requests with the provider down: %d discovery fetches for acme (1 before), %d for globex; want 2 and 1", a, g)
	}

	idp.mu.Lock()
	idp.failAll["globex"], idp.failJWKS["globex"] = false, true
	idp.mu.Unlock()
	c.advance(DefaultRetryAfter + time.Second)
	for range 5 {
		if err := login(ctx, r, "globex", "good"); err == nil {
			t.Fatal("a login without the provider's keys")
		}
	}
	if n := idp.count(idp.jwks, "globex"); n != 1 {
		t.Fatalf("5 logins with the key set down: %d JWKS fetches, want 1", n)
	}
	c.advance(DefaultRetryAfter + time.Second)
	idp.mu.Lock()
	idp.failJWKS["globex"] = false
	idp.mu.Unlock()
	if err := login(ctx, r, "globex", "good"); err != nil {
		t.Fatalf("after RetryAfter, the key set back: %v", err)
	}
}

// TestFetchSlotsBoundUnprovenExchanges: code exchanges for unproven
// tenants (anyone can start a login and come back with a made-up code)
// share the fetch slots; a request that cannot get one in time gets ErrBusy.
func TestFetchSlotsBoundUnprovenExchanges(t *testing.T) {
	ctx := context.Background()
	idp := newTenantIdP(t, "acme")
	r := idp.registry(RegistryOptions{MaxFetches: 2, FetchWait: 200 * time.Millisecond}, newClock())
	if _, err := r.Provider(ctx, "acme"); err != nil {
		t.Fatal(err)
	}
	idp.delay = 30 * time.Millisecond
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			if err := login(ctx, r, "acme", "bad"); err == nil {
				t.Error("a bad code accepted")
			}
		})
	}
	wg.Wait()
	if p := idp.peak.Load(); p > 2 {
		t.Fatalf("%d exchanges for an unproven tenant at once, want at most 2", p)
	}
	idp.delay = time.Second
	go r.Provider(ctx, "slow1")
	go r.Provider(ctx, "slow2")
	time.Sleep(100 * time.Millisecond)
	if _, err := r.Provider(ctx, "other"); !errors.Is(err, ErrBusy) {
		t.Fatalf("with every slot taken: %v, want ErrBusy", err)
	}
}

// TestProviderRemembersDiscoveryFailure: a single provider (no registry)
// asks a failing issuer once per RetryAfter.
func TestProviderRemembersDiscoveryFailure(t *testing.T) {
	idp := newTenantIdP(t)
	c := newClock()
	p, err := New(Config{Issuer: idp.issuer("gone"), ClientID: "client", Now: c.now})
	if err != nil {
		t.Fatal(err)
	}
	for range 10 {
		if _, err := p.AuthCodeURL(context.Background(), "s", "n", "v", "https://app/cb"); err == nil {
			t.Fatal("discovery of an unknown issuer succeeded")
		}
	}
	c.advance(DefaultRetryAfter)
	p.AuthCodeURL(context.Background(), "s", "n", "v", "https://app/cb")
	if n := idp.count(idp.discovery, "gone"); n != 2 {
		t.Fatalf("%d discovery fetches, want 1 per RetryAfter (2)", n)
	}
}
