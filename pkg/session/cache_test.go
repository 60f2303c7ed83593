package session_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
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
		waitFor(t, "channel up", time.Second, func() bool { return r.m.CacheStats().ChannelUp })
	}
	return r
}

func waitFor(t *testing.T, what string, within time.Duration, ok func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !ok() {
		if time.Since(start) > within {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(time.Millisecond)
	}
	return time.Since(start)
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
	waitFor(t, "b's read", time.Second, func() bool { return store.block.Load() == nil })
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
	if err := a.m.Delete(ctx, s); err != nil {
		t.Fatal(err)
	}
	took := waitFor(t, "b refuses the logged-out session", 5*staleness, func() bool {
		_, err := b.m.Load(ctx, cookie, "")
		return errors.Is(err, session.ErrNoSession)
	})
	t.Logf("channel cut: b refused the logged-out cookie %s after the logout (staleness bound %s)", took, staleness)
	if took > staleness+50*time.Millisecond {
		t.Fatalf("b served a logged-out session %s after the logout, beyond the staleness bound %s", took, staleness)
	}
	b.peer.Restore()
	waitFor(t, "channel up again", time.Second, func() bool { return b.m.CacheStats().ChannelUp })
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

func TestCacheBounds(t *testing.T) {
	store := &countingStore{Store: session.NewMemoryStore(nil)}
	t.Run("Entries", func(t *testing.T) {
		r := newReplica(t, store, sessiontest.NewHub(), session.CacheOptions{Entries: 3})
		var cookies []string
		for i := range 5 {
			_, c := create(t, r.m, fmt.Sprint("at", i))
			cookies = append(cookies, c)
		}
		if st := r.m.CacheStats(); st.Entries != 3 || st.Evictions != 2 {
			t.Fatalf("stats %+v, want 3 entries, 2 evictions", st)
		}
		// Least recently used out first: 2, 3, 4 are in; using 2 keeps it.
		gets := store.gets.Load()
		r.m.Load(context.Background(), cookies[2], "")
		_, c := create(t, r.m, "at5")
		_ = c
		r.m.Load(context.Background(), cookies[2], "")
		if n := store.gets.Load() - gets; n != 0 {
			t.Fatalf("the recently used session was evicted (%d reads)", n)
		}
		r.m.Load(context.Background(), cookies[3], "")
		if n := store.gets.Load() - gets; n != 1 {
			t.Fatalf("the least recently used session was not evicted (%d reads)", n)
		}
	})
	t.Run("Bytes", func(t *testing.T) {
		r := newReplica(t, store, sessiontest.NewHub(), session.CacheOptions{Entries: 1000, Bytes: 20_000})
		for i := range 20 {
			create(t, r.m, strings.Repeat("x", 2000)+fmt.Sprint(i))
		}
		st := r.m.CacheStats()
		if st.Bytes > 20_000 || st.Entries < 2 || st.Entries > 5 {
			t.Fatalf("stats %+v: want at most 20000 bytes, a few sessions of ~5 KB", st)
		}
	})
	t.Run("OversizedNotCached", func(t *testing.T) {
		r := newReplica(t, store, sessiontest.NewHub(), session.CacheOptions{Bytes: 1000})
		create(t, r.m, strings.Repeat("x", 2000))
		if st := r.m.CacheStats(); st.Entries != 0 {
			t.Fatalf("stats %+v: a session over the byte bound was cached", st)
		}
	})
}

// Cookies that open nothing (unknown, forged, logged out) cost no memory.
func TestCacheNoNegativeEntries(t *testing.T) {
	store := &countingStore{Store: session.NewMemoryStore(nil)}
	r := newReplica(t, store, sessiontest.NewHub(), session.CacheOptions{})
	keys := mustKeys(t, secretA)
	for range 1000 {
		if _, err := r.m.Load(context.Background(), keys.EncodeCookie(session.NewToken()), ""); !errors.Is(err, session.ErrNoSession) {
			t.Fatal(err)
		}
		if _, err := r.m.Load(context.Background(), strings.Repeat("A", session.CookieValueLen), ""); !errors.Is(err, session.ErrNoSession) {
			t.Fatal(err)
		}
	}
	if st := r.m.CacheStats(); st.Entries != 0 || st.Bytes != 0 {
		t.Fatalf("stats %+v after 2000 bogus cookies, want an empty cache", st)
	}
	if n := store.gets.Load(); n != 1000 {
		t.Fatalf("%d store reads, want 1000 (forged tags never reach the store)", n)
	}
}

// The absolute lifetime is checked on every hit.
func TestCacheAbsoluteLifetimeOnHit(t *testing.T) {
	c := &clock{t: time.Now()}
	store := &countingStore{Store: session.NewMemoryStore(nil)}
	m := session.NewManager(store, mustKeys(t, secretA), session.Options{
		IdleTimeout: time.Minute, MaxLifetime: time.Hour, Now: c.now, Cache: &session.CacheOptions{Staleness: time.Hour},
	})
	_, cookie := create(t, m, "at")
	if _, err := m.Load(context.Background(), cookie, ""); err != nil {
		t.Fatal(err)
	}
	c.t = c.t.Add(time.Hour + time.Second)
	if _, err := m.Load(context.Background(), cookie, ""); !errors.Is(err, session.ErrExpired) {
		t.Fatalf("after the absolute lifetime: %v, want ErrExpired", err)
	}
	if st := m.CacheStats(); st.Entries != 0 {
		t.Fatalf("the expired session is still cached: %+v", st)
	}
}

// The idle timeout keeps its meaning: hits extend the store expiry by a
// touch at most once per interval, and an unused session expires.
func TestCacheTouch(t *testing.T) {
	mem := session.NewMemoryStore(nil)
	store := &countingStore{Store: mem}
	const idle, interval = 400 * time.Millisecond, 100 * time.Millisecond
	m := session.NewManager(store, mustKeys(t, secretA), session.Options{
		IdleTimeout: idle, MaxLifetime: time.Hour,
		Cache: &session.CacheOptions{TouchInterval: interval, Staleness: time.Hour},
	})
	t.Cleanup(m.Start(context.Background()))
	s, cookie := create(t, m, "at")
	ctx := context.Background()
	start := time.Now()
	for time.Since(start) < 3*idle {
		if _, err := m.Load(ctx, cookie, ""); err != nil {
			t.Fatalf("used every ms, the session ended after %s: %v", time.Since(start), err)
		}
		time.Sleep(time.Millisecond)
	}
	touches := m.CacheStats().Touches
	if max := uint64(3*idle/interval) + 2; touches < 3 || touches > max {
		t.Fatalf("%d touches in %s at a %s interval, want 3..%d", touches, 3*idle, interval, max)
	}
	if _, err := mem.Get(ctx, s.Key(), 0); err != nil {
		t.Fatalf("the store lost a session in use: %v", err)
	}
	time.Sleep(idle + interval + 50*time.Millisecond)
	if _, err := mem.Get(ctx, s.Key(), 0); !errors.Is(err, session.ErrNotFound) {
		t.Fatalf("idle for idle+interval: the store still has it (%v)", err)
	}
	if _, err := m.Load(ctx, cookie, ""); !errors.Is(err, session.ErrNoSession) {
		t.Fatalf("idle beyond the timeout: %v, want ErrNoSession", err)
	}
}

// A touch finds a session changed or deleted behind the cache's back (an
// invalidation lost: its writer died between write and publish).
func TestCacheTouchFindsLostInvalidation(t *testing.T) {
	mem := session.NewMemoryStore(nil)
	const interval = 50 * time.Millisecond
	m := session.NewManager(mem, mustKeys(t, secretA), session.Options{
		IdleTimeout: time.Minute, Cache: &session.CacheOptions{TouchInterval: interval, Staleness: time.Hour},
	})
	t.Cleanup(m.Start(context.Background()))
	s, cookie := create(t, m, "at")
	ctx := context.Background()
	mem.Delete(ctx, s.Key()) // no publish
	took := waitFor(t, "the cache notices", time.Second, func() bool {
		_, err := m.Load(ctx, cookie, "")
		return errors.Is(err, session.ErrNoSession)
	})
	t.Logf("a deletion without invalidation was noticed after %s (touch interval %s)", took, interval)
}

// Many requests, refreshes and logouts on two replicas at once (run with -race).
func TestCacheConcurrent(t *testing.T) {
	store := session.NewMemoryStore(nil)
	hub := sessiontest.NewHub()
	a := newReplica(t, store, hub, session.CacheOptions{Entries: 20})
	b := newReplica(t, store, hub, session.CacheOptions{Entries: 20})
	var cookies []string
	for i := range 40 {
		_, c := create(t, a.m, fmt.Sprint(i))
		cookies = append(cookies, c)
	}
	ctx := context.Background()
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Go(func() {
			r := []*replica{a, b}[w%2]
			for i := range 500 {
				c := cookies[(i*7+w)%len(cookies)]
				s, err := r.m.Load(ctx, c, "")
				if err != nil {
					if !errors.Is(err, session.ErrNoSession) {
						t.Error(err)
					}
					continue
				}
				switch i % 50 {
				case 7:
					rec := proto.CloneOf(s.Record)
					rec.AccessToken += "'"
					_ = r.m.Save(ctx, s.WithRecord(rec))
				case 49:
					_ = r.m.Delete(ctx, s)
				}
			}
		})
	}
	wg.Wait()
	// Whatever happened, both replicas now agree with the store.
	for _, c := range cookies {
		sa, errA := a.m.Load(ctx, c, "")
		sb, errB := b.m.Load(ctx, c, "")
		if (errA == nil) != (errB == nil) || (errA == nil && sa.Authorization() != sb.Authorization()) {
			t.Fatalf("replicas disagree: a %v %v, b %v %v", sa, errA, sb, errB)
		}
	}
}
