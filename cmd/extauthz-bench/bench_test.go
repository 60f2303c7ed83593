package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/redistest"
)

// TestMain lets the test binary be the no-op server, as the bench binary is
// (the bench starts os.Executable with EXTAUTHZ_BENCH_NOOP=1).
func TestMain(m *testing.M) {
	if os.Getenv(noopEnv) == "1" {
		if err := runNoop(); err != nil {
			fmt.Fprintln(os.Stderr, "noop server:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestBenchSmoke runs the whole bench small and quick (without
// oauth2-proxy, whose first build takes a minute or two): every server
// answers every check with an allow, the Redis counts are what each
// design does, and a logout reaches the other replica.
func TestBenchSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("builds and runs the servers")
	}
	redistest.Require(t)
	out := filepath.Join(t.TempDir(), "bench.json")
	var buf bytes.Buffer
	err := bench(context.Background(), options{
		sessions: 200, conc: "1,4", targetConc: 2, duration: 300 * time.Millisecond, rounds: 2,
		jsonOut: out, steady: time.Second, logouts: 3, bound: 2 * time.Second,
	}, &buf)
	t.Log(buf.String())
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var rep Report
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	// c=1 and c=4: no-op, cache, no cache over both protocols, the floor;
	// c=2: the gRPC rows.
	if got, want := len(rep.Results), 2*7+3; got != want {
		t.Fatalf("%d results, want %d", got, want)
	}
	for _, x := range rep.Results {
		if x.Ops == 0 || x.Errors != 0 {
			t.Errorf("%s c=%d: %d ops, %d errors (%s)", x.Name, x.Concurrency, x.Ops, x.Errors, x.FirstError)
		}
		switch x.Server {
		case "noop":
			if x.RedisCmdsPer != 0 || x.RatioToNoop != 1 {
				t.Errorf("%s c=%d: %.2f Redis commands per check, ratio to itself %.2f", x.Name, x.Concurrency, x.RedisCmdsPer, x.RatioToNoop)
			}
		case "nocache":
			if x.RedisCmdsPer < 0.9 {
				t.Errorf("%s c=%d: %.2f Redis commands per check, want about 1 (GETEX)", x.Name, x.Concurrency, x.RedisCmdsPer)
			}
		case "cache":
			if len(x.Targets) == 0 {
				t.Errorf("%s c=%d: no targets judged", x.Name, x.Concurrency)
			}
		}
		if x.Server != "redis" && x.CPUusPerCheck <= 0 {
			t.Errorf("%s c=%d: no server CPU measured", x.Name, x.Concurrency)
		}
	}
	if s := rep.Steady; s == nil || s.Checks == 0 || s.Errors != 0 || s.RedisCmdsPer >= 0.5 {
		t.Errorf("steady state: %+v, want checks without errors, and the cache saving most Redis reads", s)
	}
	if len(rep.Propagation) != 2 {
		t.Fatalf("%d propagation results, want 2", len(rep.Propagation))
	}
	for _, p := range rep.Propagation {
		if p.Refused != p.Logouts {
			t.Errorf("cache=%t: %d of %d logged-out cookies refused by the other replica", p.Cache, p.Refused, p.Logouts)
		}
	}
}
