package session_test

import (
	"context"
	"errors"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/extauthz/extauthz/pkg/session"
	"github.com/extauthz/extauthz/pkg/session/sessiontest"
)

// With the channel cut off (no delivery, no heartbeats, nobody told), a
// replica serves a logged-out session no longer than the staleness bound.
func TestCacheChannelCutStalenessBound(t *testing.T) {
	store := &countingStore{Store: session.NewMemoryStore(nil)}
	hub := sessiontest.NewHub()
	const staleness = 200 * time.Millisecond
	a := newReplica(t, store, hub, session.CacheOptions{Staleness: staleness})
	b := newReplica(t, store, hub, session.CacheOptions{Staleness: staleness})
	ctx := context.Background()
	s, cookie := create(t, a.m, "at")
	if _, err := b.m.Load(ctx, cookie, ""); err != nil {
		t.Fatal(err)
	}
	time.Sleep(2 * staleness) // b's entry is now vouched for by the channel only
	if _, err := b.m.Load(ctx, cookie, ""); err != nil {
		t.Fatal(err)
	}
	if st := b.m.CacheStats(); st.Hits != 1 || st.Misses != 1 {
		t.Fatalf("b's stats %+v: want the second load a hit", st)
	}
	b.peer.Cut(false)
	deleted := time.Now()
	if err := a.m.Delete(ctx, s); err != nil {
		t.Fatal(err)
	}
	// Ask b until the bound has passed: every load that starts after it must
	// be refused (whatever the machine's load does to the polling, a load
	// started late is still one that must be refused).
	var first time.Duration
	for {
		started := time.Since(deleted)
		_, err := b.m.Load(ctx, cookie, "")
		refused := errors.Is(err, session.ErrNoSession)
		if refused && first == 0 {
			first = started
		}
		if started >= staleness {
			if !refused {
				t.Fatalf("b served a logged-out session %s after the logout, beyond the staleness bound %s: %v", started, staleness, err)
			}
			break
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Logf("channel cut: b refused the logged-out cookie from %s after the logout (staleness bound %s)", first, staleness)
	b.peer.Restore()
	sessiontest.WaitFor(t, "channel up again", time.Second, func() bool { return b.m.CacheStats().ChannelUp })
}

// Without Start (or without Peers) nothing vouches for an entry: it is read
// again once older than the staleness bound.
func TestCacheWithoutChannelRereadsAfterStaleness(t *testing.T) {
	store := &countingStore{Store: session.NewMemoryStore(nil)}
	m := session.NewManager(store, mustKeys(t, secretA), session.Options{
		IdleTimeout: time.Minute, Cache: &session.CacheOptions{Staleness: 100 * time.Millisecond},
	})
	_, cookie := create(t, m, "at")
	ctx := context.Background()
	for range 10 {
		if _, err := m.Load(ctx, cookie, ""); err != nil {
			t.Fatal(err)
		}
	}
	if n := store.gets.Load(); n != 0 {
		t.Fatalf("%d reads within the staleness bound, want 0", n)
	}
	time.Sleep(150 * time.Millisecond)
	for range 10 {
		if _, err := m.Load(ctx, cookie, ""); err != nil {
			t.Fatal(err)
		}
	}
	if n := store.gets.Load(); n != 1 {
		t.Fatalf("%d reads after the staleness bound, want 1", n)
	}
}

// Store down: a cached session is served within the staleness bound only,
// then the store's error (fail closed); never ErrNoSession.
func TestCacheStoreDownFailsClosedAfterStaleness(t *testing.T) {
	store := &countingStore{Store: session.NewMemoryStore(nil)}
	hub := sessiontest.NewHub()
	const staleness = 150 * time.Millisecond
	r := newReplica(t, store, hub, session.CacheOptions{Staleness: staleness})
	_, cookie := create(t, r.m, "at")
	ctx := context.Background()
	time.Sleep(2 * staleness)
	s, err := r.m.Load(ctx, cookie, "")
	if err != nil {
		t.Fatal(err)
	}
	store.down.Store(true)
	r.peer.Cut(true) // the channel lives on the same Redis
	down := time.Now()
	var served time.Duration
	for time.Since(down) < 3*staleness {
		_, err := r.m.Load(ctx, cookie, "")
		switch {
		case err == nil:
			served = time.Since(down)
		case errors.Is(err, session.ErrNoSession):
			t.Fatalf("store down: %v: a store failure must never look like a logout", err)
		}
		time.Sleep(5 * time.Millisecond)
	}
	if served > staleness {
		t.Fatalf("served from the cache %s after the store went down, beyond the staleness bound %s", served, staleness)
	}
	_, err = r.m.Load(ctx, cookie, "")
	if err == nil || errors.Is(err, session.ErrNoSession) {
		t.Fatalf("store down beyond the staleness bound: err = %v, want the store's error", err)
	}
	// Logout and refresh go to the store: they fail while it is down.
	if err := r.m.Delete(ctx, s); err == nil {
		t.Fatal("a logout succeeded while the store was down")
	}
	rec := proto.CloneOf(s.Record)
	rec.AccessToken = "new"
	if err := r.m.Save(ctx, s.WithRecord(rec)); err == nil || errors.Is(err, session.ErrNoSession) {
		t.Fatalf("a refresh's Save while the store was down: %v, want the store's error", err)
	}
	store.down.Store(false)
	r.peer.Restore()
	if _, err := r.m.Load(ctx, cookie, ""); err != nil {
		t.Fatalf("store back: %v", err)
	}
}
