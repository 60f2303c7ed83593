package session_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/extauthz/extauthz/pkg/session"
	"github.com/extauthz/extauthz/pkg/session/sessiontest"
	"github.com/extauthz/extauthz/proto/sessionpb"
)

var (
	secretA = []byte(strings.Repeat("a", 64))
	secretB = []byte(strings.Repeat("b", 64))
)

func mustKeys(t testing.TB, secrets ...[]byte) *session.Keys {
	t.Helper()
	k, err := session.NewKeys(secrets...)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func TestNewKeysRejectsShortSecrets(t *testing.T) {
	if _, err := session.NewKeys(); err == nil {
		t.Fatal("NewKeys() with no secret: want an error")
	}
	_, err := session.NewKeys(secretA, []byte("short"))
	if err == nil || err.Error() != "session secret 2: must be at least 64 characters" {
		t.Fatalf("err = %v", err)
	}
}

func TestCookieRoundTripAndRotation(t *testing.T) {
	old := mustKeys(t, secretA)
	rotated := mustKeys(t, secretB, secretA)
	tok := session.NewToken()
	c := old.EncodeCookie(tok)
	if len(c) != session.CookieValueLen {
		t.Fatalf("cookie length %d, want %d", len(c), session.CookieValueLen)
	}
	got, err := rotated.DecodeCookie(c)
	if err != nil || got != tok {
		t.Fatalf("a cookie signed with the old secret must still verify after rotation: %v", err)
	}
	if _, err := mustKeys(t, secretB).DecodeCookie(c); !errors.Is(err, session.ErrInvalidCookie) {
		t.Fatalf("a cookie signed with a removed secret: err = %v, want ErrInvalidCookie", err)
	}
}

func TestDecodeCookieRejectsForgeries(t *testing.T) {
	k := mustKeys(t, secretA)
	good := k.EncodeCookie(session.NewToken())
	flipped := []byte(good)
	flipped[10] ^= 1
	for name, v := range map[string]string{
		"empty":       "",
		"short":       good[:20],
		"long":        good + "A",
		"not base64":  strings.Repeat("!", session.CookieValueLen),
		"flipped bit": string(flipped),
		"zero tag":    good[:43] + strings.Repeat("A", session.CookieValueLen-43),
	} {
		if _, err := k.DecodeCookie(v); !errors.Is(err, session.ErrInvalidCookie) {
			t.Errorf("%s: err = %v, want ErrInvalidCookie", name, err)
		}
	}
}

func FuzzDecodeCookie(f *testing.F) {
	k := mustKeys(f, secretA)
	f.Add(k.EncodeCookie(session.NewToken()))
	f.Add("")
	f.Add(strings.Repeat("A", session.CookieValueLen))
	f.Fuzz(func(t *testing.T, v string) {
		tok, err := k.DecodeCookie(v)
		if err == nil && k.EncodeCookie(tok) != v {
			t.Fatalf("accepted %q, which is not the cookie of its token", v)
		}
	})
}

func TestSealOpen(t *testing.T) {
	k := mustKeys(t, secretA)
	tok := session.NewToken()
	ad := []byte("extauthz:s:{x}")
	sealed, err := k.Seal(nil, &tok, ad, []byte("record"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte("record")) {
		t.Fatal("sealed value contains the plaintext")
	}
	if pt, err := k.Open(&tok, ad, sealed); err != nil || string(pt) != "record" {
		t.Fatalf("Open = %q, %v", pt, err)
	}
	other := session.NewToken()
	if _, err := k.Open(&other, ad, sealed); err == nil {
		t.Fatal("opened with another token")
	}
	if _, err := k.Open(&tok, []byte("extauthz:s:{y}"), sealed); err == nil {
		t.Fatal("opened under another key name (associated data)")
	}
	if _, err := mustKeys(t, secretB, secretA).Open(&tok, ad, sealed); err != nil {
		t.Fatalf("after rotation the old secret must still open: %v", err)
	}
	if _, err := k.Open(&tok, ad, sealed[:10]); err == nil {
		t.Fatal("opened a truncated value")
	}
}

type clock struct{ t time.Time }

func (c *clock) now() time.Time { return c.t }

func newManager(t *testing.T, store session.Store, c *clock) *session.Manager {
	return session.NewManager(store, mustKeys(t, secretA), session.Options{
		IdleTimeout: 15 * time.Minute, MaxLifetime: time.Hour, Now: c.now,
	})
}

func TestManagerLifecycle(t *testing.T) {
	ctx := context.Background()
	c := &clock{t: time.Now()}
	store := session.NewMemoryStore(nil)
	m := newManager(t, store, c)
	rec := &sessionpb.Session{Subject: "alice", AccessToken: "at-secret"}
	s, cookie, err := m.Create(ctx, rec)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(s.Key(), cookie) {
		t.Fatal("store key contains the cookie value")
	}
	got, err := m.Load(ctx, cookie, "")
	if err != nil {
		t.Fatal(err)
	}
	if !proto.Equal(got.Record, rec) {
		t.Fatalf("loaded %v, want %v", got.Record, rec)
	}

	// A tampered record in the store does not open: no session, not an error.
	raw, _ := store.Get(ctx, s.Key(), 0)
	raw[len(raw)-1] ^= 1
	_ = store.Set(ctx, s.Key(), raw, time.Minute)
	if _, err := m.Load(ctx, cookie, ""); !errors.Is(err, session.ErrNoSession) {
		t.Fatalf("tampered record: err = %v, want ErrNoSession", err)
	}

	// Absolute lifetime.
	s2, cookie2, _ := m.Create(ctx, &sessionpb.Session{Subject: "bob"})
	c.t = c.t.Add(61 * time.Minute)
	if _, err := m.Load(ctx, cookie2, ""); !errors.Is(err, session.ErrExpired) {
		t.Fatalf("after the max lifetime: err = %v, want ErrExpired", err)
	}
	if err := m.Delete(ctx, s2); err != nil {
		t.Fatal(err)
	}
}

func TestManagerLoadStoreErrorIsNotNoSession(t *testing.T) {
	c := &clock{t: time.Now()}
	m := newManager(t, session.NewMemoryStore(nil), c)
	_, cookie, _ := m.Create(context.Background(), &sessionpb.Session{})
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := m.Load(ctx, cookie, "")
	if err == nil || errors.Is(err, session.ErrNoSession) {
		t.Fatalf("a failing store must not look like a missing session: err = %v", err)
	}
}

func TestLoginState(t *testing.T) {
	ctx := context.Background()
	c := &clock{t: time.Now()}
	store := session.NewMemoryStore(nil)
	m := newManager(t, store, c)
	login, err := m.SealLogin(&sessionpb.LoginState{Tenant: "acme", Nonce: "n", ReturnPath: "/x"}, "acme.app.example.com")
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := store.Get(ctx, "anything", 0); n != nil {
		t.Fatal("unexpected store content")
	}
	ls, err := m.OpenLogin(login.State, login.Cookie, "acme", "acme.app.example.com")
	if err != nil || ls.GetNonce() != "n" || ls.GetReturnPath() != "/x" {
		t.Fatalf("OpenLogin = %v, %v", ls, err)
	}
	other, _ := m.SealLogin(&sessionpb.LoginState{Tenant: "acme"}, "acme.app.example.com")
	for name, try := range map[string][4]string{
		"forged state":          {"forged", login.Cookie, "acme", "acme.app.example.com"},
		"another login's state": {other.State, login.Cookie, "acme", "acme.app.example.com"},
		"no cookie":             {login.State, "", "acme", "acme.app.example.com"},
		"garbage cookie":        {login.State, "!!", "acme", "acme.app.example.com"},
		"another tenant":        {login.State, login.Cookie, "evil", "acme.app.example.com"},
		"another host":          {login.State, login.Cookie, "acme", "acme.app.example.com:8443"},
	} {
		if _, err := m.OpenLogin(try[0], try[1], try[2], try[3]); !errors.Is(err, session.ErrNoSession) {
			t.Errorf("%s: err = %v, want ErrNoSession", name, err)
		}
	}
	if err := m.UseLogin(ctx, login.State, ls); err != nil {
		t.Fatal(err)
	}
	if err := m.UseLogin(ctx, login.State, ls); !errors.Is(err, session.ErrLoginUsed) {
		t.Fatalf("second use: err = %v, want ErrLoginUsed", err)
	}
	c.t = c.t.Add(session.DefaultLoginTTL + time.Second)
	if _, err := m.OpenLogin(other.State, other.Cookie, "acme", "acme.app.example.com"); !errors.Is(err, session.ErrNoSession) {
		t.Fatalf("expired login: err = %v, want ErrNoSession", err)
	}
}

func TestSaveAfterDeleteKeepsItDeleted(t *testing.T) {
	ctx := context.Background()
	m := newManager(t, session.NewMemoryStore(nil), &clock{t: time.Now()})
	s, cookie, _ := m.Create(ctx, &sessionpb.Session{AccessToken: "old"})
	if err := m.Delete(ctx, s); err != nil {
		t.Fatal(err)
	}
	s.Record.AccessToken = "refreshed"
	if err := m.Save(ctx, s); !errors.Is(err, session.ErrNoSession) {
		t.Fatalf("Save after Delete: err = %v, want ErrNoSession", err)
	}
	if _, err := m.Load(ctx, cookie, ""); !errors.Is(err, session.ErrNoSession) {
		t.Fatalf("a logged-out session came back: err = %v", err)
	}
}

func TestTryLock(t *testing.T) {
	ctx := context.Background()
	m := newManager(t, session.NewMemoryStore(nil), &clock{t: time.Now()})
	s, _, _ := m.Create(ctx, &sessionpb.Session{})
	release, ok, err := m.TryLock(ctx, s, time.Minute)
	if err != nil || !ok {
		t.Fatalf("first TryLock = %v, %v", ok, err)
	}
	if _, ok, _ := m.TryLock(ctx, s, time.Minute); ok {
		t.Fatal("second TryLock got a held lock")
	}
	release(ctx)
	if _, ok, _ := m.TryLock(ctx, s, time.Minute); !ok {
		t.Fatal("TryLock after release failed")
	}
}

func TestTenantIsBoundToTheSession(t *testing.T) {
	ctx := context.Background()
	store := session.NewMemoryStore(nil)
	m := newManager(t, store, &clock{t: time.Now()})
	s, c, err := m.Create(ctx, &sessionpb.Session{Tenant: "acme", AccessToken: "x"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Load(ctx, c, "acme"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Load(ctx, c, "other"); !errors.Is(err, session.ErrOtherTenant) {
		t.Fatalf("Load on another tenant: %v, want ErrOtherTenant", err)
	}
	// Rewriting the tenant in the store breaks the seal.
	raw, _ := store.Get(ctx, s.Key(), 0)
	forged := append([]byte{5}, append([]byte("other"), raw[1+raw[0]:]...)...)
	store.Set(ctx, s.Key(), forged, time.Minute)
	if _, err := m.Load(ctx, c, "other"); !errors.Is(err, session.ErrNoSession) {
		t.Fatalf("a session moved to another tenant in Redis: %v, want ErrNoSession", err)
	}
}

// A logout whose delete landed but whose answer was lost still reaches the
// other replicas: Delete publishes even on a store error, and a retried
// logout that finds nothing publishes again (Forget).
func TestInvalidationDespiteAFailedDelete(t *testing.T) {
	ctx := context.Background()
	hub := sessiontest.NewHub()
	store := session.NewMemoryStore(nil)
	keys, _ := session.NewKeys([]byte(strings.Repeat("k", 64)))
	opts := func() session.Options {
		return session.Options{Cache: &session.CacheOptions{Staleness: time.Hour, TouchInterval: time.Hour, Peers: hub.Peer()}}
	}
	a := session.NewManager(failingDelete{store}, keys, opts())
	b := session.NewManager(store, keys, opts())
	defer a.Start(ctx)()
	defer b.Start(ctx)()
	sessiontest.WaitFor(t, "channels up", 5*time.Second, func() bool { return a.CacheStats().ChannelUp && b.CacheStats().ChannelUp })
	s, cookie, err := a.Create(ctx, &sessionpb.Session{AccessToken: "t"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Load(ctx, cookie, ""); err != nil {
		t.Fatal(err)
	}
	store.Delete(ctx, s.Key()) // the delete lands ...
	if err := a.Delete(ctx, s); err == nil {
		t.Fatal("the failing store's Delete succeeded") // ... but its answer is lost
	}
	sessiontest.WaitFor(t, "b refuses the cookie", 5*time.Second, func() bool { _, err := b.Load(ctx, cookie, ""); return errors.Is(err, session.ErrNoSession) })
	// The retried logout finds nothing; Forget tells the replicas again.
	if _, err := b.Load(ctx, cookie, ""); !errors.Is(err, session.ErrNoSession) {
		t.Fatalf("b still serves the logged-out session: %v", err)
	}
	a.Forget(ctx, cookie)
	a.Forget(ctx, "forged")
}

type failingDelete struct{ session.Store }

func (failingDelete) Delete(context.Context, string) error { return errors.New("i/o timeout") }
