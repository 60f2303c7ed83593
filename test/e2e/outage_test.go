package e2e_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/extauthz/extauthz/internal/e2e"
	"github.com/extauthz/extauthz/internal/redistest"
	"github.com/extauthz/extauthz/pkg/session"
	"github.com/extauthz/extauthz/pkg/session/redisstore"
	"github.com/extauthz/extauthz/proto/sessionpb"
)

// seedSessions stores n logged-in sessions the way the callback does, for
// the replicas of test t on the Redis at addr.
func seedSessions(t *testing.T, addr string, n int) []string {
	t.Helper()
	st, err := redisstore.New(redisstore.Options{Addrs: []string{addr}, Timeout: 5 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	keys, err := session.NewKeys([]byte(e2eSecret))
	if err != nil {
		t.Fatal(err)
	}
	m := session.NewManager(st, keys, session.Options{Prefix: keyPrefix(t)})
	cookies := make([]string, n)
	for i := range n {
		_, c, err := m.Create(context.Background(), &sessionpb.Session{
			Subject: "user-" + strconv.Itoa(i), AccessToken: "token-" + strconv.Itoa(i), AccessTokenExpiry: time.Now().Add(time.Hour).Unix(),
		})
		if err != nil {
			t.Fatal(err)
		}
		cookies[i] = c
	}
	return cookies
}

// check asks a replica about an AJAX request with a session cookie and
// returns the HTTP status the browser would get, or 0 when the replica
// could not be reached.
func check(x *e2e.Extauthz, cookie string) int {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := x.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "GET", Host: "app.localhost:8080", Path: "/api", Scheme: "http",
			Headers: map[string]string{"cookie": "JSESSIONID=" + cookie, "x-requested-with": "XMLHttpRequest"},
		}},
	}})
	if err != nil {
		return 0
	}
	if resp.GetOkResponse() != nil && resp.GetDeniedResponse() == nil {
		return 200
	}
	return int(resp.GetDeniedResponse().GetStatus().GetCode())
}

// allWork checks every cookie once and returns the outcomes.
func allWork(x *e2e.Extauthz, cookies []string) map[int]int {
	out := map[int]int{}
	for _, c := range cookies {
		out[check(x, c)]++
	}
	return out
}

// hammerSplit sends checks over the cookies from workers until stop, and
// counts outcomes: of the checks sent before split, and of those after.
func hammerSplit(x *e2e.Extauthz, cookies []string, workers int, stop <-chan struct{}, split time.Time) (before, after map[int]int) {
	var mu sync.Mutex
	before, after = map[int]int{}, map[int]int{}
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for i := w; ; i += workers {
				select {
				case <-stop:
					return
				default:
				}
				sent := time.Now()
				s := check(x, cookies[i%len(cookies)])
				mu.Lock()
				if sent.Before(split) {
					before[s]++
				} else {
					after[s]++
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return before, after
}

// staleness is the binary's default session cache staleness bound: with
// Redis gone, a cached session may be served this long after it was last
// read from Redis, then 503. grace covers a check in flight at that moment.
const staleness, grace = time.Second, 250 * time.Millisecond

// onlyStatusOrCachedAllowed checks the outcomes of an outage's first
// staleness+grace: 503, or 200 for sessions still within the bound.
func onlyStatusOrCachedAllowed(t *testing.T, what string, got map[int]int, want int) {
	t.Helper()
	for s, n := range got {
		if s != want && s != 200 {
			t.Fatalf("%s: %d checks answered %d (outcomes %v), want %d, or 200 from the cache", what, n, s, got, want)
		}
	}
}

func goroutines(t *testing.T, x *e2e.Extauthz) int {
	_, body, err := x.Admin("/metrics")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, "go_goroutines "); ok {
			n, _ := strconv.Atoi(v)
			return n
		}
	}
	t.Fatal("no go_goroutines metric")
	return 0
}

func readyz(x *e2e.Extauthz) int {
	code, _, _ := x.Admin("/readyz")
	return code
}

func waitReady(t *testing.T, x *e2e.Extauthz, within time.Duration) time.Duration {
	t.Helper()
	start := time.Now()
	for readyz(x) != 200 {
		if time.Since(start) > within {
			t.Fatalf("%s not ready %s after Redis came back", x.Name, within)
		}
		time.Sleep(10 * time.Millisecond)
	}
	return time.Since(start)
}

func onlyStatus(t *testing.T, what string, got map[int]int, want int) {
	t.Helper()
	for s, n := range got {
		if s != want {
			t.Fatalf("%s: %d checks answered %d (outcomes %v), want every one %d", what, n, s, got, want)
		}
	}
	if got[want] == 0 {
		t.Fatalf("%s: no checks ran", what)
	}
}

// Redis stalled (SIGSTOP, connections open, nothing answers) for longer than
// the store deadline, then back (SIGCONT). With the session cache, a session
// read from Redis less than the staleness bound before is still served; no
// check sent after the bound is.
func TestRedisStalled(t *testing.T) {
	t.Run("Cache", func(t *testing.T) { testRedisStalled(t, true) })
	t.Run("NoCache", func(t *testing.T) { testRedisStalled(t, false, "EXTAUTHZ_SESSION_CACHE", "false") })
}

func testRedisStalled(t *testing.T, cache bool, env ...string) {
	srv := redistest.Run(t)
	x := replica(t, "a", hydra, client, append([]string{"EXTAUTHZ_REDIS_URL", "redis://" + srv.Addr}, env...)...)
	cookies := seedSessions(t, srv.Addr, 200)
	onlyStatus(t, "before", allWork(x, cookies), 200)
	before := goroutines(t, x)

	if err := srv.Pause(); err != nil {
		t.Fatal(err)
	}
	split := time.Now().Add(staleness + grace)
	if !cache {
		split = time.Now()
	}
	stop := make(chan struct{})
	var peak atomic.Int64
	sampled := make(chan struct{})
	go func() {
		defer close(sampled)
		for {
			select {
			case <-stop:
				return
			case <-time.After(200 * time.Millisecond):
			}
			if g := int64(goroutines(t, x)); g > peak.Load() {
				peak.Store(g)
			}
		}
	}()
	time.AfterFunc(3*time.Second, func() { close(stop) })
	within, during := hammerSplit(x, cookies, 16, stop, split)
	<-sampled
	notReady := readyz(x)
	srv.Resume()
	back := waitReady(t, x, 10*time.Second)
	after := allWork(x, cookies)

	t.Logf("Redis stalled 3s: %d checks, outcomes %v within the staleness bound, %v after; /readyz %d; goroutines %d before, at most %d during; ready %s after SIGCONT; then %v",
		during[503]+during[200]+during[401], within, during, notReady, before, peak.Load(), back.Round(time.Millisecond), after)
	onlyStatusOrCachedAllowed(t, "Redis stalled, within the staleness bound", within, 503)
	onlyStatus(t, "while Redis is stalled", during, 503)
	if notReady != http.StatusServiceUnavailable {
		t.Errorf("/readyz answered %d while Redis was stalled, want 503", notReady)
	}
	if peak.Load() > int64(before)+64 {
		t.Errorf("goroutines grew from %d to %d while Redis was stalled", before, peak.Load())
	}
	onlyStatus(t, "after SIGCONT", after, 200)
}

// Redis killed, then restarted with its data (append-only file).
func TestRedisKilledAndRestarted(t *testing.T) {
	srv := redistest.Run(t, "--appendonly", "yes", "--appendfsync", "always")
	x := replica(t, "a", hydra, client, "EXTAUTHZ_REDIS_URL", "redis://"+srv.Addr)
	cookies := seedSessions(t, srv.Addr, 200)
	onlyStatus(t, "before", allWork(x, cookies), 200)

	srv.Stop()
	split := time.Now().Add(staleness + grace)
	stop := make(chan struct{})
	time.AfterFunc(2*time.Second+staleness, func() { close(stop) })
	within, during := hammerSplit(x, cookies, 16, stop, split)
	notReady := readyz(x)
	if err := srv.Restart(); err != nil {
		t.Fatal(err)
	}
	back := waitReady(t, x, 10*time.Second)
	after := allWork(x, cookies)
	t.Logf("Redis down 3s: %d checks, outcomes %v within the staleness bound, %v after; /readyz %d; ready %s after restart; then %v",
		during[503], within, during, notReady, back.Round(time.Millisecond), after)
	onlyStatusOrCachedAllowed(t, "Redis down, within the staleness bound", within, 503)
	onlyStatus(t, "while Redis is down", during, 503)
	if notReady != http.StatusServiceUnavailable {
		t.Errorf("/readyz answered %d while Redis was down, want 503", notReady)
	}
	onlyStatus(t, "after the restart", after, 200)
}

// Kubernetes starts pods in any order: extauthz before Redis.
func TestStartsBeforeRedis(t *testing.T) {
	redistest.Require(t)
	port, err := redistest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	x := startReplica(t, "a", e2e.StartExtauthzUnready, hydra, client, "EXTAUTHZ_REDIS_URL", "redis://"+addr)
	if code := readyz(x); code != http.StatusServiceUnavailable {
		t.Fatalf("/readyz = %d without Redis, want 503", code)
	}
	if s := check(x, "anything"); s != 401 { // a forged cookie needs no store
		t.Fatalf("forged cookie without Redis: %d, want 401", s)
	}
	srv, err := redistest.StartOn(t.TempDir(), port)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Stop()
	back := waitReady(t, x, 15*time.Second)
	cookies := seedSessions(t, addr, 20)
	onlyStatus(t, "once Redis is up", allWork(x, cookies), 200)
	t.Logf("started before Redis: ready %s after Redis came up", back.Round(time.Millisecond))
}

// Two replicas take a load; one is killed and restarted meanwhile; Envoy
// retries a check the dead one could not take on the other (retry policy,
// outlier detection). No session is lost, no check is refused.
func TestRestartUnderLoad(t *testing.T) {
	a := replica(t, "a", hydra, client)
	b := replica(t, "b", hydra, client)
	cookies := seedSessions(t, redis.Addr, 500)
	replicas := []*e2e.Extauthz{a, b}
	var mu sync.Mutex
	outcomes := map[string]int{}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for w := range 16 {
		wg.Go(func() {
			for i := w; ; i += 16 {
				select {
				case <-stop:
					return
				default:
				}
				first := replicas[i%2]
				s := check(first, cookies[i%len(cookies)])
				label := strconv.Itoa(s)
				if s == 0 { // the replica is gone: Envoy retries on the other
					s = check(replicas[(i+1)%2], cookies[i%len(cookies)])
					label = "retried-" + strconv.Itoa(s)
				}
				mu.Lock()
				outcomes[label]++
				mu.Unlock()
			}
		})
	}
	time.Sleep(time.Second)
	a.Kill()
	time.Sleep(time.Second)
	if err := a.Start(); err != nil {
		t.Fatal(err)
	}
	time.Sleep(time.Second)
	close(stop)
	wg.Wait()
	var labels []string
	total := 0
	for l, n := range outcomes {
		labels = append(labels, fmt.Sprintf("%s: %d", l, n))
		total += n
	}
	slices.Sort(labels)
	t.Logf("restart under load: %d checks over %d sessions; outcomes {%s}", total, len(cookies), strings.Join(labels, ", "))
	for l, n := range outcomes {
		if l != "200" && l != "retried-200" {
			t.Errorf("%d checks ended %s", n, l)
		}
	}
	if outcomes["retried-200"] == 0 {
		t.Error("no check was retried: the kill did not happen during the load")
	}
	onlyStatus(t, "every session on the restarted replica", allWork(a, cookies), 200)
	onlyStatus(t, "every session on the other replica", allWork(b, cookies), 200)
}
