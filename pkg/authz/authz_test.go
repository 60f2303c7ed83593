package authz_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/extauthz/extauthz/pkg/authz"
	"github.com/extauthz/extauthz/pkg/idp"
	"github.com/extauthz/extauthz/pkg/policy"
	"github.com/extauthz/extauthz/pkg/session"
	"github.com/extauthz/extauthz/pkg/session/sessiontest"
	"github.com/extauthz/extauthz/pkg/tenant"
	"github.com/extauthz/extauthz/proto/sessionpb"
)

// fakeIDP is an identity provider for the engine's unit tests (the real
// one is tested in pkg/idp and end to end against Hydra).
type fakeIDP struct {
	mu          sync.Mutex
	refreshes   atomic.Int32
	exchanges   atomic.Int32
	exchangeErr error
	refreshErr  error
	authErr     error
	refreshed   *idp.Tokens
	delay       time.Duration
	lastCode    string
	lastNonce   string
}

func (f *fakeIDP) AuthCodeURL(_ context.Context, state, nonce, verifier, redirectURI string) (string, error) {
	if f.authErr != nil {
		return "", f.authErr
	}
	f.mu.Lock()
	f.lastNonce = nonce
	f.mu.Unlock()
	q := url.Values{"state": {state}, "nonce": {nonce}, "redirect_uri": {redirectURI}, "code_challenge_method": {"S256"}, "verifier": {verifier}}
	return "https://idp.test/authorize?" + q.Encode(), nil
}

func (f *fakeIDP) Exchange(_ context.Context, code, verifier, redirectURI, nonce string) (*idp.Tokens, error) {
	f.exchanges.Add(1)
	if f.exchangeErr != nil {
		return nil, f.exchangeErr
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if nonce != f.lastNonce {
		return nil, fmt.Errorf("%w: nonce", idp.ErrRejected)
	}
	f.lastCode = code
	return &idp.Tokens{AccessToken: "at-" + code, RefreshToken: "rt-1", IDToken: "idt-1", Subject: "alice",
		Issuer: "https://idp.test", Expiry: time.Now().Add(time.Hour)}, nil
}

func (f *fakeIDP) Refresh(_ context.Context, refreshToken, subject string) (*idp.Tokens, error) {
	f.refreshes.Add(1)
	time.Sleep(f.delay)
	if f.refreshErr != nil {
		return nil, f.refreshErr
	}
	return f.refreshed, nil
}

func (f *fakeIDP) LogoutURL(_ context.Context, idTokenHint, post string) (string, error) {
	return "https://idp.test/logout?" + url.Values{"id_token_hint": {idTokenHint}, "post_logout_redirect_uri": {post}}.Encode(), nil
}

// countingStore counts store calls and can fail them.
type countingStore struct {
	session.Store
	calls  atomic.Int32
	gets   atomic.Int32
	writes atomic.Int32
	fail   atomic.Bool
}

func (c *countingStore) Set(ctx context.Context, k string, v []byte, ttl time.Duration) error {
	c.calls.Add(1)
	c.writes.Add(1)
	return c.Store.Set(ctx, k, v, ttl)
}

func (c *countingStore) SetNX(ctx context.Context, k string, v []byte, ttl time.Duration) (bool, error) {
	c.calls.Add(1)
	c.writes.Add(1)
	return c.Store.SetNX(ctx, k, v, ttl)
}

var errDown = errors.New("connection refused")

func (c *countingStore) Get(ctx context.Context, k string, idle time.Duration) ([]byte, error) {
	c.calls.Add(1)
	c.gets.Add(1)
	if c.fail.Load() {
		return nil, errDown
	}
	return c.Store.Get(ctx, k, idle)
}

func (c *countingStore) Delete(ctx context.Context, k string) error {
	c.calls.Add(1)
	if c.fail.Load() {
		return errDown
	}
	return c.Store.Delete(ctx, k)
}

// fixtureStaleness is the cache's staleness bound in the fixture.
const fixtureStaleness = 200 * time.Millisecond

type fixture struct {
	peer     *sessiontest.HubPeer // with the cache
	store    *countingStore
	sessions *session.Manager
	idp      *fakeIDP
	engine   *authz.Engine
}

func newFixture(t testing.TB, opt authz.Options) *fixture {
	t.Helper()
	keys, err := session.NewKeys([]byte(strings.Repeat("k", 64)))
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{store: &countingStore{Store: session.NewMemoryStore(nil)}, idp: &fakeIDP{}}
	var cache *session.CacheOptions
	if fixtureCache {
		f.peer = sessiontest.NewHub().Peer()
		cache = &session.CacheOptions{Peers: f.peer, Staleness: fixtureStaleness}
	}
	f.sessions = session.NewManager(f.store, keys, session.Options{Cache: cache})
	t.Cleanup(f.sessions.Start(context.Background()))
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	f.engine = authz.New(f.sessions, authz.StaticProvider{P: f.idp}, testHosts(t), opt, log)
	return f
}

// testHosts serves app.example.com and loopback names.
func testHosts(t testing.TB) *tenant.Resolver {
	r, err := tenant.New(tenant.Options{AllowedHosts: []string{"app.example.com", "localhost"}})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func (f *fixture) newSession(t testing.TB, rec *sessionpb.Session) string {
	t.Helper()
	_, cookie, err := f.sessions.Create(context.Background(), rec)
	if err != nil {
		t.Fatal(err)
	}
	return cookie
}

func get(path, cookie string, extra ...string) *authz.Request {
	h := map[string]string{}
	if cookie != "" {
		h["cookie"] = cookie
	}
	for i := 0; i < len(extra); i += 2 {
		h[extra[i]] = extra[i+1]
	}
	return &authz.Request{Method: "GET", Scheme: "https", Host: "app.example.com", Path: path, Headers: h}
}

func header(d *authz.Decision, name string) string {
	for _, h := range d.Response {
		if h.Name == name {
			return h.Value
		}
	}
	return ""
}

func headers(d *authz.Decision, name string) []string {
	var out []string
	for _, h := range d.Response {
		if h.Name == name {
			out = append(out, h.Value)
		}
	}
	return out
}

func TestAllowWithSession(t *testing.T) {
	f := newFixture(t, authz.Options{})
	c := f.newSession(t, &sessionpb.Session{AccessToken: "the-access-token", AccessTokenExpiry: time.Now().Add(time.Hour).Unix()})

	d := f.engine.Check(context.Background(), get("/app", "theme=dark; JSESSIONID="+c+"; lang=de"))
	if !d.Allow || d.Reason != "session" {
		t.Fatalf("decision %+v, want allow", d)
	}
	want := []authz.Header{{"authorization", "Bearer the-access-token"}, {"cookie", "theme=dark; lang=de"}}
	if fmt.Sprint(d.Upstream) != fmt.Sprint(want) || d.Remove != nil {
		t.Fatalf("upstream %v remove %v, want %v", d.Upstream, d.Remove, want)
	}

	d = f.engine.Check(context.Background(), get("/app", "JSESSIONID="+c))
	if !d.Allow || fmt.Sprint(d.Remove) != "[cookie]" || len(d.Upstream) != 1 {
		t.Fatalf("only the session cookie: upstream %v remove %v, want the cookie header removed", d.Upstream, d.Remove)
	}
}

func TestNoSession(t *testing.T) {
	f := newFixture(t, authz.Options{})
	tests := []struct {
		name   string
		req    *authz.Request
		status int
	}{
		{"browser navigation", get("/app?x=1", ""), http.StatusFound},
		{"HEAD navigation", &authz.Request{Method: "HEAD", Host: "app.example.com", Path: "/", Headers: map[string]string{}}, http.StatusFound},
		{"XMLHttpRequest", get("/api", "", "x-requested-with", "XMLHttpRequest"), http.StatusUnauthorized},
		{"fetch()", get("/api", "", "sec-fetch-mode", "cors"), http.StatusUnauthorized},
		{"POST", &authz.Request{Method: "POST", Host: "app.example.com", Path: "/api", Headers: map[string]string{}}, http.StatusUnauthorized},
		{"garbage cookie", get("/app", "JSESSIONID=garbage", "x-requested-with", "XMLHttpRequest"), http.StatusUnauthorized},
		{"hostile host", &authz.Request{Method: "GET", Host: "evil.com/x@", Path: "/", Headers: map[string]string{}}, http.StatusNotFound},
		{"foreign host", &authz.Request{Method: "GET", Host: "attacker.example", Path: "/", Headers: map[string]string{}}, http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := f.engine.Check(context.Background(), tt.req)
			if d.Allow || d.Status != tt.status {
				t.Fatalf("decision %+v, want deny %d", d, tt.status)
			}
		})
	}
}

func TestForgedCookieNeverReachesTheStore(t *testing.T) {
	f := newFixture(t, authz.Options{})
	good := f.newSession(t, &sessionpb.Session{AccessToken: "x"})
	forged := []byte(good)
	forged[5] ^= 2
	before := f.store.calls.Load()
	for _, c := range []string{string(forged), "x", strings.Repeat("A", 10000), good + "A"} {
		d := f.engine.Check(context.Background(), get("/", "JSESSIONID="+c, "x-requested-with", "XMLHttpRequest"))
		if d.Status != http.StatusUnauthorized {
			t.Fatalf("forged cookie: status %d", d.Status)
		}
	}
	if n := f.store.calls.Load() - before; n != 0 {
		t.Fatalf("forged cookies caused %d store calls, want 0", n)
	}
}

func TestStoreDownFailsClosedAndKeepsTheSession(t *testing.T) {
	f := newFixture(t, authz.Options{})
	c := f.newSession(t, &sessionpb.Session{AccessToken: "x"})
	f.store.fail.Store(true)
	reqs := []*authz.Request{get("/logout", "JSESSIONID="+c), get("/", "JSESSIONID="+c)}
	if fixtureCache {
		f.peer.Cut(true) // the channel lives on the same Redis
		// A logout needs the store at once; a check may be served from the
		// cache within the staleness bound, and only then.
		if d := f.engine.Check(context.Background(), reqs[0]); d.Status != http.StatusServiceUnavailable {
			t.Fatalf("logout with the store down: %+v, want 503", d)
		}
		time.Sleep(fixtureStaleness)
	}
	for _, req := range reqs {
		d := f.engine.Check(context.Background(), req)
		if d.Allow || d.Status != http.StatusServiceUnavailable || header(d, "retry-after") == "" {
			t.Fatalf("%s with the store down: %+v, want 503 with retry-after", req.Path, d)
		}
	}
	f.store.fail.Store(false)
	if d := f.engine.Check(context.Background(), get("/", "JSESSIONID="+c)); !d.Allow {
		t.Fatalf("after the store is back the session must work: %+v", d)
	}
}

// login walks a browser through login start and callback, returning the
// session cookie value.
func login(t *testing.T, f *fixture, path string) string {
	t.Helper()
	ctx := context.Background()
	d := f.engine.Check(ctx, get(path, ""))
	if d.Status != http.StatusFound {
		t.Fatalf("login start: %+v", d)
	}
	loc, _ := url.Parse(header(d, "location"))
	q := loc.Query()
	if q.Get("redirect_uri") != "https://app.example.com/login/callback" || q.Get("code_challenge_method") != "S256" {
		t.Fatalf("authorize URL %s", loc)
	}
	stateCookie := headers(d, "set-cookie")[0]
	if !strings.Contains(stateCookie, "Path=/login/callback") || !strings.Contains(stateCookie, "HttpOnly") ||
		!strings.Contains(stateCookie, "Secure") || !strings.Contains(stateCookie, "Max-Age=180") {
		t.Fatalf("state cookie %q", stateCookie)
	}
	nameValue, _, _ := strings.Cut(stateCookie, ";")
	cb := get("/login/callback?"+url.Values{"code": {"c1"}, "state": {q.Get("state")}}.Encode(), nameValue)
	d = f.engine.Check(ctx, cb)
	if d.Status != http.StatusFound || header(d, "location") != path {
		t.Fatalf("callback: %+v, want 302 to %s", d, path)
	}
	var session string
	for _, sc := range headers(d, "set-cookie") {
		if v, ok := strings.CutPrefix(sc, "JSESSIONID="); ok {
			session, _, _ = strings.Cut(v, ";")
		} else if !strings.Contains(sc, "Max-Age=0") {
			t.Fatalf("callback must clear the state cookie, set %q", sc)
		}
	}
	if session == "" {
		t.Fatalf("callback set no session cookie: %v", headers(d, "set-cookie"))
	}
	// Replaying the same callback fails.
	if d := f.engine.Check(ctx, cb); d.Status != http.StatusBadRequest {
		t.Fatalf("replayed callback: %d, want 400", d.Status)
	}
	return session
}

func TestLoginFlow(t *testing.T) {
	f := newFixture(t, authz.Options{})
	c := login(t, f, "/orders?id=7")
	d := f.engine.Check(context.Background(), get("/orders", "JSESSIONID="+c))
	if !d.Allow || d.Upstream[0].Value != "Bearer at-c1" {
		t.Fatalf("after login: %+v", d)
	}
}

func TestCallbackFailures(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, authz.Options{})
	start := func() (state, cookie string) {
		d := f.engine.Check(ctx, get("/", ""))
		loc, _ := url.Parse(header(d, "location"))
		c, _, _ := strings.Cut(headers(d, "set-cookie")[0], ";")
		return loc.Query().Get("state"), c
	}
	cb := func(q url.Values, cookie string) *authz.Decision {
		return f.engine.Check(ctx, get("/login/callback?"+q.Encode(), cookie))
	}
	state, cookie := start()
	if d := cb(url.Values{"state": {state}, "error": {"access_denied"}}, cookie); d.Status != http.StatusForbidden || !strings.Contains(d.Body, "access_denied") {
		t.Fatalf("error=access_denied: %d %q", d.Status, d.Body)
	}
	if d := cb(url.Values{"state": {state}, "code": {"c"}}, ""); d.Status != http.StatusBadRequest {
		t.Fatalf("state cookie cleared by the IdP error: %d", d.Status)
	}
	state, _ = start()
	if d := cb(url.Values{"state": {state}, "code": {"c"}}, ""); d.Status != http.StatusBadRequest || !strings.Contains(d.Body, "not started in this browser") {
		t.Fatalf("missing state cookie: %d %q", d.Status, d.Body)
	}
	state, _ = start()
	if d := cb(url.Values{"state": {state}, "code": {"c"}}, "JSESSIONID_login_"+state[:10]+"=forged"); d.Status != http.StatusBadRequest {
		t.Fatalf("wrong state cookie: %d", d.Status)
	}
	if d := cb(url.Values{"state": {"unknown-state-value"}, "code": {"c"}}, ""); d.Status != http.StatusBadRequest {
		t.Fatalf("unknown state: %d", d.Status)
	}
	if d := cb(url.Values{"code": {"c"}}, ""); d.Status != http.StatusBadRequest {
		t.Fatalf("no state: %d", d.Status)
	}
	f.idp.exchangeErr = fmt.Errorf("%w: invalid_grant", idp.ErrRejected)
	state, cookie = start()
	if d := cb(url.Values{"state": {state}, "code": {"bad"}}, cookie); d.Status != http.StatusBadRequest {
		t.Fatalf("rejected code: %d", d.Status)
	}
	f.idp.exchangeErr = errors.New("dial tcp: connection refused")
	state, cookie = start()
	if d := cb(url.Values{"state": {state}, "code": {"c"}}, cookie); d.Status != http.StatusBadGateway {
		t.Fatalf("IdP down at exchange: %d", d.Status)
	}
	f.idp.authErr = errors.New("discovery failed")
	if d := f.engine.Check(ctx, get("/", "")); d.Status != http.StatusBadGateway {
		t.Fatalf("IdP down at login start: %d", d.Status)
	}
}

func TestReturnPathStaysOnHost(t *testing.T) {
	f := newFixture(t, authz.Options{})
	for path, want := range map[string]string{
		"/a/b?c=d": "/a/b?c=d", "//evil.example/x": "/evil.example/x", "/./a/../b?x": "/b?x",
		"/" + strings.Repeat("a", 3000): "/",
		"/\\evil.example":               "", "https://evil.example/": "", "*": "", "/%2F%2Fevil.example": "",
	} {
		d := f.engine.Check(context.Background(), get(path, ""))
		if want == "" {
			if d.Status != http.StatusBadRequest || header(d, "location") != "" {
				t.Errorf("request target %q: %d to %q, want 400", path, d.Status, header(d, "location"))
			}
			continue
		}
		loc, _ := url.Parse(header(d, "location"))
		state := loc.Query().Get("state")
		c, _, _ := strings.Cut(headers(d, "set-cookie")[0], ";")
		_, value, _ := strings.Cut(c, "=")
		ls, err := f.sessions.OpenLogin(state, value, "", "app.example.com")
		if err != nil {
			t.Fatal(err)
		}
		if ls.GetReturnPath() != want {
			t.Errorf("request target %q returns to %q, want %q", path, ls.GetReturnPath(), want)
		}
	}
}

func TestLogout(t *testing.T) {
	f := newFixture(t, authz.Options{})
	c := login(t, f, "/")
	d := f.engine.Check(context.Background(), get("/logout", "JSESSIONID="+c))
	loc, _ := url.Parse(header(d, "location"))
	if d.Status != http.StatusFound || loc.Host != "idp.test" || loc.Query().Get("id_token_hint") != "idt-1" ||
		loc.Query().Get("post_logout_redirect_uri") != "https://app.example.com/" {
		t.Fatalf("logout: %+v", d)
	}
	if sc := header(d, "set-cookie"); !strings.HasPrefix(sc, "JSESSIONID=;") || !strings.Contains(sc, "Max-Age=0") {
		t.Fatalf("logout must clear the cookie: %q", sc)
	}
	if d := f.engine.Check(context.Background(), get("/", "JSESSIONID="+c, "x-requested-with", "XMLHttpRequest")); d.Status != http.StatusUnauthorized {
		t.Fatalf("cookie after logout: %d, want 401", d.Status)
	}
}

func TestRefreshAheadOneRefreshManyRequests(t *testing.T) {
	f := newFixture(t, authz.Options{RefreshAhead: 5 * time.Minute})
	f.idp.delay = 50 * time.Millisecond
	f.idp.refreshed = &idp.Tokens{AccessToken: "new", Expiry: time.Now().Add(time.Hour), Subject: "alice"}
	c := f.newSession(t, &sessionpb.Session{Subject: "alice", AccessToken: "old", RefreshToken: "rt",
		AccessTokenExpiry: time.Now().Add(time.Minute).Unix()})
	var wg sync.WaitGroup
	var allowed atomic.Int32
	for range 50 {
		wg.Go(func() {
			d := f.engine.Check(context.Background(), get("/", "JSESSIONID="+c))
			if d.Allow {
				allowed.Add(1)
			}
		})
	}
	wg.Wait()
	if n := f.idp.refreshes.Load(); n != 1 {
		t.Fatalf("%d refresh grants for 50 concurrent requests, want 1", n)
	}
	if n := allowed.Load(); n != 50 {
		t.Fatalf("%d of 50 requests allowed during the refresh", n)
	}
	d := f.engine.Check(context.Background(), get("/", "JSESSIONID="+c))
	if d.Upstream[0].Value != "Bearer new" {
		t.Fatalf("after the refresh: %v", d.Upstream)
	}
	if n := f.idp.refreshes.Load(); n != 1 {
		t.Fatalf("the fresh token was refreshed again (%d grants)", n)
	}
}

func TestRefreshFailures(t *testing.T) {
	ctx := context.Background()
	t.Run("still valid: keep the token, retry later", func(t *testing.T) {
		f := newFixture(t, authz.Options{RefreshAhead: 5 * time.Minute})
		f.idp.refreshErr = errors.New("timeout")
		c := f.newSession(t, &sessionpb.Session{AccessToken: "old", RefreshToken: "rt", AccessTokenExpiry: time.Now().Add(time.Minute).Unix()})
		for i := 1; i <= 2; i++ {
			if d := f.engine.Check(ctx, get("/", "JSESSIONID="+c)); !d.Allow || d.Upstream[0].Value != "Bearer old" {
				t.Fatalf("request %d: %+v", i, d)
			}
			if n := f.idp.refreshes.Load(); int(n) != i {
				t.Fatalf("refresh attempts %d after %d requests: the failure must be retried", n, i)
			}
		}
	})
	t.Run("expired and rejected: session ends", func(t *testing.T) {
		f := newFixture(t, authz.Options{RefreshAhead: 5 * time.Minute})
		f.idp.refreshErr = fmt.Errorf("%w: invalid_grant", idp.ErrRejected)
		c := f.newSession(t, &sessionpb.Session{AccessToken: "old", RefreshToken: "rt", AccessTokenExpiry: time.Now().Add(-time.Minute).Unix()})
		if d := f.engine.Check(ctx, get("/", "JSESSIONID="+c)); d.Status != http.StatusFound {
			t.Fatalf("expired + rejected refresh: %+v, want a login redirect", d)
		}
		if d := f.engine.Check(ctx, get("/", "JSESSIONID="+c, "x-requested-with", "XMLHttpRequest")); d.Status != http.StatusUnauthorized {
			t.Fatalf("the session must be gone: %d", d.Status)
		}
	})
	t.Run("expired and IdP down: 502, session kept", func(t *testing.T) {
		f := newFixture(t, authz.Options{RefreshAhead: 5 * time.Minute})
		f.idp.refreshErr = errors.New("connection refused")
		c := f.newSession(t, &sessionpb.Session{AccessToken: "old", RefreshToken: "rt", AccessTokenExpiry: time.Now().Add(-time.Minute).Unix()})
		if d := f.engine.Check(ctx, get("/", "JSESSIONID="+c)); d.Status != http.StatusBadGateway {
			t.Fatalf("%+v", d)
		}
		f.idp.refreshErr = nil
		f.idp.refreshed = &idp.Tokens{AccessToken: "new", Expiry: time.Now().Add(time.Hour)}
		if d := f.engine.Check(ctx, get("/", "JSESSIONID="+c)); !d.Allow || d.Upstream[0].Value != "Bearer new" {
			t.Fatalf("after the IdP is back: %+v", d)
		}
	})
	t.Run("expired without refresh token: login", func(t *testing.T) {
		f := newFixture(t, authz.Options{})
		c := f.newSession(t, &sessionpb.Session{AccessToken: "old", AccessTokenExpiry: time.Now().Add(-time.Second).Unix()})
		if d := f.engine.Check(ctx, get("/", "JSESSIONID="+c, "x-requested-with", "XMLHttpRequest")); d.Status != http.StatusUnauthorized || d.Reason != "token_expired" {
			t.Fatalf("%+v", d)
		}
	})
}

func TestCookieAttributes(t *testing.T) {
	f := newFixture(t, authz.Options{SecureCookie: "auto", TrustForwardedProto: true, SameSite: "None", Partitioned: true})
	d := f.engine.Check(context.Background(), &authz.Request{Method: "GET", Scheme: "http", Host: "localhost:8080", Path: "/",
		Headers: map[string]string{"x-forwarded-proto": "https"}})
	sc := headers(d, "set-cookie")[0]
	for _, want := range []string{"Secure", "SameSite=None", "Partitioned", "HttpOnly"} {
		if !strings.Contains(sc, want) {
			t.Errorf("state cookie %q lacks %s", sc, want)
		}
	}
	loc, _ := url.Parse(header(d, "location"))
	if got := loc.Query().Get("redirect_uri"); got != "https://localhost:8080/login/callback" {
		t.Errorf("redirect_uri %q", got)
	}
	// auto believes x-forwarded-proto only from a trusted proxy.
	f = newFixture(t, authz.Options{SecureCookie: "auto"})
	d = f.engine.Check(context.Background(), &authz.Request{Method: "GET", Scheme: "http", Host: "localhost:8080", Path: "/",
		Headers: map[string]string{"x-forwarded-proto": "https"}})
	if sc := headers(d, "set-cookie")[0]; strings.Contains(sc, "Secure") {
		t.Errorf("plain http (auto, untrusted x-forwarded-proto): cookie %q must not be Secure", sc)
	}
	d = f.engine.Check(context.Background(), &authz.Request{Method: "GET", Scheme: "https", Host: "localhost:8080", Path: "/", Headers: map[string]string{}})
	if sc := headers(d, "set-cookie")[0]; !strings.Contains(sc, "Secure") {
		t.Errorf("https (auto): cookie %q must be Secure", sc)
	}
	// The default is Secure, whatever the scheme.
	f = newFixture(t, authz.Options{})
	d = f.engine.Check(context.Background(), &authz.Request{Method: "GET", Scheme: "http", Host: "localhost:8080", Path: "/",
		Headers: map[string]string{"x-forwarded-proto": "http"}})
	if sc := headers(d, "set-cookie")[0]; !strings.Contains(sc, "Secure") {
		t.Errorf("default: cookie %q must be Secure", sc)
	}
}

func TestTenants(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, authz.Options{})
	mt, err := tenant.New(tenant.Options{Pattern: `^(.*)\.app\.example\.com$`})
	if err != nil {
		t.Fatal(err)
	}
	f.engine = authz.New(f.sessions, authz.StaticProvider{P: f.idp}, mt, authz.Options{}, slog.New(slog.DiscardHandler))
	on := func(host, path, cookie string, extra ...string) *authz.Request {
		r := get(path, cookie, extra...)
		r.Host = host
		return r
	}
	before := f.store.calls.Load()
	if d := f.engine.Check(ctx, on("evil.example.com", "/", "")); d.Status != http.StatusNotFound {
		t.Fatalf("host outside the pattern: %d, want 404", d.Status)
	}
	if n := f.store.calls.Load() - before; n != 0 {
		t.Fatalf("a host outside the pattern caused %d store calls (no login may start)", n)
	}
	_, a, _ := f.sessions.Create(ctx, &sessionpb.Session{Tenant: "a", AccessToken: "token-a"})
	d := f.engine.Check(ctx, on("a.app.example.com", "/", "JSESSIONID="+a))
	if !d.Allow || d.Tenant != "a" {
		t.Fatalf("own tenant: %+v", d)
	}
	d = f.engine.Check(ctx, on("b.app.example.com", "/", "JSESSIONID="+a))
	if d.Allow || d.Status != http.StatusForbidden || !strings.Contains(d.Body, "another tenant") || d.Tenant != "b" {
		t.Fatalf("tenant a's cookie on b's host: %+v, want 403", d)
	}
	if d := f.engine.Check(ctx, on("b.app.example.com", "/logout", "JSESSIONID="+a)); d.Status != http.StatusFound {
		t.Fatalf("logout on b with a's cookie: %d", d.Status)
	}
	if d := f.engine.Check(ctx, on("a.app.example.com", "/", "JSESSIONID="+a)); !d.Allow {
		t.Fatal("tenant a's session was harmed by its use (or logout) on b's host")
	}

	// A login started on a's host cannot complete on b's.
	d = f.engine.Check(ctx, on("a.app.example.com", "/", ""))
	loc, _ := url.Parse(header(d, "location"))
	state := loc.Query().Get("state")
	if got := loc.Query().Get("redirect_uri"); got != "https://a.app.example.com/login/callback" {
		t.Fatalf("redirect_uri %q: the callback must be on the tenant's host", got)
	}
	stateCookie, _, _ := strings.Cut(headers(d, "set-cookie")[0], ";")
	cb := on("b.app.example.com", "/login/callback?"+url.Values{"code": {"c"}, "state": {state}}.Encode(), stateCookie)
	if d := f.engine.Check(ctx, cb); d.Status != http.StatusBadRequest || d.Reason != "callback_unknown_state" || f.idp.exchanges.Load() != 0 {
		t.Fatalf("callback on another tenant's host: %d %q (%d exchanges)", d.Status, d.Body, f.idp.exchanges.Load())
	}
}

func TestPolicy(t *testing.T) {
	ctx := context.Background()
	pol, err := policy.Parse([]byte(`{"routes":[
		{"source":"^/public/","authenticationType":"none"},
		{"source":"^/admin/","scope":"app.Admin"},
		{"source":"^/api/","scope":{"GET":"app.Read","default":"app.Write"}},
		{"source":"^/hook$","csrfProtection":false}]}`), "")
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, authz.Options{Policy: pol})
	c := f.newSession(t, &sessionpb.Session{AccessToken: "tok", Scopes: []string{"app.Read"}, CsrfToken: "the-csrf-token"})
	req := func(method, path string, headers ...string) *authz.Request {
		r := get(path, "theme=dark; JSESSIONID="+c, headers...)
		r.Method = method
		return r
	}
	for _, tc := range []struct {
		name   string
		req    *authz.Request
		status int
		reason string
	}{
		{"public without session", &authz.Request{Method: "POST", Host: "app.example.com", Path: "/public/x", Headers: map[string]string{}}, 200, "public_route"},
		{"scope missing", req("GET", "/admin/users"), 403, "missing_scope"},
		{"scope by method: GET has it", req("GET", "/api/orders"), 200, "session"},
		{"scope by method: POST lacks it", req("POST", "/api/orders", "x-csrf-token", "the-csrf-token"), 403, "missing_scope"},
		{"no route", req("GET", "/elsewhere"), 404, "no_route"},
		{"csrf off for the route", req("POST", "/hook"), 200, "session"},
	} {
		d := f.engine.Check(ctx, tc.req)
		if d.Status != tc.status || d.Reason != tc.reason {
			t.Errorf("%s: %d %s, want %d %s", tc.name, d.Status, d.Reason, tc.status, tc.reason)
		}
	}
	// A public route still strips the session cookie from what the app sees.
	if d := f.engine.Check(ctx, req("GET", "/public/x")); fmt.Sprint(d.Upstream) != "[{cookie theme=dark}]" || len(d.Upstream) != 1 {
		t.Fatalf("public route upstream: %v", d.Upstream)
	}

	// CSRF: a POST without the token, with a wrong one, then fetch and POST.
	writer := f.newSession(t, &sessionpb.Session{AccessToken: "tok", Scopes: []string{"app.Write", "app.Read"}, CsrfToken: "the-csrf-token"})
	post := func(token string) *authz.Decision {
		r := get("/api/orders", "JSESSIONID="+writer)
		r.Method = "POST"
		if token != "" {
			r.Headers["x-csrf-token"] = token
		}
		return f.engine.Check(ctx, r)
	}
	for _, tok := range []string{"", "wrong"} {
		if d := post(tok); d.Status != 403 || header(d, "x-csrf-token") != "Required" {
			t.Fatalf("POST with CSRF token %q: %d %v, want 403 with x-csrf-token: Required", tok, d.Status, d.Response)
		}
	}
	d := f.engine.Check(ctx, get("/api/orders", "JSESSIONID="+writer, "x-csrf-token", "Fetch"))
	fetched := header(d, "x-csrf-token")
	if !d.Allow || fetched != "the-csrf-token" {
		t.Fatalf("fetch: %+v", d)
	}
	if d := post(fetched); !d.Allow {
		t.Fatalf("POST with the fetched token: %+v", d)
	}
}

func TestLogoutMethodPost(t *testing.T) {
	f := newFixture(t, authz.Options{LogoutMethod: http.MethodPost})
	if d := f.engine.Check(context.Background(), get("/logout", "")); d.Status != http.StatusMethodNotAllowed || header(d, "allow") != "POST" {
		t.Fatalf("GET /logout with logoutMethod POST: %+v", d)
	}
	r := get("/logout", "")
	r.Method = "POST"
	if d := f.engine.Check(context.Background(), r); d.Status != http.StatusFound {
		t.Fatalf("POST /logout: %d", d.Status)
	}
}
