package verify_test

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
)

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
