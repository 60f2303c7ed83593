// The engine's test fixture: a fake identity provider, a counting store,
// request and decision helpers.
package authz_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/extauthz/extauthz/pkg/authz"
	"github.com/extauthz/extauthz/pkg/idp"
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
	gate        chan struct{} // when set, Refresh waits for it to close
	lastCode    string
	sid         string // the sid of the ID tokens Exchange returns
	lastNonce   string
	issuer      string // "": https://idp.test
}

func (f *fakeIDP) iss() string {
	if f.issuer == "" {
		return "https://idp.test"
	}
	return f.issuer
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
	return &idp.Tokens{AccessToken: "at-" + code, RefreshToken: "rt-1", IDToken: "idt-1", Subject: "alice", SID: f.sid,
		Issuer: f.iss(), Expiry: time.Now().Add(time.Hour)}, nil
}

func (f *fakeIDP) Refresh(_ context.Context, refreshToken, subject string) (*idp.Tokens, error) {
	f.refreshes.Add(1)
	time.Sleep(f.delay)
	if f.gate != nil {
		<-f.gate
	}
	if f.refreshErr != nil {
		return nil, f.refreshErr
	}
	return f.refreshed, nil
}

func (f *fakeIDP) LogoutURL(_ context.Context, idTokenHint, post string) (string, error) {
	return "https://idp.test/logout?" + url.Values{"id_token_hint": {idTokenHint}, "post_logout_redirect_uri": {post}}.Encode(), nil
}

// VerifyLogoutToken accepts "ok:" followed by the token's claims as JSON
// ({"sid":…,"sub":…,"jti":…}); anything else is a token that does not verify.
func (f *fakeIDP) VerifyLogoutToken(_ context.Context, raw string) (*idp.Logout, error) {
	js, ok := strings.CutPrefix(raw, "ok:")
	var c struct{ SID, Sub, JTI string }
	if !ok || json.Unmarshal([]byte(js), &c) != nil {
		return nil, fmt.Errorf("%w: logout token: signature", idp.ErrRejected)
	}
	return &idp.Logout{Issuer: f.iss(), Subject: c.Sub, SID: c.SID, JTI: c.JTI, Until: time.Now().Add(time.Minute)}, nil
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
