// Package metrics is extauthz's Prometheus metrics: checks by decision,
// status, reason and a bounded tenant label; check latency; session store
// operations. They live on their own registry, served by Handler.
package metrics

import (
	"context"
	"errors"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/extauthz/extauthz/pkg/authz"
	"github.com/extauthz/extauthz/pkg/session"
)

// Metrics are extauthz's Prometheus metrics, on their own registry.
type Metrics struct {
	registry  *prometheus.Registry
	checks    *checkCounters
	latency   *prometheus.HistogramVec
	storeOps  *prometheus.CounterVec
	storeErrs *prometheus.CounterVec

	allowLatency, denyLatency prometheus.Observer
}

// New registers every metric, and the Go and process collectors.
func New(o Options) *Metrics {
	checks := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "extauthz_checks_total",
		Help: "Checks by decision (allow or deny), HTTP status, reason and tenant (verified tenants only: " +
			TenantUnverified + " for a tenant only the host names, " + TenantOverflow + " beyond the limit).",
	}, []string{"decision", "status", "reason", "tenant"})
	m := &Metrics{
		registry: prometheus.NewRegistry(),
		checks:   newCheckCounters(checks, o.MaxTenants),
		latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "extauthz_check_duration_seconds",
			Help: "Time to decide one check.",
			// Up to 10 s: histogram_quantile answers no more than the
			// largest finite bucket, and the latency alert compares p99
			// with Envoy's ext_authz timeout (6 s in the shipped files).
			Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"decision"}),
		storeOps: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "extauthz_store_operations_total",
			Help: "Session store operations.",
		}, []string{"op"}),
		storeErrs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "extauthz_store_errors_total",
			Help: "Session store operations that failed (not counting keys not found).",
		}, []string{"op"}),
	}
	m.allowLatency, m.denyLatency = m.latency.WithLabelValues("allow"), m.latency.WithLabelValues("deny")
	m.registry.MustRegister(checks, m.latency, m.storeOps, m.storeErrs,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// Handler serves the metrics in Prometheus's exposition format (/metrics).
func (m *Metrics) Handler() http.Handler {
	return promhttp.HandlerFor(m.registry, promhttp.HandlerOpts{})
}

// ObserveCheck counts a decision and its latency.
func (m *Metrics) ObserveCheck(d *authz.Decision, took time.Duration) {
	m.checks.counter(d).Inc()
	if d.Allow {
		m.allowLatency.Observe(took.Seconds())
	} else {
		m.denyLatency.Observe(took.Seconds())
	}
}

func decision(allow bool) string {
	if allow {
		return "allow"
	}
	return "deny"
}

// InstrumentStore counts the operations and errors of a store.
func (m *Metrics) InstrumentStore(s session.Store) session.Store {
	is := &instrumentedStore{s: s}
	for i, op := range []string{"get", "set", "setnx", "replace", "delete", "deleteif", "ping", "index_add", "index_range", "ttls"} {
		is.ops[i] = m.storeOps.WithLabelValues(op)
		is.errs[i] = m.storeErrs.WithLabelValues(op)
	}
	return is
}

const (
	opGet = iota
	opSet
	opSetNX
	opReplace
	opDelete
	opDeleteIf
	opPing
	opIndexAdd
	opIndexRange
	opTTLs
	nOps
)

type instrumentedStore struct {
	s    session.Store
	ops  [nOps]prometheus.Counter
	errs [nOps]prometheus.Counter
}

func (is *instrumentedStore) count(op int, err error) {
	is.ops[op].Inc()
	if err != nil && !errors.Is(err, session.ErrNotFound) {
		is.errs[op].Inc()
	}
}

func (is *instrumentedStore) Get(ctx context.Context, key string, idle time.Duration) ([]byte, error) {
	v, err := is.s.Get(ctx, key, idle)
	is.count(opGet, err)
	return v, err
}

func (is *instrumentedStore) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	err := is.s.Set(ctx, key, value, ttl)
	is.count(opSet, err)
	return err
}

func (is *instrumentedStore) SetNX(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	ok, err := is.s.SetNX(ctx, key, value, ttl)
	is.count(opSetNX, err)
	return ok, err
}

func (is *instrumentedStore) Replace(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	ok, err := is.s.Replace(ctx, key, value, ttl)
	is.count(opReplace, err)
	return ok, err
}

func (is *instrumentedStore) Delete(ctx context.Context, key string) error {
	err := is.s.Delete(ctx, key)
	is.count(opDelete, err)
	return err
}

func (is *instrumentedStore) DeleteIf(ctx context.Context, key string, value []byte) (bool, error) {
	ok, err := is.s.DeleteIf(ctx, key, value)
	is.count(opDeleteIf, err)
	return ok, err
}

func (is *instrumentedStore) Ping(ctx context.Context) error {
	err := is.s.Ping(ctx)
	is.count(opPing, err)
	return err
}

func (is *instrumentedStore) IndexAdd(ctx context.Context, indexes []string, e session.IndexEntry, now time.Time, max int) ([]string, error) {
	capped, err := is.s.IndexAdd(ctx, indexes, e, now, max)
	is.count(opIndexAdd, err)
	return capped, err
}

func (is *instrumentedStore) IndexRange(ctx context.Context, index string, now time.Time) ([]session.IndexEntry, error) {
	es, err := is.s.IndexRange(ctx, index, now)
	is.count(opIndexRange, err)
	return es, err
}

func (is *instrumentedStore) TTLs(ctx context.Context, keys []string) ([]time.Duration, error) {
	ds, err := is.s.TTLs(ctx, keys)
	is.count(opTTLs, err)
	return ds, err
}
