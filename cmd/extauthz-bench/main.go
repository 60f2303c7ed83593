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
	"flag"
	"fmt"
	"os"
	"os/signal"
	"time"
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
	flag.StringVar(&o.profile, "cpuprofile", "", "after the table, write CPU profiles of extauthz with the cache (to this file) and of the no-op server (this file + .noop) under gRPC load at the highest concurrency")
	flag.StringVar(&o.bin, "extauthz", "", "an extauthz binary to measure (default: build ./cmd/extauthz)")
	flag.BoolVar(&o.peer, "oauth2-proxy", true, "measure oauth2-proxy (built into bin/oauth2-proxy from tools/oauth2-proxy the first time)")
	flag.IntVar(&o.peerLogins, "oauth2-proxy-sessions", 16, "oauth2-proxy sessions (logins) the load cycles through")
	flag.IntVar(&o.noopToken, "noop-token-bytes", 0, "the no-op server answers with an Authorization header of this many bytes of token instead of a 2-byte header (2600: the bench sessions' access token; 0: the plain no-op)")
	flag.DurationVar(&o.steady, "steady", 30*time.Second, "measure the Redis commands per check of extauthz with the cache under continuous load for this long (2 touch intervals; 0: skip)")
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
	steady     time.Duration
	noopToken  int
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
