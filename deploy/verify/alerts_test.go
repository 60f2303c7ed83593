package verify_test

import (
	"log/slog"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"sigs.k8s.io/yaml"

	"github.com/extauthz/extauthz/internal/deploycheck"
)

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
