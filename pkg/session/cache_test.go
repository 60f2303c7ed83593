package session_test

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/extauthz/extauthz/pkg/session"
	"github.com/extauthz/extauthz/pkg/session/sessiontest"
	"github.com/extauthz/extauthz/proto/sessionpb"
)

// countingStore counts the calls that reach a store, and can fail them.
type countingStore struct {
	session.Store
	gets, writes atomic.Int64
	down         atomic.Bool
	// block, when set, is waited for by the next Get (after it has read).
	block atomic.Pointer[chan struct{}]
}

var errDown = errors.New("store down")

func (s *countingStore) Get(ctx context.Context, key string, idle time.Duration) ([]byte, error) {
	s.gets.Add(1)
	if s.down.Load() {
		return nil, errDown
	}
	v, err := s.Store.Get(ctx, key, idle)
	if ch := s.block.Swap(nil); ch != nil {
		<-*ch
	}
	return v, err
}

func (s *countingStore) Replace(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	s.writes.Add(1)
	if s.down.Load() {
		return false, errDown
	}
	return s.Store.Replace(ctx, key, value, ttl)
}

func (s *countingStore) Delete(ctx context.Context, key string) error {
	s.writes.Add(1)
	if s.down.Load() {
		return errDown
	}
	return s.Store.Delete(ctx, key)
}

// replica is one Manager with a cache over a shared store.
type replica struct {
	m    *session.Manager
	peer *sessiontest.HubPeer
}

func newReplica(t *testing.T, store session.Store, hub *sessiontest.Hub, o session.CacheOptions) *replica {
	t.Helper()
	r := &replica{}
	if hub != nil {
		r.peer = hub.Peer()
		o.Peers = r.peer
	}
	r.m = session.NewManager(store, mustKeys(t, secretA), session.Options{
		IdleTimeout: time.Minute, MaxLifetime: time.Hour, Cache: &o,
	})
	stop := r.m.Start(context.Background())
	t.Cleanup(stop)
	if hub != nil {
		sessiontest.WaitFor(t, "channel up", time.Second, func() bool { return r.m.CacheStats().ChannelUp })
	}
	return r
}

func create(t *testing.T, m *session.Manager, token string) (*session.Session, string) {
	t.Helper()
	s, c, err := m.Create(context.Background(), &sessionpb.Session{Subject: "u", AccessToken: token})
	if err != nil {
		t.Fatal(err)
	}
	return s, c
}

func TestCacheHitCostsNoStoreCall(t *testing.T) {
	store := &countingStore{Store: session.NewMemoryStore(nil)}
	r := newReplica(t, store, sessiontest.NewHub(), session.CacheOptions{})
	_, cookie := create(t, r.m, "at")
	for range 100 {
		s, err := r.m.Load(context.Background(), cookie, "")
		if err != nil || s.Authorization() != "Bearer at" {
			t.Fatalf("Load = %v, %v", s, err)
		}
	}
	if n := store.gets.Load(); n != 0 {
		t.Fatalf("%d store reads for 100 loads of a session this replica created, want 0", n)
	}
	st := r.m.CacheStats()
	if st.Hits != 100 || st.Entries != 1 {
		t.Fatalf("stats %+v, want 100 hits and 1 entry", st)
	}
}

func TestCacheLogoutReachesEveryReplica(t *testing.T) {
	store := &countingStore{Store: session.NewMemoryStore(nil)}
	hub := sessiontest.NewHub()
	a := newReplica(t, store, hub, session.CacheOptions{})
	b := newReplica(t, store, hub, session.CacheOptions{})
	ctx := context.Background()
	s, cookie := create(t, a.m, "at")
	for _, r := range []*replica{a, b, a, b} {
		if _, err := r.m.Load(ctx, cookie, ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := a.m.Delete(ctx, s); err != nil {
		t.Fatal(err)
	}
	for name, r := range map[string]*replica{"a": a, "b": b} {
		if _, err := r.m.Load(ctx, cookie, ""); !errors.Is(err, session.ErrNoSession) {
			t.Fatalf("replica %s after the logout: err = %v, want ErrNoSession", name, err)
		}
	}
}

func TestCacheRefreshUpdatesThisReplicaAndInvalidatesTheOthers(t *testing.T) {
	store := &countingStore{Store: session.NewMemoryStore(nil)}
	hub := sessiontest.NewHub()
	a := newReplica(t, store, hub, session.CacheOptions{})
	b := newReplica(t, store, hub, session.CacheOptions{})
	ctx := context.Background()
	_, cookie := create(t, a.m, "old")
	if _, err := b.m.Load(ctx, cookie, ""); err != nil {
		t.Fatal(err)
	}
	s, err := a.m.Load(ctx, cookie, "")
	if err != nil {
		t.Fatal(err)
	}
	rec := proto.CloneOf(s.Record)
	rec.AccessToken = "new"
	gets := store.gets.Load()
	if err := a.m.Save(ctx, s.WithRecord(rec)); err != nil {
		t.Fatal(err)
	}
	if s.Record.GetAccessToken() != "old" {
		t.Fatal("Save changed the Session it was given a copy of")
	}
	got, err := a.m.Load(ctx, cookie, "")
	if err != nil || got.Authorization() != "Bearer new" {
		t.Fatalf("refreshing replica after Save: %v, %v", got, err)
	}
	if n := store.gets.Load() - gets; n != 0 {
		t.Fatalf("the refreshing replica read the store %d times after its Save, want 0 (its cache has the new record)", n)
	}
	got, err = b.m.Load(ctx, cookie, "")
	if err != nil || got.Authorization() != "Bearer new" {
		t.Fatalf("other replica after Save: %v, %v", got, err)
	}
}

func TestCacheSaveAfterLogoutStaysLoggedOut(t *testing.T) {
	store := &countingStore{Store: session.NewMemoryStore(nil)}
	hub := sessiontest.NewHub()
	a := newReplica(t, store, hub, session.CacheOptions{})
	b := newReplica(t, store, hub, session.CacheOptions{})
	ctx := context.Background()
	_, cookie := create(t, a.m, "old")
	s, _ := a.m.Load(ctx, cookie, "")
	sb, _ := b.m.Load(ctx, cookie, "")
	if err := b.m.Delete(ctx, sb); err != nil { // logout on b during a's refresh
		t.Fatal(err)
	}
	rec := proto.CloneOf(s.Record)
	rec.AccessToken = "new"
	if err := a.m.Save(ctx, s.WithRecord(rec)); !errors.Is(err, session.ErrNoSession) {
		t.Fatalf("Save after logout: %v, want ErrNoSession", err)
	}
	for name, r := range map[string]*replica{"a": a, "b": b} {
		if _, err := r.m.Load(ctx, cookie, ""); !errors.Is(err, session.ErrNoSession) {
			t.Fatalf("replica %s: a logged-out session came back: err = %v", name, err)
		}
	}
}

// A read that started before an invalidation and returns after it must not
// put what it read into the cache.
func TestCacheReadInFlightDuringInvalidation(t *testing.T) {
	mem := session.NewMemoryStore(nil)
	store := &countingStore{Store: mem}
	hub := sessiontest.NewHub()
	a := newReplica(t, store, hub, session.CacheOptions{Staleness: time.Hour})
	b := newReplica(t, store, hub, session.CacheOptions{Staleness: time.Hour})
	ctx := context.Background()
	s, cookie := create(t, a.m, "at")

	release := make(chan struct{})
	store.block.Store(&release)
	loaded := make(chan error)
	go func() { _, err := b.m.Load(ctx, cookie, ""); loaded <- err }() // reads, then waits
	sessiontest.WaitFor(t, "b's read", time.Second, func() bool { return store.block.Load() == nil })
	if err := a.m.Delete(ctx, s); err != nil {
		t.Fatal(err)
	}
	close(release)
	if err := <-loaded; err != nil {
		t.Fatalf("the read in flight: %v (it read before the logout)", err)
	}
	if _, err := b.m.Load(ctx, cookie, ""); !errors.Is(err, session.ErrNoSession) {
		t.Fatalf("after the logout, b: err = %v, want ErrNoSession (the read in flight must not have been cached)", err)
	}
}
