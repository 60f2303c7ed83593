// Command extauthz-bench measures extauthz as Envoy uses it, side by side
// with the field, in one run, with one load generator and one Redis:
//
//   - a no-op ext_authz server on extauthz's own gRPC and HTTP stack (the
//     ceiling: what any check costs on this machine);
//   - the real extauthz binary with its session cache on and off
//     (EXTAUTHZ_SESSION_CACHE=true|false), over gRPC and HTTP;
//   - oauth2-proxy with its Redis session store, /oauth2/auth over HTTP,
//     logged in through a headless OIDC provider (mockoidc);
//   - the raw Redis GET of a value the size of a session (the floor).
//
// Each with a valid session, at several concurrencies: checks/s, p50/p99,
// the server's CPU per check (/proc), its allocations per check, and Redis
// commands per check (INFO commandstats). Figures are printed as ratios to
// the no-op server and to oauth2-proxy, so that they survive a noisy
// machine, with issue 13's targets marked met or not. Then the propagation
// of a logout between two replicas under load, and check latency against
// the number of keys in Redis. `make bench` runs it.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"

	"github.com/extauthz/extauthz/internal/e2e"
	"github.com/extauthz/extauthz/internal/redistest"
	"github.com/extauthz/extauthz/pkg/session"
	"github.com/extauthz/extauthz/pkg/session/redisstore"
	"github.com/extauthz/extauthz/proto/sessionpb"
)

const (
	secret    = "bench-session-secret-0123456789-0123456789-0123456789-0123456789"
	prefix    = "bench"
	benchHost = "app.example.com"
	// cacheSetting is issue 13's switch of the session cache.
	cacheSetting = "EXTAUTHZ_SESSION_CACHE"
)

func main() {
	if os.Getenv(noopEnv) == "1" {
		if err := runNoop(); err != nil {
			fmt.Fprintln(os.Stderr, "noop server:", err)
			os.Exit(1)
		}
		return
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	var o options
	flag.IntVar(&o.sessions, "sessions", 10_000, "extauthz sessions stored before the load")
	flag.StringVar(&o.conc, "concurrency", "1,16,64", "client concurrencies, comma-separated")
	flag.IntVar(&o.targetConc, "target-concurrency", 32, "also measure the gRPC rows at this concurrency (issue 13's p99 target; 0: skip)")
	flag.DurationVar(&o.duration, "duration", 3*time.Second, "load duration per measurement (plus a tenth of it, at most 300ms, of unmeasured warm-up)")
	flag.IntVar(&o.rounds, "rounds", 3, "split each measurement into this many stretches, the rows of one concurrency taking turns")
	flag.StringVar(&o.jsonOut, "json", "bench-results/bench.json", "where to write the results as JSON (empty: nowhere)")
	flag.StringVar(&o.profile, "cpuprofile", "", "after the table, write a CPU profile of extauthz with the cache under gRPC load at the highest concurrency to this file")
	flag.StringVar(&o.bin, "extauthz", "", "an extauthz binary to measure (default: build ./cmd/extauthz)")
	flag.BoolVar(&o.peer, "oauth2-proxy", true, "measure oauth2-proxy (built into bin/oauth2-proxy from tools/oauth2-proxy the first time)")
	flag.IntVar(&o.peerLogins, "oauth2-proxy-sessions", 16, "oauth2-proxy sessions (logins) the load cycles through")
	flag.IntVar(&o.logouts, "logouts", 50, "logouts in the propagation scenario, per cache setting (0: skip)")
	flag.DurationVar(&o.bound, "propagation-bound", 2*time.Second, "give up waiting for a replica to refuse a logged-out cookie after this")
	flag.IntVar(&o.scale, "scale-sessions", 1_000_000, "keys in Redis for the latency-vs-size measurement (0: skip)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), "Usage: extauthz-bench [flags]\n\n"+
			"%s=true|false is set on the two extauthz servers; other %s_* variables in\n"+
			"this environment are passed to the one with the cache (its sizes).\n\nFlags:\n", cacheSetting, cacheSetting)
		flag.PrintDefaults()
	}
	flag.Parse()
	if err := bench(ctx, o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type options struct {
	sessions   int
	conc       string
	targetConc int
	duration   time.Duration
	rounds     int
	jsonOut    string
	profile    string
	bin        string
	peer       bool
	peerLogins int
	logouts    int
	bound      time.Duration
	scale      int
}

// target is one server under load.
type target struct {
	key     string // "noop", "cache", "nocache", "oauth2-proxy", "redis"
	pid     int
	metrics string // its Prometheus /metrics (allocations), "" for none
}

// row is one line of the table: a server over one protocol.
type row struct {
	t        *target
	protocol string // "grpc", "http", "redis"
	name     string
	// mk prepares the load at concurrency c; done releases its connections.
	mk func(c int) (f op, done func(), err error)
}

func bench(ctx context.Context, o options, w io.Writer) (err error) {
	began := time.Now()
	var concs []int
	for _, s := range strings.Split(o.conc, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n < 1 {
			return fmt.Errorf("-concurrency: %q", s)
		}
		concs = append(concs, n)
	}
	dir, err := os.MkdirTemp("", "extauthz-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	root, err := e2e.ModuleRoot()
	if err != nil {
		return err
	}
	self, err := os.Executable()
	if err != nil {
		return err
	}
	bin := o.bin
	if bin == "" {
		fmt.Fprintln(w, "building extauthz ...")
		if bin, err = e2e.BuildExtauthz(root, dir); err != nil {
			return err
		}
	}
	var peerBin string
	if o.peer {
		if peerBin, err = e2e.BuildOAuth2Proxy(root, w); err != nil {
			return err
		}
	}
	help, _ := exec.Command(bin, "--help").CombinedOutput()
	rep := &Report{Schema: 2, When: time.Now().UTC(), Sessions: o.sessions, DurationSeconds: o.duration.Seconds(), Rounds: max(1, o.rounds), GOMAXPROCS: numCPU(),
		CacheSettingKnown: strings.Contains(string(help), cacheSetting)}

	srv, err := redistest.Start(dir, "--enable-debug-command", "yes")
	if err != nil {
		return err
	}
	defer srv.Stop()
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, PoolSize: 128})
	defer rdb.Close()

	fmt.Fprintf(w, "extauthz bench: %d sessions, concurrency %v (gRPC also %d), %s each; redis %s\n", o.sessions, concs, o.targetConc, o.duration, srv.Addr)
	all, key, err := createSessions(ctx, srv.Addr, o.sessions+2*o.logouts)
	if err != nil {
		return err
	}
	cookies, logoutCookies := all[:o.sessions], all[o.sessions:]
	rep.SessionBytes, _ = rdb.MemoryUsage(ctx, key).Result()
	val, err := rdb.Get(ctx, key).Bytes()
	if err != nil {
		return err
	}
	rep.ValueBytes = len(val)
	if err := rdb.Set(ctx, "bench:floor", val, 0).Err(); err != nil {
		return err
	}

	logf, err := os.Create(filepath.Join(dir, "servers.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	// Servers write their logs there; on a failure, show its end.
	defer func() {
		if err != nil {
			if b, _ := os.ReadFile(logf.Name()); len(b) > 0 {
				fmt.Fprintf(os.Stderr, "servers' log (last 2 KB):\n%s\n", b[max(0, len(b)-2048):])
			}
		}
	}()
	env := func(cache bool) map[string]string {
		m := map[string]string{
			"EXTAUTHZ_REDIS_URL": "redis://" + srv.Addr, "EXTAUTHZ_SESSION_SECRETS": secret,
			"EXTAUTHZ_SESSION_KEY_PREFIX": prefix, "EXTAUTHZ_LOG_LEVEL": "warn", "GOGC": os.Getenv("BENCH_GOGC"),
			"EXTAUTHZ_ALLOWED_HOSTS": benchHost, "EXTAUTHZ_PPROF": strconv.FormatBool(o.profile != "" && cache),
			cacheSetting: strconv.FormatBool(cache),
		}
		if cache {
			for _, kv := range os.Environ() {
				if k, v, _ := strings.Cut(kv, "="); strings.HasPrefix(k, cacheSetting+"_") {
					m[k] = v
				}
			}
		}
		return m
	}
	start := func(name, bin string, env map[string]string) (*e2e.Extauthz, *target, error) {
		x, err := e2e.StartExtauthz(name, bin, env, logf)
		if err != nil {
			return nil, nil, err
		}
		pid, err := x.PID()
		if err != nil {
			x.Close()
			return nil, nil, err
		}
		return x, &target{key: name, pid: pid, metrics: "http://" + x.AdminAddr + "/metrics"}, nil
	}
	noop, noopT, err := start("noop", self, map[string]string{noopEnv: "1", "GOGC": os.Getenv("BENCH_GOGC")})
	if err != nil {
		return err
	}
	defer noop.Close()
	xc, cacheT, err := start("cache", bin, env(true))
	if err != nil {
		return err
	}
	defer xc.Close()
	xn, nocacheT, err := start("nocache", bin, env(false))
	if err != nil {
		return err
	}
	defer xn.Close()
	var p *peer
	var peerT *target
	if o.peer {
		if p, err = startPeer(ctx, peerBin, srv.Addr, o.peerLogins, logf); err != nil {
			return err
		}
		defer p.Close()
		peerT = &target{key: "oauth2-proxy", pid: p.proxy.PID(), metrics: p.proxy.MetricsURL}
		rep.OAuth2ProxyVersion = e2e.OAuth2ProxyVersion
	}

	reqs := encodeChecks(cookies)
	// Steady state: every session has been seen once by each extauthz (a
	// cache holds them, as it would for the users active right now).
	fmt.Fprintf(w, "warming up: each of %d sessions once on each extauthz ...\n", len(cookies))
	for _, x := range []*e2e.Extauthz{xc, xn} {
		conns, err := dialConns(x.GRPCAddr, 16)
		if err != nil {
			return err
		}
		f := check(conns, reqs)
		err = each(ctx, 16, len(reqs), func(ctx context.Context, i int) error { return f(ctx, 0, i) })
		closeAll(conns)
		if err != nil {
			return fmt.Errorf("warm-up of %s: %w", x.Name, err)
		}
	}

	grpcRow := func(t *target, x *e2e.Extauthz, name string) row {
		return row{t: t, protocol: "grpc", name: name, mk: func(c int) (op, func(), error) {
			conns, err := dialConns(x.GRPCAddr, c)
			if err != nil {
				return nil, nil, err
			}
			return check(conns, reqs), func() { closeAll(conns) }, nil
		}}
	}
	httpRow := func(t *target, ht httpTarget, name string, cookies []string) row {
		return row{t: t, protocol: "http", name: name, mk: func(c int) (op, func(), error) {
			f, done := httpCheck(ht, c, cookies)
			return f, done, nil
		}}
	}
	xhttp := func(x *e2e.Extauthz) httpTarget {
		return httpTarget{url: "http://" + x.HTTPAddr + "/api/orders?top=10", cookie: "JSESSIONID", ok: 200}
	}
	rows := []row{
		grpcRow(noopT, noop, "no-op server, grpc"),
		httpRow(noopT, xhttp(noop), "no-op server, http", cookies),
		grpcRow(cacheT, xc, "extauthz + cache, grpc"),
		httpRow(cacheT, xhttp(xc), "extauthz + cache, http", cookies),
		grpcRow(nocacheT, xn, "extauthz no cache, grpc"),
		httpRow(nocacheT, xhttp(xn), "extauthz no cache, http", cookies),
	}
	if p != nil {
		// /oauth2/auth allows with 202 (Envoy's HTTP ext_authz would take that
		// for a denial; counted as allowed here).
		rows = append(rows, httpRow(peerT, httpTarget{url: p.proxy.URL + "/oauth2/auth", cookie: e2e.OAuth2ProxyCookie, ok: 202},
			"oauth2-proxy /oauth2/auth, http", p.cookies))
	}
	rows = append(rows, row{t: &target{key: "redis"}, protocol: "redis", name: "redis GET (floor)", mk: func(int) (op, func(), error) {
		return rawGet(rdb), func() {}, nil
	}})

	groups := concs
	if o.targetConc > 0 && !contains(concs, o.targetConc) {
		groups = insertSorted(concs, o.targetConc)
	}
	for _, c := range groups {
		var active []row
		for _, r := range rows {
			if contains(concs, c) || r.protocol == "grpc" {
				active = append(active, r)
			}
		}
		res, err := measureGroup(ctx, rdb, active, c, o.duration, o.rounds)
		if err != nil {
			return err
		}
		var line []string
		for _, x := range res {
			line = append(line, fmt.Sprintf("%s %.0f/s", x.Name, x.PerSecond))
		}
		rep.Results = append(rep.Results, res...)
		fmt.Fprintf(w, "  c=%d: %s\n", c, strings.Join(line, "; "))
	}
	if o.profile != "" {
		c := concs[len(concs)-1]
		conns, err := dialConns(xc.GRPCAddr, c)
		if err != nil {
			return err
		}
		prof := make(chan error, 1)
		go func() { prof <- fetchProfile(xc, o.duration, o.profile) }()
		load(ctx, c, o.duration+500*time.Millisecond, check(conns, reqs))
		closeAll(conns)
		if err := <-prof; err != nil {
			return err
		}
		fmt.Fprintf(w, "CPU profile of extauthz with the cache, gRPC at c=%d: %s\n", c, o.profile)
	}
	for _, t := range []*target{noopT, cacheT, nocacheT, peerT} {
		if t != nil {
			kib, _ := peakRSS(t.pid)
			if rep.PeakRSS == nil {
				rep.PeakRSS = map[string]int64{}
			}
			rep.PeakRSS[t.key] = kib
		}
	}
	rep.PeakRSSKiB = max(rep.PeakRSS["cache"], rep.PeakRSS["nocache"])
	if p != nil {
		p.Close()
		p = nil
	}
	noop.Close()

	if o.logouts > 0 {
		for i, x := range []*e2e.Extauthz{xc, xn} {
			cache := x == xc
			fmt.Fprintf(w, "propagation (%s=%t): %d logouts on one replica, refusal on the other ...\n", cacheSetting, cache, o.logouts)
			b, err := e2e.StartExtauthz(x.Name+"-replica-b", bin, env(cache), logf)
			if err != nil {
				return err
			}
			pr, err := propagation(ctx, x, b, reqs, logoutCookies[i*o.logouts:(i+1)*o.logouts], 16, o.bound)
			b.Close()
			if err != nil {
				return fmt.Errorf("propagation: %w", err)
			}
			pr.Cache = cache
			if cache {
				pr.TargetP99ms, pr.TargetMet = 50, pr.P99ms <= 50 && pr.Refused == pr.Logouts
			}
			rep.Propagation = append(rep.Propagation, pr)
		}
	}

	if o.scale > 0 {
		// Through the server without the cache: this is about Redis lookups.
		conns, err := dialConns(xn.GRPCAddr, 1)
		if err != nil {
			return err
		}
		some := reqs[:min(1000, len(reqs))]
		small := load(ctx, 1, 2*time.Second, check(conns, some))
		fmt.Fprintf(w, "adding %d keys to Redis (DEBUG POPULATE) ...\n", o.scale)
		if err := rdb.Do(ctx, "DEBUG", "POPULATE", o.scale, prefix+":s:filler", 512).Err(); err != nil {
			return fmt.Errorf("DEBUG POPULATE: %w", err)
		}
		large := load(ctx, 1, 2*time.Second, check(conns, some))
		closeAll(conns)
		rep.Latency1kP50us, rep.Latency1MP50us, rep.ScaleKeys = small.P50us, large.P50us, o.scale
	}
	rep.finish()
	rep.TotalSeconds = time.Since(began).Seconds()
	printReport(w, rep)
	if o.jsonOut != "" {
		if err := os.MkdirAll(filepath.Dir(o.jsonOut), 0o755); err != nil {
			return err
		}
		b, _ := json.MarshalIndent(rep, "", "  ")
		if err := os.WriteFile(o.jsonOut, append(b, '\n'), 0o644); err != nil {
			return err
		}
		fmt.Fprintln(w, "\nwritten:", o.jsonOut)
	}
	fmt.Fprintf(w, "bench took %.0f s (without building the bench itself)\n", time.Since(began).Seconds())
	return rep.failed()
}

// measureGroup measures rows at concurrency c, d each: first an unmeasured
// warm-up of each, then rounds of d/rounds per row, the rows taking turns
// (each round starting with the next row), so that a neighbour's burst on
// a shared machine spreads over all rows instead of spoiling one. Around
// each stretch: the server's CPU (/proc), its allocations (/metrics) and
// Redis' command count.
func measureGroup(ctx context.Context, rdb *redis.Client, rows []row, c int, d time.Duration, rounds int) ([]Result, error) {
	rounds = max(1, rounds)
	type acc struct {
		f         op
		s         sample
		cpu       time.Duration
		mallocs   float64
		redisCmds float64
	}
	accs := make([]acc, len(rows))
	for i, r := range rows {
		f, done, err := r.mk(c)
		if err != nil {
			return nil, err
		}
		defer done()
		accs[i].f = f
		run(ctx, c, min(d/10, 300*time.Millisecond), f)
	}
	for round := range rounds {
		for k := range rows {
			i := (k + round) % len(rows)
			r, a := rows[i], &accs[i]
			var cpu0, cpu1 time.Duration
			var m0, m1 float64
			if r.t.pid != 0 {
				cpu0, _ = cpuTime(r.t.pid)
			}
			if r.t.metrics != "" {
				m0, _ = mallocs(r.t.metrics)
			}
			cmds0, _ := redisCommands(ctx, rdb)
			a.s.merge(run(ctx, c, d/time.Duration(rounds), a.f))
			if r.t.pid != 0 {
				cpu1, _ = cpuTime(r.t.pid)
			}
			if r.t.metrics != "" {
				m1, _ = mallocs(r.t.metrics)
			}
			cmds1, _ := redisCommands(ctx, rdb)
			a.cpu += cpu1 - cpu0
			a.mallocs += m1 - m0
			a.redisCmds += cmds1 - cmds0
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
		}
	}
	out := make([]Result, len(rows))
	for i, r := range rows {
		a := &accs[i]
		res := a.s.result()
		res.Name, res.Server, res.Protocol, res.Concurrency = r.name, r.t.key, r.protocol, c
		if res.Ops > 0 {
			if r.t.pid != 0 {
				res.CPUusPerCheck = float64(a.cpu.Microseconds()) / float64(res.Ops)
			}
			if r.t.metrics != "" {
				res.AllocsPerChk = a.mallocs / float64(res.Ops)
			}
			res.RedisCmdsPer = a.redisCmds / float64(res.Ops)
		}
		out[i] = res
	}
	return out, nil
}

func fetchProfile(x *e2e.Extauthz, d time.Duration, file string) error {
	_, body, err := x.Admin(fmt.Sprintf("/debug/pprof/profile?seconds=%d", max(1, int(d.Seconds()))))
	if err != nil {
		return err
	}
	return os.WriteFile(file, []byte(body), 0o644)
}

func closeAll(conns []*grpc.ClientConn) {
	for _, c := range conns {
		c.Close()
	}
}

func contains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func insertSorted(s []int, v int) []int {
	out := make([]int, 0, len(s)+1)
	done := false
	for _, x := range s {
		if !done && v < x {
			out, done = append(out, v), true
		}
		out = append(out, x)
	}
	if !done {
		out = append(out, v)
	}
	return out
}

// token makes a realistic JWT-sized string.
func token(n int) string {
	b := make([]byte, n)
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	for i := range b {
		b[i] = alphabet[rand.IntN(len(alphabet))]
	}
	return string(b)
}

// createSessions stores n sessions with an XSUAA-sized token set, as the
// callback would, and returns their cookies and one session's key.
func createSessions(ctx context.Context, addr string, n int) ([]string, string, error) {
	st, err := redisstore.New(redisstore.Options{Addrs: []string{addr}, Timeout: 5 * time.Second, PoolSize: 32})
	if err != nil {
		return nil, "", err
	}
	defer st.Close()
	keys, err := session.NewKeys([]byte(secret))
	if err != nil {
		return nil, "", err
	}
	m := session.NewManager(st, keys, session.Options{Prefix: prefix, IdleTimeout: time.Hour, MaxLifetime: 12 * time.Hour})
	cookies := make([]string, n)
	var key string
	var mu sync.Mutex
	var firstErr error
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				s, c, err := m.Create(ctx, &sessionpb.Session{
					Issuer: "https://tenant.authentication.eu10.hana.ondemand.com/oauth/token", Subject: "user-" + strconv.Itoa(i),
					AccessToken: token(2600), RefreshToken: token(200), IdToken: token(1100),
					AccessTokenExpiry: time.Now().Add(12 * time.Hour).Unix(), Scopes: []string{"openid", "app!t1.Display", "app!t1.Edit"},
					CsrfToken: token(43),
				})
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				cookies[i] = c
				if key == "" && s != nil {
					key = s.Key()
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return cookies, key, firstErr
}
