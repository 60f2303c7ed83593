package session_test

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/extauthz/extauthz/pkg/session"
	"github.com/extauthz/extauthz/pkg/session/sessiontest"
)

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
	// Due one interval, less up to a quarter (jitter), after the last one.
	if max := uint64(3*idle/(interval*3/4)) + 2; touches < 3 || touches > max {
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

// timedStore records when each Get was sent.
type timedStore struct {
	session.Store
	mu   sync.Mutex
	gets []time.Time
}

func (s *timedStore) Get(ctx context.Context, key string, idle time.Duration) ([]byte, error) {
	s.mu.Lock()
	s.gets = append(s.gets, time.Now())
	s.mu.Unlock()
	return s.Store.Get(ctx, key, idle)
}

// Sessions written together (as after a restart, when every active user
// comes back within seconds) do not come due for their touches together:
// the first touches spread over the last quarter of the interval instead of
// one burst of a command per session.
func TestCacheTouchesSpread(t *testing.T) {
	store := &timedStore{Store: session.NewMemoryStore(nil)}
	const interval = 400 * time.Millisecond
	m := session.NewManager(store, mustKeys(t, secretA), session.Options{
		IdleTimeout: time.Minute, MaxLifetime: time.Hour,
		Cache: &session.CacheOptions{TouchInterval: interval, Staleness: time.Hour},
	})
	t.Cleanup(m.Start(context.Background()))
	var cookies []string
	for i := range 200 {
		_, c := create(t, m, fmt.Sprint("at", i))
		cookies = append(cookies, c)
	}
	start := time.Now()
	ctx := context.Background()
	for time.Since(start) < interval+interval/2 {
		for _, c := range cookies {
			if _, err := m.Load(ctx, c, ""); err != nil {
				t.Fatal(err)
			}
		}
		time.Sleep(time.Millisecond)
	}
	store.mu.Lock()
	gets := slices.Clone(store.gets)
	store.mu.Unlock()
	if len(gets) < len(cookies) {
		t.Fatalf("%d touches for %d sessions in use for 1.5 intervals", len(gets), len(cookies))
	}
	first, last := gets[0], gets[len(cookies)-1]
	if first.Sub(start) < interval/2 {
		t.Fatalf("a touch %s after the writes, with a %s interval", first.Sub(start), interval)
	}
	if spread := last.Sub(first); spread < interval/8 {
		t.Fatalf("the first touches of %d sessions written together came within %s: a burst", len(cookies), spread)
	} else {
		t.Logf("the first touches of %d sessions written together spread over %s (interval %s)", len(cookies), spread, interval)
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
	took := sessiontest.WaitFor(t, "the cache notices", time.Second, func() bool {
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
