package authz_test

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/extauthz/extauthz/pkg/authz"
	"github.com/extauthz/extauthz/pkg/idp"
	"github.com/extauthz/extauthz/pkg/session"
	"github.com/extauthz/extauthz/pkg/session/sessiontest"
	"github.com/extauthz/extauthz/proto/sessionpb"
)

// replicas are engines with the session cache on one shared store, their
// caches joined by one invalidation hub: replicas as cmd/extauthz runs them.
func replicas(t *testing.T, n int, opt authz.Options) (*countingStore, *fakeIDP, []*fixture) {
	t.Helper()
	keys, err := session.NewKeys([]byte(strings.Repeat("k", 64)))
	if err != nil {
		t.Fatal(err)
	}
	store := &countingStore{Store: session.NewMemoryStore(nil)}
	fidp := &fakeIDP{}
	hub := sessiontest.NewHub()
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelInfo}))
	var out []*fixture
	for range n {
		f := &fixture{store: store, idp: fidp, peer: hub.Peer()}
		f.sessions = session.NewManager(store, keys, session.Options{Cache: &session.CacheOptions{Peers: f.peer, Staleness: time.Hour}})
		t.Cleanup(f.sessions.Start(context.Background()))
		f.engine = authz.New(f.sessions, authz.StaticProvider{P: fidp}, testHosts(t), opt, log)
		out = append(out, f)
	}
	for _, f := range out {
		for !f.sessions.CacheStats().ChannelUp {
			time.Sleep(time.Millisecond)
		}
	}
	return store, fidp, out
}

// A logout on one replica: the cookie is refused by every replica at once,
// although each had the session cached (and the staleness bound is an hour).
func TestLogoutRefusedByEveryReplica(t *testing.T) {
	store, _, rs := replicas(t, 3, authz.Options{})
	c := rs[0].newSession(t, &sessionpb.Session{AccessToken: "at", IdToken: "idt"})
	ctx := context.Background()
	for _, r := range rs {
		for range 3 {
			if d := r.engine.Check(ctx, get("/", "JSESSIONID="+c)); !d.Allow {
				t.Fatalf("before the logout: %+v", d)
			}
		}
	}
	if n := store.gets.Load(); n != 2 {
		t.Fatalf("%d store reads for 9 checks on 3 replicas, want 2 (one per replica that did not create it)", n)
	}
	if d := rs[1].engine.Check(ctx, get("/logout", "JSESSIONID="+c)); d.Status != http.StatusFound {
		t.Fatalf("logout: %+v", d)
	}
	for i, r := range rs {
		d := r.engine.Check(ctx, get("/api", "JSESSIONID="+c, "x-requested-with", "XMLHttpRequest"))
		if d.Allow || d.Status != http.StatusUnauthorized {
			t.Fatalf("replica %d after the logout: %+v, want 401", i, d)
		}
	}
}

// Refresh with the cache on two replicas: one refresh grant; afterwards
// every replica forwards the new token, the refreshing one without reading
// the store.
func TestRefreshWithCacheAcrossReplicas(t *testing.T) {
	store, fidp, rs := replicas(t, 2, authz.Options{RefreshAhead: 5 * time.Minute})
	fidp.delay = 50 * time.Millisecond
	fidp.refreshed = &idp.Tokens{AccessToken: "new", Expiry: time.Now().Add(time.Hour), Subject: "alice"}
	c := rs[0].newSession(t, &sessionpb.Session{Subject: "alice", AccessToken: "old", RefreshToken: "rt",
		AccessTokenExpiry: time.Now().Add(time.Minute).Unix()})
	ctx := context.Background()
	if _, err := rs[1].sessions.Load(ctx, c, ""); err != nil { // cached on both (a Check would refresh)
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	var allowed atomic.Int32
	for i := range 50 {
		wg.Go(func() {
			if d := rs[i%2].engine.Check(ctx, get("/", "JSESSIONID="+c)); d.Allow {
				allowed.Add(1)
			}
		})
	}
	wg.Wait()
	if n := fidp.refreshes.Load(); n != 1 {
		t.Fatalf("%d refresh grants for 50 requests on 2 replicas, want 1", n)
	}
	if n := allowed.Load(); n != 50 {
		t.Fatalf("%d of 50 requests allowed during the refresh", n)
	}
	for i, r := range rs {
		for range 3 {
			if d := r.engine.Check(ctx, get("/", "JSESSIONID="+c)); d.Upstream[0].Value != "Bearer new" {
				t.Fatalf("replica %d after the refresh forwards %q", i, d.Upstream[0].Value)
			}
		}
	}
	gets := store.gets.Load()
	for _, r := range rs {
		r.engine.Check(ctx, get("/", "JSESSIONID="+c))
	}
	if n := store.gets.Load() - gets; n != 0 {
		t.Fatalf("%d store reads once both replicas have the new record", n)
	}
}

// A logout on one replica during a refresh on another: the session stays
// logged out everywhere (Save is SET XX), and no cache brings it back.
func TestRefreshDuringLogoutWithCache(t *testing.T) {
	_, fidp, rs := replicas(t, 2, authz.Options{RefreshAhead: 5 * time.Minute})
	fidp.gate = make(chan struct{}) // the refresh is held at the IdP until the logout is done
	fidp.refreshed = &idp.Tokens{AccessToken: "new", Expiry: time.Now().Add(time.Hour)}
	c := rs[0].newSession(t, &sessionpb.Session{AccessToken: "old", RefreshToken: "rt", AccessTokenExpiry: time.Now().Add(time.Minute).Unix()})
	ctx := context.Background()
	if _, err := rs[1].sessions.Load(ctx, c, ""); err != nil {
		t.Fatal(err)
	}
	refreshed := make(chan *authz.Decision)
	go func() { refreshed <- rs[0].engine.Check(ctx, get("/", "JSESSIONID="+c)) }()
	for fidp.refreshes.Load() == 0 { // the refresh is at the IdP
		time.Sleep(time.Millisecond)
	}
	if d := rs[1].engine.Check(ctx, get("/logout", "JSESSIONID="+c)); d.Status != http.StatusFound {
		t.Fatalf("logout: %+v", d)
	}
	close(fidp.gate)
	if d := <-refreshed; d.Allow {
		t.Fatalf("the request whose refresh lost to the logout was allowed: %+v", d)
	}
	for i, r := range rs {
		if d := r.engine.Check(ctx, get("/api", "JSESSIONID="+c, "x-requested-with", "XMLHttpRequest")); d.Allow {
			t.Fatalf("replica %d: the logged-out session came back after the refresh: %+v", i, d)
		}
	}
}
