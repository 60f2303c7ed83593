package main

import (
	"bytes"
	"strings"
	"testing"
)

func TestFinishRatiosAndTargets(t *testing.T) {
	r := &Report{CacheSettingKnown: true, Results: []Result{
		{Name: "noop grpc", Server: "noop", Protocol: "grpc", Concurrency: 16, PerSecond: 20000, Ops: 1},
		{Name: "noop http", Server: "noop", Protocol: "http", Concurrency: 16, PerSecond: 10000, Ops: 1},
		{Name: "cache grpc", Server: "cache", Protocol: "grpc", Concurrency: 16, PerSecond: 15000, CPUusPerCheck: 30, RedisCmdsPer: 0.01, Ops: 1},
		{Name: "cache http", Server: "cache", Protocol: "http", Concurrency: 16, PerSecond: 6000, CPUusPerCheck: 50, RedisCmdsPer: 0.01, Ops: 1},
		{Name: "o2p", Server: "oauth2-proxy", Protocol: "http", Concurrency: 16, PerSecond: 2500, Ops: 1},
		{Name: "floor", Server: "redis", Protocol: "redis", Concurrency: 16, PerSecond: 30000, Ops: 1},
		{Name: "cache grpc 32", Server: "cache", Protocol: "grpc", Concurrency: 32, PerSecond: 15000, P99us: 6000, CPUusPerCheck: 30, Ops: 1},
	}}
	r.finish()
	get := func(name string) Result {
		for _, x := range r.Results {
			if x.Name == name {
				return x
			}
		}
		t.Fatalf("no %s", name)
		return Result{}
	}
	met := func(x Result) map[string]bool {
		m := map[string]bool{}
		for _, c := range x.Targets {
			m[c.Short] = c.Met
		}
		return m
	}
	g, h := get("cache grpc"), get("cache http")
	if g.RatioToNoop != 0.75 || h.RatioToNoop != 0.6 || h.RatioToPeer != 2.4 || g.RatioToFloor != 0.5 {
		t.Errorf("ratios: grpc %.2f to no-op, %.2f to floor; http %.2f to no-op, %.2f to oauth2-proxy", g.RatioToNoop, g.RatioToFloor, h.RatioToNoop, h.RatioToPeer)
	}
	if want := map[string]bool{"≥70% no-op": true, "≤40µs": true}; !equal(met(g), want) {
		t.Errorf("grpc c=16 targets %v, want %v", met(g), want)
	}
	if want := map[string]bool{"≥70% no-op": false, "≥3× o2p": false, "≤40µs": false}; !equal(met(h), want) {
		t.Errorf("http c=16 targets %v, want %v", met(h), want)
	}
	if m := met(get("cache grpc 32")); m["p99<5ms"] || len(m) != 2 {
		t.Errorf("grpc c=32 targets %v: want p99<5ms judged and missed, no ratio to a no-op that was not measured", m)
	}
	if len(get("o2p").Targets) != 0 || get("o2p").RatioToPeer != 0 || get("floor").RatioToNoop != 0 {
		t.Error("targets or ratios on rows they do not apply to")
	}
	r.Steady = &Steady{Protocol: "grpc", Concurrency: 16, Seconds: 30, Sessions: 10000, Checks: 600000, PerSecond: 20000, RedisCmds: 12000, RedisCmdsPer: 0.02, TargetMet: true}
	var buf bytes.Buffer
	printReport(&buf, r)
	if !strings.Contains(buf.String(), "| cache http | 16 | 6000 |") || !strings.Contains(buf.String(), "≥3× o2p ✗") ||
		!strings.Contains(buf.String(), "= 0.020 per check (target ≤ 0.05 ✓)") || !strings.Contains(buf.String(), ": 4 of 8 met") {
		t.Errorf("table:\n%s", buf.String())
	}
}

func equal(a, b map[string]bool) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if w, ok := b[k]; !ok || w != v {
			return false
		}
	}
	return true
}
