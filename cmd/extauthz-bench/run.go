package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/extauthz/extauthz/internal/e2e"
	"github.com/extauthz/extauthz/internal/redistest"
)

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
			// A measurement, not a deadline: a Redis call slowed by a busy
			// machine is a slow check, not a denied one (the default 250ms
			// turns it into a 503).
			"EXTAUTHZ_STORE_TIMEOUT": "5s",
			"EXTAUTHZ_ALLOWED_HOSTS": benchHost, "EXTAUTHZ_PPROF": strconv.FormatBool(o.profile != "" && cache),
			cacheSetting: strconv.FormatBool(cache),
		}
		if cache {
			// Sized to hold the sessions the load cycles through (about 4.5 KB
			// each opened, with their keep-aside for logouts): the steady state
			// of replicas whose active users fit their cache. The defaults
			// (10,000 entries, 32 MiB) hold about 7,000 of these sessions;
			// EXTAUTHZ_SESSION_CACHE_* in the environment override this.
			m[cacheSetting+"_ENTRIES"] = strconv.Itoa(2 * (o.sessions + 100))
			m[cacheSetting+"_BYTES"] = strconv.Itoa(8 << 10 * (o.sessions + 100))
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
	noop, noopT, err := start("noop", self, map[string]string{noopEnv: "1", noopHeaderEnv: strconv.Itoa(o.noopToken), "GOGC": os.Getenv("BENCH_GOGC"), "EXTAUTHZ_PPROF": strconv.FormatBool(o.profile != "")})
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
		// The same load on the no-op server too: what the two profiles do
		// not share is extauthz's own cost.
		c := concs[len(concs)-1]
		for _, p := range []struct {
			x    *e2e.Extauthz
			file string
		}{{xc, o.profile}, {noop, o.profile + ".noop"}} {
			conns, err := dialConns(p.x.GRPCAddr, c)
			if err != nil {
				return err
			}
			prof := make(chan error, 1)
			go func() { prof <- fetchProfile(p.x, o.duration, p.file) }()
			load(ctx, c, o.duration+500*time.Millisecond, check(conns, reqs))
			closeAll(conns)
			if err := <-prof; err != nil {
				return err
			}
		}
		fmt.Fprintf(w, "CPU profiles under gRPC load at c=%d: extauthz with the cache %s, the no-op server %s.noop\n", c, o.profile, o.profile)
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

	if o.steady > 0 {
		fmt.Fprintf(w, "steady state: extauthz + cache alone under gRPC load for %s ...\n", o.steady)
		if rep.Steady, err = steady(ctx, rdb, xc, reqs, 16, o.steady); err != nil {
			return fmt.Errorf("steady state: %w", err)
		}
	}

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
