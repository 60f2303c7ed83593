package verify_test

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/labels"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"sigs.k8s.io/yaml"

	"github.com/extauthz/extauthz/internal/deploycheck"
	"github.com/extauthz/extauthz/internal/e2e"
	"github.com/extauthz/extauthz/internal/redistest"
	"github.com/extauthz/extauthz/pkg/authz"
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

// TestAlertsUseRealMetrics: every alert expression parses, passes
// Prometheus's own rule file validation (rulefmt: names, labels, annotation
// templates), and uses only metrics and labels extauthz's real /metrics
// has (or kube-state-metrics' replicas). The plain file is the chart's
// PrometheusRule for deploy/kyma's names.
func TestAlertsUseRealMetrics(t *testing.T) {
	in := decode(t, mustRender(t, release{valuesFile: "ci/multitenant-xsuaa-values.yaml"}))
	if in.rule == nil {
		t.Fatal("no PrometheusRule rendered")
	}
	want := &monitoringv1.PrometheusRule{TypeMeta: in.rule.TypeMeta, Spec: in.rule.Spec}
	want.Name, want.Namespace, want.Labels = in.rule.Name, in.rule.Namespace, map[string]string{"app.kubernetes.io/name": "extauthz"}
	rendered, err := yaml.Marshal(want)
	if err != nil {
		t.Fatal(err)
	}
	rendered = append([]byte(rulesHeader), rendered...)
	if *update {
		if err := os.WriteFile(rulesFile, rendered, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	shipped, err := os.ReadFile(rulesFile)
	if err != nil {
		t.Fatal(err)
	}
	var plain monitoringv1.PrometheusRule
	if err := deploycheck.Strict(shipped, &plain); err != nil {
		t.Fatalf("%s: %v", rulesFile, err)
	}
	if jsonOf(plain) != jsonOf(want) {
		t.Fatalf("%s is not the chart's PrometheusRule for deploy/kyma's names: go test ./deploy/verify -run Alerts -update", rulesFile)
	}

	groups, err := yaml.Marshal(map[string]any{"groups": plain.Spec.Groups})
	if err != nil {
		t.Fatal(err)
	}
	if _, errs := rulefmt.Parse(groups, false, model.UTF8Validation, promql, slog.New(slog.DiscardHandler)); len(errs) > 0 {
		t.Fatalf("Prometheus refuses the rules: %v", errs)
	}
	ms := realMetrics(t)
	var alerts []string
	for _, g := range plain.Spec.Groups {
		for _, r := range g.Rules {
			alerts = append(alerts, r.Alert)
			for _, p := range checkExpr(ms, r.Expr.String()) {
				t.Errorf("alert %s: %s", r.Alert, p)
			}
			if r.Labels["severity"] == "" || r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
				t.Errorf("alert %s: severity, summary and description are required", r.Alert)
			}
		}
	}
	for _, want := range []string{"ExtauthzStoreUnavailable", "ExtauthzErrorRatioHigh", "ExtauthzLatencyOverEnvoyTimeout", "ExtauthzIdPUnavailable", "ExtauthzReplicasNotReady"} {
		if !slices.Contains(alerts, want) {
			t.Errorf("no alert %s (have %v)", want, alerts)
		}
	}
}

const rulesHeader = `# extauthz's alerts for the Prometheus operator (kubectl apply -f), the
# chart's PrometheusRule (monitoring.prometheusRule.enabled) for the names of
# deploy/kyma: namespace my-app, Deployment extauthz (CHANGE-ME in the two
# replica alerts). Plain Prometheus: put spec's groups in a rule file.
# Generated: go test ./deploy/verify -run Alerts -update
`

// TestLatencyAlertMatchesEnvoyTimeout: the latency alert's threshold is the
// ext_authz timeout of the shipped Istio and Envoy configurations, and the
// latency histogram has a bucket beyond it (histogram_quantile answers no
// more than the largest finite bucket).
func TestLatencyAlertMatchesEnvoyTimeout(t *testing.T) {
	var timeouts []string
	for _, f := range []string{"../kyma/istio-kyma.yaml", "../kyma/istio-meshconfig.yaml", "../../envoy/front-proxy-grpc.yaml", "../../envoy/front-proxy-http.yaml", "../../envoy/sidecar.yaml", "../compose/envoy.yaml", "../cf/router/envoy.yaml"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range regexp.MustCompile(`(?m)^\s*timeout:\s*(\S+)\s*(#.*)?$`).FindAllStringSubmatch(string(b), -1) {
			timeouts = append(timeouts, f+": "+m[1])
		}
	}
	var envoyTimeout float64
	for _, tt := range timeouts {
		_, v, _ := strings.Cut(tt, ": ")
		d, err := time.ParseDuration(v)
		if err != nil {
			t.Fatalf("%s: %v", tt, err)
		}
		if envoyTimeout == 0 {
			envoyTimeout = d.Seconds()
		}
		if d.Seconds() != envoyTimeout {
			t.Errorf("the shipped configurations disagree on the ext_authz timeout: %v", timeouts)
		}
	}
	if envoyTimeout == 0 {
		t.Fatal("no ext_authz timeout found in the shipped configurations")
	}
	in := decode(t, mustRender(t, release{valuesFile: "ci/multitenant-xsuaa-values.yaml"}))
	var threshold float64
	for _, g := range in.rule.Spec.Groups {
		for _, r := range g.Rules {
			if r.Alert != "ExtauthzLatencyOverEnvoyTimeout" {
				continue
			}
			e, err := promql.ParseExpr(r.Expr.String())
			if err != nil {
				t.Fatal(err)
			}
			b, ok := e.(*parser.BinaryExpr)
			if !ok || b.Op != parser.GTR {
				t.Fatalf("%s: want histogram_quantile(...) > <timeout>", r.Expr.String())
			}
			threshold = b.RHS.(*parser.NumberLiteral).Val
		}
	}
	if threshold != envoyTimeout {
		t.Errorf("latency alert threshold %vs, the shipped ext_authz timeout %vs", threshold, envoyTimeout)
	}
	var buckets []float64
	for le := range realMetrics(t)["extauthz_check_duration_seconds_bucket"]["le"] {
		if v, err := strconv.ParseFloat(le, 64); err == nil && v < 1e300 {
			buckets = append(buckets, v)
		}
	}
	slices.Sort(buckets)
	if len(buckets) == 0 || buckets[len(buckets)-1] <= threshold {
		t.Errorf("latency buckets %v: p99 can never be seen above %vs", buckets, threshold)
	}
}

// grafana is the part of a dashboard the test reads.
type grafana struct {
	UID        string `json:"uid"`
	Title      string `json:"title"`
	Templating struct {
		List []struct {
			Name  string `json:"name"`
			Type  string `json:"type"`
			Query any    `json:"query"`
		} `json:"list"`
	} `json:"templating"`
	Panels []panel `json:"panels"`
}

type panel struct {
	ID      int     `json:"id"`
	Type    string  `json:"type"`
	Title   string  `json:"title"`
	Panels  []panel `json:"panels"`
	Targets []struct {
		Expr  string `json:"expr"`
		RefID string `json:"refId"`
	} `json:"targets"`
	GridPos struct{ H, W, X, Y int } `json:"gridPos"`
}

// grafanaVars replaces Grafana's variables by what they expand to.
var grafanaVars = strings.NewReplacer("$__rate_interval", "5m", "$__interval", "1m", "$__range", "1h",
	"$namespace", ".*", "$job", ".*", "$tenant", ".*", "${datasource}", "prometheus")

// TestDashboardUsesRealMetrics: every query of the Grafana dashboard (and
// of its variables) parses as PromQL and uses only metrics and labels the
// real /metrics has; the panels the README promises are there; the chart
// ships the same file.
func TestDashboardUsesRealMetrics(t *testing.T) {
	b, err := os.ReadFile(dashboardFile)
	if err != nil {
		t.Fatal(err)
	}
	if c, err := os.ReadFile(filepath.Join(chartDir, "files", "extauthz-dashboard.json")); err != nil || string(c) != string(b) {
		t.Errorf("the chart's files/extauthz-dashboard.json is not %s (cp it)", dashboardFile)
	}
	var d grafana
	if err := json.Unmarshal(b, &d); err != nil {
		t.Fatal(err)
	}
	if d.UID == "" || d.Title == "" {
		t.Error("the dashboard needs a uid and a title")
	}
	ms := realMetrics(t)
	var panels []panel
	var walk func([]panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			panels = append(panels, p)
			walk(p.Panels)
		}
	}
	walk(d.Panels)
	ids, titles := map[int]bool{}, map[string]bool{}
	queries := 0
	for _, p := range panels {
		if ids[p.ID] {
			t.Errorf("panel id %d twice", p.ID)
		}
		ids[p.ID] = true
		titles[p.Title] = true
		if p.Type != "row" && len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		if p.GridPos.W == 0 || p.GridPos.H == 0 || p.GridPos.X+p.GridPos.W > 24 {
			t.Errorf("panel %q: gridPos %+v", p.Title, p.GridPos)
		}
		for _, tg := range p.Targets {
			queries++
			expr := grafanaVars.Replace(tg.Expr)
			for _, prob := range checkExpr(ms, expr) {
				t.Errorf("panel %q, query %s: %s\n  %s", p.Title, tg.RefID, prob, tg.Expr)
			}
		}
	}
	for _, v := range d.Templating.List {
		q, _ := v.Query.(map[string]any)
		s, _ := q["query"].(string)
		if v.Type != "query" {
			continue
		}
		m := regexp.MustCompile(`^label_values\((.*), (\w+)\)$`).FindStringSubmatch(s)
		if m == nil {
			t.Errorf("variable %s: %q is not label_values(selector, label)", v.Name, s)
			continue
		}
		for _, prob := range checkExpr(ms, grafanaVars.Replace(fmt.Sprintf("count by (%s) (%s)", m[2], m[1]))) {
			t.Errorf("variable %s: %s", v.Name, prob)
		}
	}
	for _, want := range []string{"Checks/s by decision and reason", "Check latency", "Store errors/s", "Readiness by replica", "Logins", "Refreshes",
		"Identity provider failures", "Session cache hit ratio", "Checks/s by tenant"} {
		if !titles[want] {
			t.Errorf("no panel %q", want)
		}
	}
	t.Logf("%d panels, %d queries checked against %d metrics", len(panels), queries, len(ms))
}

// TestCheckExprRefuses: the check above finds what it is for.
func TestCheckExprRefuses(t *testing.T) {
	ms := realMetrics(t)
	for expr, want := range map[string]string{
		`rate(extauthz_check_total[5m])`:                                      "not in extauthz's /metrics",
		`rate(extauthz_checks_total{tenants="a"}[5m])`:                        `no label "tenants"`,
		`rate(extauthz_checks_total{reason="redis_down"}[5m])`:                "matches none",
		`rate(extauthz_checks_total{reason=~"refresh_fail.*"}[5m])`:           "matches none",
		`sum by (op) (rate(extauthz_checks_total[5m]))`:                       `no label "op"`,
		`rate(extauthz_session_cache_requests_total{result="hits"}[5m])`:      "matches none",
		`kube_deployment_status_replicas_available{deployment_name="x"}`:      `no label "deployment_name"`,
		`histogram_quantile(0.99, rate(extauthz_check_duration_seconds[5m]))`: "not in extauthz's /metrics",
		`sum(rate(extauthz_checks_total[5m])`:                                 "does not parse",
	} {
		probs := checkExpr(ms, expr)
		if !slices.ContainsFunc(probs, func(p string) bool { return strings.Contains(p, want) }) {
			t.Errorf("%s: %v, want a problem saying %q", expr, probs, want)
		}
	}
	if probs := checkExpr(ms, `sum by (namespace, reason) (rate(extauthz_checks_total{reason=~"refresh_.*", decision="deny"}[5m]))`); len(probs) > 0 {
		t.Errorf("a good expression: %v", probs)
	}
}
