package redisstore_test

import (
	"context"
	"errors"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/extauthz/extauthz/internal/redistest"
	"github.com/extauthz/extauthz/pkg/session"
	"github.com/extauthz/extauthz/pkg/session/redisstore"
	"github.com/extauthz/extauthz/pkg/session/sessiontest"
	"github.com/extauthz/extauthz/proto/sessionpb"
)

// cachedManager is a replica as cmd/extauthz wires it with the cache on:
// sessions in data, invalidations through channel's connections (the same
// store, or one through a proxy to cut it).
func cachedManager(t *testing.T, data, channel *redisstore.Store, prefix string, staleness time.Duration) *session.Manager {
	t.Helper()
	keys, err := session.NewKeys([]byte(strings.Repeat("t", 64)))
	if err != nil {
		t.Fatal(err)
	}
	m := session.NewManager(data, keys, session.Options{Prefix: prefix, IdleTimeout: time.Hour, Cache: &session.CacheOptions{
		Staleness: staleness, Peers: channel.Peers(redisstore.PeersOptions{Prefix: prefix}),
	}})
	t.Cleanup(m.Start(context.Background()))
	sessiontest.WaitFor(t, "invalidation channel up", 10*time.Second, func() bool { return m.CacheStats().ChannelUp })
	return m
}

// refusedWithin polls m until it refuses cookie (ErrNoSession) and returns
// how long that took after since; a store error or a timeout fails.
func refusedWithin(t *testing.T, m *session.Manager, cookie string, since time.Time, limit time.Duration) time.Duration {
	t.Helper()
	for {
		_, err := m.Load(context.Background(), cookie, "")
		if errors.Is(err, session.ErrNoSession) {
			return time.Since(since)
		}
		if err != nil {
			t.Fatalf("while waiting for the logout to arrive: %v", err)
		}
		if time.Since(since) > limit {
			t.Fatalf("a logged-out cookie still opens a session %s after the logout", limit)
		}
		time.Sleep(20 * time.Microsecond) // leave the CPU to the subscriber
	}
}

func percentile(d []time.Duration, p float64) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, int(float64(len(s))*p))]
}

// logoutPropagation logs out n sessions on a that b has cached, and
// returns how long b took to refuse each cookie after the logout began.
func logoutPropagation(t *testing.T, a, b *session.Manager, n int) []time.Duration {
	t.Helper()
	ctx := context.Background()
	var took []time.Duration
	for i := range n {
		s, cookie, err := a.Create(ctx, &sessionpb.Session{Subject: "u" + strconv.Itoa(i), AccessToken: "at" + strconv.Itoa(i)})
		if err != nil {
			t.Fatal(err)
		}
		for range 2 { // the second is a hit
			if _, err := b.Load(ctx, cookie, ""); err != nil {
				t.Fatal(err)
			}
		}
		start := time.Now()
		if err := a.Delete(ctx, s); err != nil {
			t.Fatal(err)
		}
		d := refusedWithin(t, b, cookie, start, 5*time.Second)
		took = append(took, d)
	}
	return took
}

// refreshPropagation saves a new record on a and returns how long b took to
// forward the new token.
func refreshPropagation(t *testing.T, a, b *session.Manager, n int) []time.Duration {
	t.Helper()
	ctx := context.Background()
	var took []time.Duration
	for i := range n {
		_, cookie, err := a.Create(ctx, &sessionpb.Session{Subject: "u", AccessToken: "old" + strconv.Itoa(i)})
		if err != nil {
			t.Fatal(err)
		}
		b.Load(ctx, cookie, "")
		s, err := a.Load(ctx, cookie, "")
		if err != nil {
			t.Fatal(err)
		}
		rec := proto.CloneOf(s.Record)
		rec.AccessToken = "new" + strconv.Itoa(i)
		start := time.Now()
		if err := a.Save(ctx, s.WithRecord(rec)); err != nil {
			t.Fatal(err)
		}
		for {
			got, err := b.Load(ctx, cookie, "")
			if err != nil {
				t.Fatal(err)
			}
			if got.Record.GetAccessToken() == rec.AccessToken {
				break
			}
			if time.Since(start) > 5*time.Second {
				t.Fatal("the refreshed token did not reach the other replica within 5s")
			}
			time.Sleep(20 * time.Microsecond)
		}
		took = append(took, time.Since(start))
	}
	return took
}

// checkPropagation runs both measures and holds them to the target: a
// logout reaches the other replica within milliseconds. The replicas'
// staleness bound is far longer than the test, so what refuses the cookie
// is the invalidation, nothing else. (The p99 target of 50 ms under load
// is make bench's; on a shared test machine the scheduler adds outliers.)
func checkPropagation(t *testing.T, a, b *session.Manager, logouts, refreshes int) {
	t.Helper()
	lo := logoutPropagation(t, a, b, logouts)
	re := refreshPropagation(t, a, b, refreshes)
	t.Logf("MEASURE logout propagation to the other replica over %d logouts: p50 %s, p99 %s, max %s; refresh: p50 %s, p99 %s (%d)",
		len(lo), percentile(lo, .5), percentile(lo, .99), percentile(lo, 1), percentile(re, .5), percentile(re, .99), len(re))
	for what, d := range map[string][]time.Duration{"logout": lo, "refresh": re} {
		if p := percentile(d, .5); p > 10*time.Millisecond {
			t.Errorf("%s propagation p50 %s, want within milliseconds", what, p)
		}
		if p := percentile(d, .99); p > 250*time.Millisecond {
			t.Errorf("%s propagation p99 %s, want within milliseconds", what, p)
		}
	}
}

// longStaleness keeps the staleness bound out of the propagation tests.
const longStaleness = time.Minute

func TestCacheAcrossReplicasStandalone(t *testing.T) {
	srv := redistest.Run(t)
	sa, sb := newStore(t, srv.Addr), newStore(t, srv.Addr)
	a := cachedManager(t, sa, sa, "std", longStaleness)
	b := cachedManager(t, sb, sb, "std", longStaleness)
	checkPropagation(t, a, b, 200, 50)
}

func TestCacheAcrossReplicasTLS(t *testing.T) {
	redistest.Require(t)
	dir := t.TempDir()
	pki, err := redistest.NewPKI(dir)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := redistest.StartTLS(dir, pki, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	tc, err := redisstore.TLSConfig(redisstore.TLSOptions{CA: pki.CA, CertFile: pki.ClientCertFile, KeyFile: pki.ClientKeyFile, RejectUnauthorized: true})
	if err != nil {
		t.Fatal(err)
	}
	sa := open(t, redisstore.Options{Addrs: []string{srv.Addr}, TLS: tc})
	sb := open(t, redisstore.Options{Addrs: []string{srv.Addr}, TLS: tc})
	checkPropagation(t, cachedManager(t, sa, sa, "tls", longStaleness), cachedManager(t, sb, sb, "tls", longStaleness), 50, 20)
}

// The invalidation channel cut for one replica (its connection to Redis
// stalls: a partition, a stopped proxy), nobody told: that replica serves a
// logged-out session no longer than the staleness bound, then reads Redis.
// When the connection comes back, or breaks and must be made anew, the
// channel recovers by itself.
func TestCacheChannelCut(t *testing.T) {
	srv := redistest.Run(t)
	const staleness = 500 * time.Millisecond
	sa := newStore(t, srv.Addr)
	a := cachedManager(t, sa, sa, "cut", staleness)
	proxy := redistest.RunProxy(t, srv.Addr)
	// b reads sessions directly, and listens through the proxy.
	b := cachedManager(t, newStore(t, srv.Addr), newStore(t, proxy.Addr), "cut", staleness)
	ctx := context.Background()

	var took []time.Duration
	for i := range 5 {
		s, cookie, err := a.Create(ctx, &sessionpb.Session{Subject: "u", AccessToken: "at" + strconv.Itoa(i)})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.Load(ctx, cookie, ""); err != nil {
			t.Fatal(err)
		}
		// Older than the bound: only the channel vouches for b's copy now.
		time.Sleep(staleness + 100*time.Millisecond)
		hits := b.CacheStats().Hits
		if _, err := b.Load(ctx, cookie, ""); err != nil || b.CacheStats().Hits != hits+1 {
			t.Fatalf("with the channel up, b's copy older than the bound must be a hit: %v, %+v", err, b.CacheStats())
		}
		proxy.Pause()
		start := time.Now()
		if err := a.Delete(ctx, s); err != nil {
			t.Fatal(err)
		}
		d := refusedWithin(t, b, cookie, start, 10*staleness)
		took = append(took, d)
		if d > staleness+100*time.Millisecond {
			t.Errorf("logout %d: b refused the cookie %s after the logout, beyond the staleness bound %s", i, d, staleness)
		}
		proxy.Resume()
		sessiontest.WaitFor(t, "channel up after the stall", 10*time.Second, func() bool { return b.CacheStats().ChannelUp })
	}
	t.Logf("MEASURE channel stalled for one replica: logout refused there after %v (staleness bound %s)", took, staleness)

	// The connection breaks: the subscriber makes a new one by itself.
	proxy.Cut()
	sessiontest.WaitFor(t, "channel down after the connection broke", 5*time.Second, func() bool { return !b.CacheStats().ChannelUp })
	back := sessiontest.WaitFor(t, "channel up after the connection broke", 10*time.Second, func() bool { return b.CacheStats().ChannelUp })
	t.Logf("MEASURE channel connection broken: up again after %s", back)
	lo := logoutPropagation(t, a, b, 20)
	if p := percentile(lo, .5); p > 10*time.Millisecond {
		t.Errorf("after the reconnection, logout propagation p50 %s (%v): the channel does not deliver", p, lo)
	}
}

// Redis restarted: the subscriber reconnects by itself.
func TestCacheChannelSurvivesRedisRestart(t *testing.T) {
	srv := redistest.Run(t)
	sa, sb := newStore(t, srv.Addr), newStore(t, srv.Addr)
	a := cachedManager(t, sa, sa, "restart", time.Second)
	b := cachedManager(t, sb, sb, "restart", time.Second)
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	sessiontest.WaitFor(t, "channel down", 5*time.Second, func() bool { return !b.CacheStats().ChannelUp })
	back := sessiontest.WaitFor(t, "channel up after the restart", 15*time.Second, func() bool {
		return a.CacheStats().ChannelUp && b.CacheStats().ChannelUp
	})
	t.Logf("MEASURE Redis restarted: both channels up %s later", back)
	checkPropagation(t, a, b, 20, 5)
}

// In steady state a check costs far less than one Redis command: measured
// with INFO commandstats on a real Redis, two replicas, 200 sessions.
func TestCacheCommandsPerCheck(t *testing.T) {
	srv := redistest.Run(t)
	sa, sb := newStore(t, srv.Addr), newStore(t, srv.Addr)
	a := cachedManager(t, sa, sa, "cmds", time.Second)
	b := cachedManager(t, sb, sb, "cmds", time.Second)
	ctx := context.Background()
	var cookies []string
	for i := range 200 {
		_, c, err := a.Create(ctx, &sessionpb.Session{Subject: "u", AccessToken: "at" + strconv.Itoa(i)})
		if err != nil {
			t.Fatal(err)
		}
		cookies = append(cookies, c)
	}
	for _, c := range cookies { // b's cold misses: not steady state
		b.Load(ctx, c, "")
	}
	before := commands(t, srv.Addr)
	start := time.Now()
	checks := 0
	for time.Since(start) < 2*time.Second {
		for i, c := range cookies {
			if _, err := []*session.Manager{a, b}[i%2].Load(ctx, c, ""); err != nil {
				t.Fatal(err)
			}
			checks++
		}
	}
	after := commands(t, srv.Addr)
	used := map[string]int{}
	total := 0
	for name, n := range after {
		if d := n - before[name]; d > 0 && name != "info" {
			used[name] = d
			total += d
		}
	}
	per := float64(total) / float64(checks)
	t.Logf("MEASURE %d checks over %s on 2 replicas, 200 sessions: %d Redis commands %v = %.5f per check", checks, time.Since(start).Round(time.Millisecond), total, used, per)
	if per > 0.05 {
		t.Errorf("%.4f Redis commands per check in steady state, want ≤ 0.05", per)
	}
}

// commands is INFO commandstats: calls per command.
func commands(t *testing.T, addr string) map[string]int {
	t.Helper()
	out, err := redistest.CLI(addr, "info", "commandstats")
	if err != nil {
		t.Fatal(err)
	}
	m := map[string]int{}
	for _, line := range strings.Split(out, "\n") {
		name, rest, ok := strings.Cut(strings.TrimSpace(line), ":calls=")
		if !ok {
			continue
		}
		calls, _, _ := strings.Cut(rest, ",")
		n, _ := strconv.Atoi(calls)
		m[strings.TrimPrefix(name, "cmdstat_")] = n
	}
	return m
}
