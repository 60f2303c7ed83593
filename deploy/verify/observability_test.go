package verify_test

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/promql/parser"

	"github.com/extauthz/extauthz/internal/deploycheck"
	"github.com/extauthz/extauthz/internal/e2e"
	"github.com/extauthz/extauthz/internal/redistest"
	"github.com/extauthz/extauthz/pkg/authz"
	"github.com/extauthz/extauthz/pkg/metrics"
)

var update = flag.Bool("update", false, "rewrite deploy/prometheus/extauthz-rules.yaml from the chart's PrometheusRule")

const (
	rulesFile     = "../prometheus/extauthz-rules.yaml"
	dashboardFile = "../grafana/extauthz.json"
)

// Metrics and labels the dashboard and the alerts may use that are not
// extauthz's own.
var (
	// targetLabels are added by Prometheus to every series it scrapes
	// (with the Prometheus operator's ServiceMonitor, or pod annotations).
	targetLabels = []string{"namespace", "job", "instance", "pod", "service", "container", "endpoint"}
	// external are kube-state-metrics' (replicas) and Prometheus's own, with
	// their labels.
	external = map[string][]string{
		"kube_deployment_status_replicas_available": {"namespace", "deployment"},
		"kube_deployment_spec_replicas":             {"namespace", "deployment"},
		"up":                                        targetLabels,
	}
)

// metricSet is what the real /metrics says: families, with the label names
// and values each series carries.
type metricSet map[string]map[string]map[string]bool // series name -> label -> values

var (
	scrapeOnce sync.Once
	scraped    metricSet
	scrapeErr  error
)

// realMetrics builds and starts the real extauthz on a real Redis (so
// that the session cache and its counters are on, as in production), sends
// it checks that a browser without a session and a foreign host make, and
// reads its /metrics.
func realMetrics(t *testing.T) metricSet {
	t.Helper()
	redistest.Require(t)
	scrapeOnce.Do(func() { scraped, scrapeErr = scrape() })
	if scrapeErr != nil {
		t.Fatal(scrapeErr)
	}
	return scraped
}

func scrape() (metricSet, error) {
	dir, err := os.MkdirTemp("", "extauthz-metrics")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	redis, err := redistest.Start(dir)
	if err != nil {
		return nil, err
	}
	defer redis.Stop()
	bin, err := e2e.BuildExtauthz("../..", dir)
	if err != nil {
		return nil, err
	}
	x, err := e2e.StartExtauthz("extauthz", bin, map[string]string{"EXTAUTHZ_ALLOWED_HOSTS": "app.example",
		"EXTAUTHZ_REDIS_URL": "redis://" + redis.Addr, "EXTAUTHZ_SESSION_SECRETS": deploycheck.Secret64}, io.Discard)
	if err != nil {
		return nil, err
	}
	defer x.Close()
	for _, host := range []string{"app.example", "elsewhere.example"} {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := x.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
			Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Host: host, Path: "/", Scheme: "https", Headers: map[string]string{"accept": "text/html"}}},
			Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{}}}})
		cancel()
		if err != nil {
			return nil, err
		}
	}
	status, body, err := x.Admin("/metrics")
	if err != nil || status != 200 {
		return nil, fmt.Errorf("/metrics: %d %v", status, err)
	}
	p := expfmt.NewTextParser(model.UTF8Validation)
	families, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		return nil, err
	}
	ms := metricSet{}
	add := func(name string, m *dto.Metric, extra ...string) {
		if ms[name] == nil {
			ms[name] = map[string]map[string]bool{}
		}
		for _, l := range m.GetLabel() {
			if ms[name][l.GetName()] == nil {
				ms[name][l.GetName()] = map[string]bool{}
			}
			ms[name][l.GetName()][l.GetValue()] = true
		}
		for _, l := range extra {
			if ms[name][l] == nil {
				ms[name][l] = map[string]bool{}
			}
		}
	}
	for name, f := range families {
		for _, m := range f.GetMetric() {
			switch f.GetType() {
			case dto.MetricType_HISTOGRAM:
				add(name+"_bucket", m, "le")
				add(name+"_sum", m)
				add(name+"_count", m)
				for _, b := range m.GetHistogram().GetBucket() {
					ms[name+"_bucket"]["le"][strconv.FormatFloat(b.GetUpperBound(), 'g', -1, 64)] = true
				}
			case dto.MetricType_SUMMARY:
				add(name, m, "quantile")
				add(name+"_sum", m)
				add(name+"_count", m)
			default:
				add(name, m)
			}
		}
	}
	return ms, nil
}

// labelValues are the values a label of extauthz's may take beyond those
// the scrape showed: every reason (authz.Reasons), both decisions.
func labelValues(ms metricSet, metric, label string) []string {
	var vals []string
	for v := range ms[metric][label] {
		vals = append(vals, v)
	}
	switch label {
	case "reason":
		for _, r := range authz.Reasons() {
			vals = append(vals, string(r))
		}
		vals = append(vals, "(overflow)")
	case "decision":
		vals = append(vals, "allow", "deny")
	case "status":
		for s := 200; s < 600; s++ {
			vals = append(vals, strconv.Itoa(s))
		}
	case "tenant":
		// Its fixed values (a single-tenant run names none of them).
		vals = append(vals, metrics.TenantUnverified, metrics.TenantOverflow)
	}
	return vals
}

var promql = parser.NewParser(parser.Options{})

// checkExpr parses a PromQL expression and checks every metric and label
// name it uses, and the values its matchers ask for, against the real
// /metrics.
func checkExpr(ms metricSet, expr string) []string {
	e, err := promql.ParseExpr(expr)
	if err != nil {
		return []string{fmt.Sprintf("does not parse: %v", err)}
	}
	var probs []string
	var metrics []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		vs, ok := n.(*parser.VectorSelector)
		if !ok {
			return nil
		}
		name := vs.Name
		metrics = append(metrics, name)
		known := func(label string) (values []string, ok bool) {
			if l, ok := ms[name]; ok {
				if _, has := l[label]; has {
					return labelValues(ms, name, label), true
				}
				return nil, slices.Contains(targetLabels, label)
			}
			if l, ok := external[name]; ok {
				return nil, slices.Contains(l, label)
			}
			return nil, false
		}
		_, isOurs := ms[name]
		_, isExternal := external[name]
		if !isOurs && !isExternal {
			probs = append(probs, fmt.Sprintf("metric %s is not in extauthz's /metrics", name))
			return nil
		}
		for _, m := range vs.LabelMatchers {
			if m.Name == model.MetricNameLabel {
				continue
			}
			values, ok := known(m.Name)
			if !ok {
				probs = append(probs, fmt.Sprintf("%s has no label %q", name, m.Name))
				continue
			}
			if values == nil || m.Type == labels.MatchNotEqual || m.Type == labels.MatchNotRegexp {
				continue
			}
			if !slices.ContainsFunc(values, m.Matches) {
				probs = append(probs, fmt.Sprintf("%s{%s}: matches none of the values it takes (%v)", name, m, values))
			}
		}
		return nil
	})
	// Labels an aggregation keeps must be on what it aggregates.
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		agg, ok := n.(*parser.AggregateExpr)
		if !ok {
			return nil
		}
		var inner []string
		parser.Inspect(agg.Expr, func(n parser.Node, _ []parser.Node) error {
			if vs, ok := n.(*parser.VectorSelector); ok {
				inner = append(inner, vs.Name)
			}
			return nil
		})
		for _, l := range agg.Grouping {
			found := slices.Contains(targetLabels, l)
			for _, m := range inner {
				_, a := ms[m][l]
				b := slices.Contains(external[m], l)
				found = found || a || b
			}
			if !found {
				probs = append(probs, fmt.Sprintf("by (%s): no label %q on %v", strings.Join(agg.Grouping, ", "), l, inner))
			}
		}
		return nil
	})
	if len(metrics) == 0 {
		probs = append(probs, "selects no metric")
	}
	return probs
}
