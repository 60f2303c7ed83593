package main

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/extauthz/extauthz/internal/e2e"
)

// Propagation is how long a logout on one replica takes to reach another.
type Propagation struct {
	Cache   bool `json:"cache"`
	Logouts int  `json:"logouts"`
	// Refused: logouts after which replica B refused the old cookie
	// within BoundMs; the others count as BoundMs in the percentiles.
	Refused int     `json:"refused_within_bound"`
	BoundMs float64 `json:"bound_ms"`
	P50ms   float64 `json:"p50_ms"`
	P99ms   float64 `json:"p99_ms"`
	MaxMs   float64 `json:"max_ms"`
	// ProbeP50us is the median round trip of one check of replica B during
	// the scenario: the resolution of the figures above (time from the
	// logout's answer to the sending of the first refused check).
	ProbeP50us float64 `json:"probe_p50_us"`
	// LoadPerSecond is the background load on both replicas (checks/s).
	LoadPerSecond float64 `json:"background_checks_per_second"`
	LoadConc      int     `json:"background_concurrency"`
	TargetP99ms   float64 `json:"target_p99_ms,omitempty"`
	TargetMet     bool    `json:"target_met,omitempty"`
}

// propagation logs each of cookies out on a (as a browser does, through
// Envoy: a GET of the logout path), then asks b with the old cookie, one
// check after the other, until b refuses it. The time of a logout is from
// a's answer to the sending of the first check b refused: 0 when b's first
// check after the logout is refused; otherwise it is known to within one
// check's round trip (ProbeP50us). All the while both replicas serve a
// background load of other valid sessions (conc workers, half on each).
// Before each logout, both replicas have just allowed the cookie (so a
// replica with a cache has it cached).
func propagation(ctx context.Context, a, b *e2e.Extauthz, loadReqs [][]byte, cookies []string, conc int, bound time.Duration) (Propagation, error) {
	res := Propagation{Logouts: len(cookies), BoundMs: ms(bound), LoadConc: conc}
	ca, err := dialConns(a.GRPCAddr, conc/2)
	if err != nil {
		return res, err
	}
	cb, err := dialConns(b.GRPCAddr, conc/2)
	if err != nil {
		return res, err
	}
	defer func() {
		for _, c := range append(ca, cb...) {
			c.Close()
		}
	}()
	onA, onB := check(ca, loadReqs), check(cb, loadReqs)
	bg, stopLoad := context.WithCancel(ctx)
	loaded := make(chan Result, 1)
	go func() {
		loaded <- load(bg, conc, time.Hour, func(ctx context.Context, w, i int) error {
			if w%2 == 0 {
				return onA(ctx, w/2, i)
			}
			return onB(ctx, w/2, i)
		})
	}()
	time.Sleep(200 * time.Millisecond) // the load is up

	var took, probes []time.Duration
	for _, cookie := range cookies {
		req, logout := checkRequest(cookie, "/api/orders?top=10"), checkRequest(cookie, "/logout")
		for _, x := range []*e2e.Extauthz{b, a, b} {
			resp, err := x.Check(ctx, req)
			if err != nil {
				stopLoad()
				return res, err
			}
			if resp.GetOkResponse() == nil {
				stopLoad()
				return res, fmt.Errorf("%s refused a valid session before its logout: %v", x.Name, resp.GetStatus())
			}
		}
		resp, err := a.Check(ctx, logout)
		if err != nil {
			stopLoad()
			return res, err
		}
		if d := resp.GetDeniedResponse(); d == nil || d.GetStatus().GetCode() != 302 {
			stopLoad()
			return res, fmt.Errorf("logout on %s: want a 302, got %v", a.Name, resp)
		}
		t0 := time.Now()
		for {
			p0 := time.Now()
			resp, err := b.Check(ctx, req)
			if err != nil {
				stopLoad()
				return res, err
			}
			probes = append(probes, time.Since(p0))
			if resp.GetOkResponse() == nil {
				took = append(took, p0.Sub(t0))
				res.Refused++
				break
			}
			if time.Since(t0) > bound {
				took = append(took, bound)
				break
			}
		}
	}
	stopLoad()
	bgRes := <-loaded
	res.LoadPerSecond = bgRes.PerSecond
	slices.Sort(took)
	slices.Sort(probes)
	res.P50ms, res.P99ms, res.MaxMs = ms(pick(took, .5)), ms(pick(took, .99)), ms(took[len(took)-1])
	res.ProbeP50us = float64(pick(probes, .5).Nanoseconds()) / 1000
	return res, nil
}

func pick(s []time.Duration, p float64) time.Duration {
	if len(s) == 0 {
		return 0
	}
	return s[min(len(s)-1, int(p*float64(len(s))))]
}

func ms(d time.Duration) float64 { return float64(d.Nanoseconds()) / 1e6 }
