// Command extauthz-bench measures extauthz as Envoy uses it: the real binary
// and a real redis-server, N stored sessions, and a load of ext_authz Checks
// with valid sessions at several concurrencies. Next to each result it
// measures the physical floor — the same concurrency doing raw go-redis GETs
// of a value of the same size against the same Redis — and prints the ratio,
// so that figures survive a noisy machine. `make bench` runs it.
package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/extauthz/extauthz/internal/e2e"
	"github.com/extauthz/extauthz/internal/redistest"
	"github.com/extauthz/extauthz/pkg/session"
	"github.com/extauthz/extauthz/pkg/session/redisstore"
	"github.com/extauthz/extauthz/proto/sessionpb"
)

const (
	secret = "bench-session-secret-0123456789-0123456789-0123456789-0123456789"
	prefix = "bench"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	var o options
	flag.IntVar(&o.sessions, "sessions", 10_000, "sessions stored before the load")
	flag.StringVar(&o.conc, "concurrency", "1,8,32,64", "client concurrencies, comma-separated")
	flag.DurationVar(&o.duration, "duration", 5*time.Second, "load duration per measurement")
	flag.StringVar(&o.jsonOut, "json", "bench-results/bench.json", "where to write the results as JSON (empty: nowhere)")
	flag.StringVar(&o.profile, "cpuprofile", "", "write the server's CPU profile during the load at the highest concurrency to this file")
	flag.StringVar(&o.bin, "extauthz", "", "an extauthz binary to measure (default: build ./cmd/extauthz)")
	flag.IntVar(&o.scale, "scale-sessions", 1_000_000, "keys in Redis for the latency-vs-size measurement (0: skip)")
	flag.Parse()
	if err := bench(ctx, o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bench:", err)
		os.Exit(1)
	}
}

type options struct {
	sessions int
	conc     string
	duration time.Duration
	jsonOut  string
	profile  string
	bin      string
	scale    int
}

// Result is one measurement.
type Result struct {
	Name          string  `json:"name"`
	Concurrency   int     `json:"concurrency"`
	Ops           int64   `json:"ops"`
	Errors        int64   `json:"errors"`
	PerSecond     float64 `json:"per_second"`
	P50us         float64 `json:"p50_us"`
	P90us         float64 `json:"p90_us"`
	P99us         float64 `json:"p99_us"`
	FloorPerSec   float64 `json:"redis_get_floor_per_second,omitempty"`
	RatioToFloor  float64 `json:"ratio_to_floor,omitempty"`
	CPUusPerCheck float64 `json:"server_cpu_us_per_check,omitempty"`
	AllocsPerChk  float64 `json:"server_allocs_per_check,omitempty"`
	RedisCmdsPer  float64 `json:"redis_commands_per_check,omitempty"`
	FirstError    string  `json:"first_error,omitempty"`
}

// Report is everything one run measured.
type Report struct {
	When            time.Time `json:"when"`
	Sessions        int       `json:"sessions"`
	SessionBytes    int64     `json:"session_bytes_in_redis"`
	ValueBytes      int       `json:"sealed_value_bytes"`
	Results         []Result  `json:"results"`
	PeakRSSKiB      int64     `json:"server_peak_rss_kib"`
	Latency1kP50us  float64   `json:"latency_1k_keys_p50_us,omitempty"`
	Latency1MP50us  float64   `json:"latency_scale_keys_p50_us,omitempty"`
	ScaleKeys       int       `json:"scale_keys,omitempty"`
	GOMAXPROCS      int       `json:"cpus"`
	DurationSeconds float64   `json:"duration_per_measurement_seconds"`
}

func bench(ctx context.Context, o options, w io.Writer) error {
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
	bin := o.bin
	if bin == "" {
		if bin, err = e2e.BuildExtauthz(root, dir); err != nil {
			return err
		}
	}
	srv, err := redistest.Start(dir, "--enable-debug-command", "yes")
	if err != nil {
		return err
	}
	defer srv.Stop()
	rdb := redis.NewClient(&redis.Options{Addr: srv.Addr, PoolSize: 128})
	defer rdb.Close()

	fmt.Fprintf(w, "extauthz bench: %d sessions, concurrency %v, %s each; redis %s\n", o.sessions, concs, o.duration, srv.Addr)
	cookies, key, err := createSessions(ctx, srv.Addr, o.sessions)
	if err != nil {
		return err
	}
	rep := &Report{When: time.Now().UTC(), Sessions: o.sessions, DurationSeconds: o.duration.Seconds(), GOMAXPROCS: numCPU()}
	rep.SessionBytes, _ = rdb.MemoryUsage(ctx, key).Result()
	val, err := rdb.Get(ctx, key).Bytes()
	if err != nil {
		return err
	}
	rep.ValueBytes = len(val)
	if err := rdb.Set(ctx, "bench:floor", val, 0).Err(); err != nil {
		return err
	}

	logf, err := os.Create(filepath.Join(dir, "extauthz.log"))
	if err != nil {
		return err
	}
	defer logf.Close()
	x, err := e2e.StartExtauthz("extauthz", bin, map[string]string{
		"EXTAUTHZ_REDIS_URL": "redis://" + srv.Addr, "EXTAUTHZ_SESSION_SECRETS": secret,
		"EXTAUTHZ_SESSION_KEY_PREFIX": prefix, "EXTAUTHZ_LOG_LEVEL": "warn", "GOGC": os.Getenv("BENCH_GOGC"),
		"EXTAUTHZ_PPROF": strconv.FormatBool(o.profile != ""),
	}, logf)
	if err != nil {
		return err
	}
	defer x.Close()
	pid, err := x.PID()
	if err != nil {
		return err
	}

	for _, c := range concs {
		floor := load(ctx, c, o.duration, rawGet(rdb))
		conns, err := dialConns(x.GRPCAddr, c)
		if err != nil {
			return err
		}
		var prof chan error
		if o.profile != "" && c == concs[len(concs)-1] {
			prof = make(chan error, 1)
			go func() { prof <- fetchProfile(x, o.duration-time.Second, o.profile) }()
		}
		res := measureServer(ctx, pid, x, rdb, c, o.duration, check(conns, cookies))
		if prof != nil {
			if err := <-prof; err != nil {
				return err
			}
		}
		for _, cc := range conns {
			cc.Close()
		}
		res.Name, res.Concurrency = "grpc check (valid session)", c
		res.FloorPerSec = floor.PerSecond
		res.RatioToFloor = res.PerSecond / floor.PerSecond
		hres := measureServer(ctx, pid, x, rdb, c, o.duration, httpCheck(x.HTTPAddr, c, cookies))
		hres.Name, hres.Concurrency = "http check (valid session)", c
		hres.FloorPerSec = floor.PerSecond
		hres.RatioToFloor = hres.PerSecond / floor.PerSecond
		floor.Name, floor.Concurrency = "raw redis GET (floor)", c
		rep.Results = append(rep.Results, res, hres, floor)
		fmt.Fprintf(w, "  concurrency %3d: grpc %8.0f checks/s p99 %6.0f µs; http %8.0f checks/s p99 %6.0f µs; floor %8.0f GET/s\n",
			c, res.PerSecond, res.P99us, hres.PerSecond, hres.P99us, floor.PerSecond)
	}
	rep.PeakRSSKiB, _ = peakRSS(pid)

	if o.scale > 0 {
		conns, err := dialConns(x.GRPCAddr, 1)
		if err != nil {
			return err
		}
		small := load(ctx, 1, 2*time.Second, check(conns, cookies[:min(1000, len(cookies))]))
		fmt.Fprintf(w, "  adding %d keys to Redis (DEBUG POPULATE) ...\n", o.scale)
		if err := rdb.Do(ctx, "DEBUG", "POPULATE", o.scale, prefix+":s:filler", 512).Err(); err != nil {
			return fmt.Errorf("DEBUG POPULATE: %w", err)
		}
		large := load(ctx, 1, 2*time.Second, check(conns, cookies[:min(1000, len(cookies))]))
		conns[0].Close()
		rep.Latency1kP50us, rep.Latency1MP50us, rep.ScaleKeys = small.P50us, large.P50us, o.scale
	}
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
	return nil
}

func printReport(w io.Writer, r *Report) {
	fmt.Fprintf(w, "\n| measurement | conc | ops/s | p50 µs | p90 µs | p99 µs | ratio to GET | server CPU µs/check | allocs/check | Redis cmds/check |\n")
	fmt.Fprintf(w, "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	for _, x := range r.Results {
		if x.RatioToFloor == 0 {
			fmt.Fprintf(w, "| %s | %d | %.0f | %.0f | %.0f | %.0f | | | | |\n", x.Name, x.Concurrency, x.PerSecond, x.P50us, x.P90us, x.P99us)
			continue
		}
		fmt.Fprintf(w, "| %s | %d | %.0f | %.0f | %.0f | %.0f | %.2f | %.1f | %.1f | %.2f |\n", x.Name, x.Concurrency,
			x.PerSecond, x.P50us, x.P90us, x.P99us, x.RatioToFloor, x.CPUusPerCheck, x.AllocsPerChk, x.RedisCmdsPer)
	}
	fmt.Fprintf(w, "\nsession in Redis: %d bytes (MEMORY USAGE; sealed value %d bytes, access token 2,600 B, ID token 1,100 B, refresh token 200 B)\n", r.SessionBytes, r.ValueBytes)
	fmt.Fprintf(w, "server peak RSS: %.1f MiB\n", float64(r.PeakRSSKiB)/1024)
	if r.ScaleKeys > 0 {
		fmt.Fprintf(w, "check latency p50 at concurrency 1: %.0f µs with %d sessions, %.0f µs with %d more keys\n",
			r.Latency1kP50us, r.Sessions, r.Latency1MP50us, r.ScaleKeys)
	}
	for _, x := range r.Results {
		if x.Errors > 0 {
			fmt.Fprintf(w, "ERRORS: %s at concurrency %d: %d failed, first: %s\n", x.Name, x.Concurrency, x.Errors, x.FirstError)
		}
	}
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

type op func(ctx context.Context, worker, i int) error

func rawGet(rdb *redis.Client) op {
	return func(ctx context.Context, _, _ int) error { return rdb.Get(ctx, "bench:floor").Err() }
}

func dialConns(addr string, c int) ([]*grpc.ClientConn, error) {
	n := max(1, c/16) // Envoy keeps a few HTTP/2 connections per upstream
	var conns []*grpc.ClientConn
	for range n {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, err
		}
		conns = append(conns, cc)
	}
	return conns, nil
}

// check sends pre-encoded CheckRequests (Envoy encodes them on its own
// cores, in C++; the load generator should not be what is measured) and
// reads only whether the answer is an OkResponse.
func check(conns []*grpc.ClientConn, cookies []string) op {
	reqs := make([][]byte, len(cookies))
	for i, c := range cookies {
		b, err := proto.Marshal(&authv3.CheckRequest{Attributes: &authv3.AttributeContext{
			Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
				SocketAddress: &corev3.SocketAddress{Address: "10.0.3.17", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 52144}}}}},
			Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
				Id: "13471385738472", Method: "GET", Host: "app.example.com", Path: "/api/orders?top=10", Scheme: "https", Protocol: "HTTP/1.1",
				Headers: map[string]string{
					":authority": "app.example.com", ":method": "GET", ":path": "/api/orders?top=10", ":scheme": "https",
					"accept": "application/json", "accept-language": "en-US,en;q=0.9", "accept-encoding": "gzip, deflate, br",
					"user-agent":        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
					"cookie":            "theme=dark; JSESSIONID=" + c + "; lang=en",
					"x-forwarded-proto": "https", "x-forwarded-for": "203.0.113.9", "x-request-id": "0d4a6c1e-2b7f-4c39-9a51-6a3e2f1b8c77",
					"sec-fetch-mode": "cors", "referer": "https://app.example.com/orders",
				},
			}},
		}})
		if err != nil {
			panic(err)
		}
		reqs[i] = b
	}
	return func(ctx context.Context, worker, i int) error {
		var resp rawMessage
		req := rawMessage(reqs[(worker*7919+i)%len(reqs)])
		if err := conns[worker%len(conns)].Invoke(ctx, "/envoy.service.auth.v3.Authorization/Check", &req, &resp, grpc.ForceCodec(rawCodec{})); err != nil {
			return err
		}
		if !isOK(resp) {
			return errors.New("denied")
		}
		return nil
	}
}

type rawMessage []byte

// httpCheck asks the HTTP protocol listener, as Envoy's http_service does.
func httpCheck(addr string, c int, cookies []string) op {
	client := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: c, MaxIdleConns: c}}
	return func(ctx context.Context, worker, i int) error {
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://"+addr+"/api/orders?top=10", nil)
		req.Host = "app.example.com"
		req.Header.Set("Cookie", "theme=dark; JSESSIONID="+cookies[(worker*7919+i)%len(cookies)]+"; lang=en")
		req.Header.Set("X-Forwarded-Proto", "https")
		req.Header.Set("Sec-Fetch-Mode", "cors")
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 {
			return fmt.Errorf("denied: %d", resp.StatusCode)
		}
		return nil
	}
}

// measureServer runs a load and adds the server's CPU, allocations and
// Redis commands per operation.
func measureServer(ctx context.Context, pid int, x *e2e.Extauthz, rdb *redis.Client, c int, d time.Duration, f op) Result {
	cpu0, _ := cpuTime(pid)
	allocs0, _ := serverMallocs(x)
	cmds0, _ := redisCommands(ctx, rdb)
	res := load(ctx, c, d, f)
	cpu1, _ := cpuTime(pid)
	allocs1, _ := serverMallocs(x)
	cmds1, _ := redisCommands(ctx, rdb)
	if res.Ops > 0 {
		res.CPUusPerCheck = float64((cpu1 - cpu0).Microseconds()) / float64(res.Ops)
		res.AllocsPerChk = (allocs1 - allocs0) / float64(res.Ops)
		res.RedisCmdsPer = (cmds1 - cmds0) / float64(res.Ops)
	}
	return res
}

// rawCodec passes pre-encoded messages through.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }
func (rawCodec) Marshal(v any) ([]byte, error) {
	return *v.(*rawMessage), nil
}
func (rawCodec) Unmarshal(b []byte, v any) error {
	*v.(*rawMessage) = append((*v.(*rawMessage))[:0], b...)
	return nil
}

// isOK says whether a CheckResponse holds an ok_response (field 3).
func isOK(b []byte) bool {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		if num == 3 && typ == protowire.BytesType {
			return true
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return false
		}
		b = b[n:]
	}
	return false
}

// load runs f from c workers for d and measures throughput and latency.
func load(ctx context.Context, c int, d time.Duration, f op) Result {
	// Calls run under ctx, not under a deadline: a call cut by the end of the
	// measurement is not an error, it is simply not counted.
	var stop atomic.Bool
	timer := time.AfterFunc(d, func() { stop.Store(true) })
	defer timer.Stop()
	lat := make([][]time.Duration, c)
	var errs atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for w := range c {
		wg.Go(func() {
			l := make([]time.Duration, 0, 1<<16)
			for i := 0; !stop.Load() && ctx.Err() == nil; i++ {
				t0 := time.Now()
				err := f(ctx, w, i)
				if err != nil {
					if errs.Add(1) == 1 {
						firstErr.Store(err.Error())
					}
					continue
				}
				l = append(l, time.Since(t0))
			}
			lat[w] = l
		})
	}
	wg.Wait()
	el := time.Since(start)
	var all []time.Duration
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	pct := func(p float64) float64 {
		if len(all) == 0 {
			return 0
		}
		return float64(all[min(len(all)-1, int(p*float64(len(all))))].Nanoseconds()) / 1000
	}
	first, _ := firstErr.Load().(string)
	return Result{Ops: int64(len(all)), Errors: errs.Load(), FirstError: first, PerSecond: float64(len(all)) / el.Seconds(),
		P50us: pct(.50), P90us: pct(.90), P99us: pct(.99)}
}

func fetchProfile(x *e2e.Extauthz, d time.Duration, file string) error {
	_, body, err := x.Admin(fmt.Sprintf("/debug/pprof/profile?seconds=%d", max(1, int(d.Seconds()))))
	if err != nil {
		return err
	}
	return os.WriteFile(file, []byte(body), 0o644)
}

// cpuTime is user+system CPU time of a process, from /proc/<pid>/stat.
func cpuTime(pid int) (time.Duration, error) {
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	s := string(b)
	fields := strings.Fields(s[strings.LastIndexByte(s, ')')+2:])
	ut, _ := strconv.ParseInt(fields[11], 10, 64)
	st, _ := strconv.ParseInt(fields[12], 10, 64)
	return time.Duration(ut+st) * time.Second / 100, nil // USER_HZ is 100 on Linux
}

func peakRSS(pid int) (int64, error) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "VmHWM:"); ok {
			return strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
		}
	}
	return 0, errors.New("no VmHWM")
}

// serverMallocs reads go_memstats_mallocs_total from the server's /metrics.
func serverMallocs(x *e2e.Extauthz) (float64, error) {
	_, body, err := x.Admin("/metrics")
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(body, "\n") {
		if v, ok := strings.CutPrefix(line, "go_memstats_mallocs_total "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, errors.New("no go_memstats_mallocs_total")
}

// redisCommands is the total of calls in INFO commandstats, without the
// readiness PINGs and the INFO calls of the measurement itself.
func redisCommands(ctx context.Context, rdb *redis.Client) (float64, error) {
	info, err := rdb.Info(ctx, "commandstats").Result()
	if err != nil {
		return 0, err
	}
	var total float64
	for _, line := range strings.Split(info, "\n") {
		if !strings.HasPrefix(line, "cmdstat_") || strings.HasPrefix(line, "cmdstat_ping:") || strings.HasPrefix(line, "cmdstat_info:") {
			continue
		}
		_, rest, _ := strings.Cut(line, "calls=")
		n, _, _ := strings.Cut(rest, ",")
		v, _ := strconv.ParseFloat(n, 64)
		total += v
	}
	return total, nil
}

func numCPU() int {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return 0
	}
	return strings.Count(string(b), "processor\t:")
}
