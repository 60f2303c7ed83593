package metrics

import (
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"net/http/httptest"
	"regexp"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/extauthz/extauthz/pkg/authz"
	"github.com/extauthz/extauthz/pkg/session"
)

// checkSeries counts the series of extauthz_checks_total, as a scrape
// would, and returns them by tenant label.
func checkSeries(t *testing.T, m *Metrics) (int, map[string]int) {
	t.Helper()
	families, err := m.registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	n, byTenant := 0, map[string]int{}
	for _, f := range families {
		if f.GetName() != "extauthz_checks_total" {
			continue
		}
		for _, s := range f.GetMetric() {
			n++
			for _, l := range s.GetLabel() {
				if l.GetName() == "tenant" {
					byTenant[l.GetValue()]++
				}
			}
		}
	}
	return n, byTenant
}

func heapInUse() uint64 {
	var ms runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&ms)
	return ms.HeapInuse
}

// TestRandomTenantsAddNoSeries: 50,000 hosts of random tenants, the
// anonymous traffic of issue 11 (each once a permanent series), add no
// series and no memory.
func TestRandomTenantsAddNoSeries(t *testing.T) {
	m := New(Options{})
	observe := func(tenant string, verified bool, status int, reason authz.Reason) {
		m.ObserveCheck(&authz.Decision{Status: status, Reason: reason, Tenant: tenant, TenantVerified: verified}, time.Millisecond)
	}
	anonymous := func(tenant string) {
		observe(tenant, false, 302, "login_redirect")
		observe(tenant, false, 401, "no_session")
		observe(tenant, false, 400, "callback_unknown_state")
	}
	anonymous("warmup")
	m.ObserveCheck(&authz.Decision{Allow: true, Status: 200, Reason: "session", Tenant: "acme", TenantVerified: true}, time.Millisecond)
	before, _ := checkSeries(t, m)
	heapBefore := heapInUse()
	for range 50_000 {
		anonymous(fmt.Sprintf("t%016x", rand.Uint64()))
	}
	after, byTenant := checkSeries(t, m)
	heapAfter := heapInUse()
	t.Logf("series: %d before, %d after 50,000 random tenants; heap in use %d KB -> %d KB", before, after, heapBefore>>10, heapAfter>>10)
	if after != before {
		t.Fatalf("50,000 random tenants: %d series, %d before (%v)", after, before, byTenant)
	}
	if byTenant["acme"] != 1 || byTenant[TenantUnverified] != 3 {
		t.Fatalf("series by tenant: %v", byTenant)
	}
	if heapAfter > heapBefore+1<<20 {
		t.Fatalf("heap grew from %d KB to %d KB", heapBefore>>10, heapAfter>>10)
	}
}

// TestTenantLabelCap: verified tenants are named up to MaxTenants, first
// come; later ones share the overflow value; named ones stay named.
func TestTenantLabelCap(t *testing.T) {
	m := New(Options{MaxTenants: 3})
	c := m.checks
	label := func(tenant string, verified bool) string {
		return c.tenantLabel(&authz.Decision{Tenant: tenant, TenantVerified: verified})
	}
	for _, tc := range []struct {
		tenant   string
		verified bool
		want     string
	}{
		{"", false, ""}, {"", true, ""},
		{"a", false, TenantUnverified}, {"a", true, "a"}, {"b", true, "b"}, {"a", true, "a"}, {"c", true, "c"},
		{"d", true, TenantOverflow}, {"d", false, TenantUnverified}, {"b", true, "b"}, {"e", true, TenantOverflow},
	} {
		if got := label(tc.tenant, tc.verified); got != tc.want {
			t.Errorf("tenant %q verified %v: label %q, want %q", tc.tenant, tc.verified, got, tc.want)
		}
	}
	for i := range 1000 {
		m.ObserveCheck(&authz.Decision{Allow: true, Status: 200, Reason: "session", Tenant: fmt.Sprint("v", i), TenantVerified: true}, 0)
	}
	n, byTenant := checkSeries(t, m)
	// a, b and c hold the names: the 1000 share one series, besides the
	// two fixed ones of the label set cap.
	if byTenant[TenantOverflow] != 3 || n != 3 {
		t.Fatalf("1000 verified tenants over a cap of 3: %d series %v", n, byTenant)
	}
}

// TestLabelSetCap: should statuses ever vary with the request, the label
// sets stop at their cap and the rest is counted as overflow.
func TestLabelSetCap(t *testing.T) {
	m := New(Options{MaxTenants: 1})
	reasons := authz.Reasons()
	for i := range 10_000 {
		m.ObserveCheck(&authz.Decision{Status: 400 + i%200, Reason: reasons[i%len(reasons)]}, 0)
	}
	n, _ := checkSeries(t, m)
	if want := m.checks.maxSets + 2; n != want {
		t.Fatalf("%d series, want the cap %d + the 2 overflow series", n, want-2)
	}
}

// TestObserveCheckConcurrently: admissions race safely (run with -race).
func TestObserveCheckConcurrently(t *testing.T) {
	m := New(Options{MaxTenants: 10})
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Go(func() {
			for i := range 2000 {
				m.ObserveCheck(&authz.Decision{Allow: i%2 == 0, Status: 200, Reason: "session", Tenant: fmt.Sprint("t", (g*2000+i)%50), TenantVerified: true}, 0)
			}
		})
	}
	wg.Wait()
	_, byTenant := checkSeries(t, m)
	named := 0
	for k := range byTenant {
		if k != TenantOverflow {
			named++
		}
	}
	if named != 10 {
		t.Fatalf("%d tenants named, want 10: %v", named, byTenant)
	}
}

// TestReasonLabelsAreClosed: /metrics shows a reason label value of
// authz.Reasons, or the fixed overflow value, and nothing else, whatever
// the decisions observed: a reason that is not one of the constants (a
// conversion, a typo) is counted as overflow and never becomes a label.
func TestReasonLabelsAreClosed(t *testing.T) {
	m := New(Options{MaxTenants: 2})
	for _, r := range authz.Reasons() {
		for _, allow := range []bool{false, true} {
			m.ObserveCheck(&authz.Decision{Allow: allow, Status: 200, Reason: r, Tenant: "acme", TenantVerified: true}, 0)
		}
	}
	for i := range 1000 {
		bogus := authz.Reason(fmt.Sprint("from-the-request-", i))
		m.ObserveCheck(&authz.Decision{Status: 400, Reason: bogus}, 0)
		m.ObserveCheck(&authz.Decision{Allow: true, Status: 200, Reason: bogus, Tenant: "acme", TenantVerified: true}, 0)
	}
	m.ObserveCheck(&authz.Decision{Status: 500}, 0) // no reason at all

	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Result().Body)
	seen := map[string]bool{}
	for _, mm := range regexp.MustCompile(`(?m)^extauthz_checks_total\{.*reason="([^"]*)"`).FindAllStringSubmatch(string(body), -1) {
		seen[mm[1]] = true
	}
	allowed := map[string]bool{TenantOverflow: true}
	for _, r := range authz.Reasons() {
		allowed[string(r)] = true
		if !seen[string(r)] {
			t.Errorf("reason %q was observed but /metrics does not show it", r)
		}
	}
	for r := range seen {
		if !allowed[r] {
			t.Errorf("/metrics shows reason %q, which is not one of authz.Reasons", r)
		}
	}
	if !seen[TenantOverflow] {
		t.Errorf("decisions of unknown reasons are not counted as %s", TenantOverflow)
	}
	if got := slices.Sorted(maps.Keys(seen)); len(got) != len(authz.Reasons())+1 {
		t.Errorf("reason labels on /metrics: %v", got)
	}
}

func TestSessionCacheMetrics(t *testing.T) {
	m := New(Options{})
	m.WatchSessionCache(func() session.CacheStats {
		return session.CacheStats{Hits: 90, Misses: 8, Stale: 2, Touches: 5, TouchErrors: 1, Entries: 3, Bytes: 12000, ChannelUp: true}
	})
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	for _, want := range []string{
		`extauthz_session_cache_requests_total{result="hit"} 90`, `extauthz_session_cache_requests_total{result="miss"} 8`,
		`extauthz_session_cache_requests_total{result="stale"} 2`, `extauthz_session_cache_touches_total{result="ok"} 4`,
		`extauthz_session_cache_touches_total{result="error"} 1`, "extauthz_session_cache_entries 3",
		"extauthz_session_cache_bytes 12000", "extauthz_session_cache_channel_up 1",
	} {
		if !strings.Contains(rec.Body.String(), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}
