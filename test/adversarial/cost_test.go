package adversarial_test

import (
	"context"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/e2e"
)

func randLabel(n int) string {
	const letters = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	for i := range b {
		b[i] = letters[rand.IntN(len(letters))]
	}
	return string(b)
}

// parallel runs f(i) for i in [0,n) on k workers.
func parallel(n, k int, f func(i int)) {
	var wg sync.WaitGroup
	next := make(chan int)
	for range k {
		wg.Go(func() {
			for i := range next {
				f(i)
			}
		})
	}
	for i := range n {
		next <- i
	}
	close(next)
	wg.Wait()
}

// TestAnonymousTrafficWritesNothing (issue 11 class 3): anonymous
// navigations, scripts, forged cookies and unknown login states add no key
// to Redis.
func TestAnonymousTrafficWritesNothing(t *testing.T) {
	x := start(t, "anon", "EXTAUTHZ_REDIS_URL", "redis://"+redisB.Addr, "EXTAUTHZ_LOG_LEVEL", "info")
	before := dbsize(t, redisB.Addr)
	const n = 400
	var mu sync.Mutex
	statuses := map[string]int{}
	parallel(n, 8, func(i int) {
		p := protocols[i%2]
		var q hreq
		switch i % 8 {
		case 0, 1, 2, 3: // a browser navigation: the login redirect
			q = navigation("localhost:8443", fmt.Sprintf("/page/%d?q=%s", i, randLabel(8)))
		case 4: // a script
			q = ajax("/api/"+randLabel(6), "")
		case 5: // a forged session cookie
			q = navigation("localhost:8443", "/x").with("cookie", "JSESSIONID="+randLabel(60))
		case 6: // a callback with an unknown state
			q = navigation("localhost:8443", "/login/callback?code="+randLabel(20)+"&state="+randLabel(32))
		case 7: // a forged state cookie with it
			st := randLabel(32)
			q = navigation("localhost:8443", "/login/callback?code=x&state="+st).with("cookie", "JSESSIONID_login_"+st[:10]+"="+randLabel(40))
		}
		r := p.do(x, q)
		mu.Lock()
		statuses[fmt.Sprintf("%s %d", p.name, r.Status)]++
		mu.Unlock()
	})
	added := dbsize(t, redisB.Addr) - before
	t.Logf("MEASURE anonymous requests: %d (half navigations to the login) -> Redis keys added: %d (goal 0); answers %v", n, added, statuses)
	if added != 0 {
		t.Errorf("%d anonymous requests added %d keys to Redis, want 0", n, added)
	}
	if statuses["grpc 302"] == 0 || statuses["http 302"] == 0 {
		t.Errorf("no login redirects among the answers (%v): the measurement is void", statuses)
	}

	// Information for the report: a login started and its callback played
	// with a bogus code costs the single-use marker, if any.
	before = dbsize(t, redisB.Addr)
	const m = 20
	parallel(m, 4, func(i int) {
		b := e2e.NewBrowser("nobody", x.Extauthz, hydra)
		hydraMu.Lock()
		defer hydraMu.Unlock()
		_, hops, err := b.NavigateUntil(context.Background(), app+"/x", func(u *url.URL) bool { return u.Host == e2e.LoginHost })
		if err != nil || len(hops) < 2 {
			t.Errorf("login start: %v %v", err, hops)
			return
		}
		au, _ := url.Parse(hops[1])
		state := au.Query().Get("state")
		if _, err := b.Do(context.Background(), "GET", app+"/login/callback?code=bogus&state="+url.QueryEscape(state), nil); err != nil {
			t.Error(err)
		}
	})
	t.Logf("MEASURE %d logins started and called back with a bogus code -> Redis keys added: %d", m, dbsize(t, redisB.Addr)-before)
	x.requireAlive(t)
}

// snapshot is a copy of a browser's cookies for a URL.
func snapshot(b *e2e.Browser, rawURL string) []*http.Cookie { return b.Cookies(rawURL) }

func cookieHeader(cs []*http.Cookie) string {
	var parts []string
	for _, c := range cs {
		parts = append(parts, c.Name+"="+c.Value)
	}
	return strings.Join(parts, "; ")
}

// TestLoginStateSingleUse (issue 11 class 3): logins in two tabs at once
// both complete; a state used once is refused afterwards, on any replica and
// protocol, before the code reaches the identity provider.
func TestLoginStateSingleUse(t *testing.T) {
	ctx := context.Background()
	x := start(t, "tabs", "EXTAUTHZ_REDIS_URL", "redis://"+redisB.Addr)
	y := start(t, "tabs2", "EXTAUTHZ_REDIS_URL", "redis://"+redisB.Addr, "EXTAUTHZ_SESSION_KEY_PREFIX", "adv-tabs")
	b := e2e.NewBrowser("tabby@example.com", x.Extauthz, hydra)
	atCallback := func(u *url.URL) bool { return u.Path == "/login/callback" }
	_, hops1, err := b.NavigateUntil(ctx, app+"/one?x=1", atCallback)
	if err != nil {
		t.Fatal(err)
	}
	_, hops2, err := b.NavigateUntil(ctx, app+"/two", atCallback)
	if err != nil {
		t.Fatal(err)
	}
	cb1, cb2 := hops1[len(hops1)-1], hops2[len(hops2)-1]
	if !strings.Contains(cb1, "/login/callback?") || !strings.Contains(cb2, "/login/callback?") {
		t.Fatalf("logins did not reach the callback: %v / %v", hops1, hops2)
	}
	stateCookies := snapshot(b, cb1)

	// Tab two completes first, then tab one.
	for _, c := range []struct{ cb, back string }{{cb2, "/two"}, {cb1, "/one?x=1"}} {
		r, err := b.Do(ctx, "GET", c.cb, nil)
		if err != nil || r.Status != http.StatusFound || r.Header.Get("location") != c.back || !setsCookie(r.Header, "JSESSIONID") {
			t.Fatalf("callback of the tab at %s: %v %v, want 302 back there with a session cookie", c.back, r, err)
		}
	}
	if r := viaGRPC(x, ajax("/api", b.Cookie(app, "JSESSIONID"))); r.Status != 200 || r.Bearer() == "" {
		t.Fatalf("after two logins in two tabs: %s", r)
	}

	// Replays of tab one's callback with its state cookie.
	grants := hydra.CodeGrants.Load()
	u1, _ := url.Parse(cb1)
	state := u1.Query().Get("state")
	bogus := app + "/login/callback?code=" + randLabel(43) + "&state=" + url.QueryEscape(state)
	for _, replay := range []struct {
		name, url string
		x         *instance
		proto     protocol
	}{
		{"same URL, grpc", cb1, x, protocols[0]},
		{"same URL, http", cb1, x, protocols[1]},
		{"same URL, other replica", cb1, y, protocols[0]},
		{"same state, another code", bogus, x, protocols[0]},
		{"same state, another code, other replica, http", bogus, y, protocols[1]},
	} {
		u, _ := url.Parse(replay.url)
		q := navigation(u.Host, u.RequestURI()).with("cookie", cookieHeader(stateCookies))
		r := replay.proto.do(replay.x, q)
		if r.Status < 400 || r.Status >= 500 || r.Allowed || setsCookie(r.Header, "JSESSIONID") || r.Header.Get("location") != "" {
			t.Errorf("replay (%s): %s, want a 4xx without a session", replay.name, r)
		}
	}
	// The single use is marked after the exchange (so that nobody without
	// a login at the IdP makes extauthz write): a replay may reach the IdP,
	// once — one token call, never x/oauth2's second try with the other
	// client authentication — and never becomes a session.
	n := hydra.CodeGrants.Load() - grants
	t.Logf("MEASURE 5 replayed callbacks -> code grants at the IdP: %d", n)
	if n > 5 {
		t.Errorf("5 replayed callbacks made %d code grants at the IdP, want at most one each", n)
	}
}

// TestTenantFlood (issue 11 class 3): random tenant hosts in multitenant
// mode add no metric series, cost a bounded number of outbound fetches
// (failures cached, one fetch per tenant at a time), write nothing to Redis,
// and do not keep the known tenant from logging in.
func TestTenantFlood(t *testing.T) {
	x := start(t, "mt",
		"EXTAUTHZ_REDIS_URL", "redis://"+redisB.Addr,
		"EXTAUTHZ_OIDC_ISSUER", idpRouter.URL+"/{tenant}",
		"TENANT_HOST_PATTERN", `^(.*)\.app\.localhost$`,
		"EXTAUTHZ_LOG_LEVEL", "info")
	ctx := context.Background()
	// The known tenant logs in first: its series exist.
	loginAt(t, x, tenantApp, "alice@tenant-a.example")

	series0 := x.checkSeries(t)
	rss0, _ := x.memory(t)
	db0 := dbsize(t, redisB.Addr)

	// One fresh unknown tenant: how many fetches one login attempt costs.
	probe := "probe" + randLabel(8)
	r := viaGRPC(x, navigation(probe+".app.localhost:8443", "/"))
	_, k := idpRouter.fetches(probe)
	t.Logf("one login on an unknown tenant: %s; outbound fetches: %d", r, k)
	if r.Allowed || r.Status != http.StatusNotFound {
		t.Errorf("a login on a tenant whose identity provider 404s: %s, want 404 (no such tenant, not an outage)", r)
	}
	if k < 1 {
		t.Fatalf("the unknown tenant's identity provider was never asked: the measurement is void")
	}

	// The same unknown tenant, 20 at once and then 10 more: fetched at most
	// as often as once (failure cached, one fetch at a time).
	hammer := "hammer" + randLabel(8)
	parallel(20, 20, func(i int) { protocols[i%2].do(x, navigation(hammer+".app.localhost:8443", "/")) })
	for i := range 10 {
		protocols[i%2].do(x, navigation(hammer+".app.localhost:8443", "/"))
	}
	if _, n := idpRouter.fetches(hammer); n > k {
		t.Errorf("30 requests for one unknown tenant made %d outbound fetches, want at most %d (as one request)", n, k)
	}

	// 300 random tenants, twice each, logging in; 3000 random tenants' scripts.
	total0, _ := idpRouter.fetches("")
	tenants := make([]string, 300)
	for i := range tenants {
		tenants[i] = "t" + randLabel(12)
	}
	t0 := time.Now()
	parallel(600, 8, func(i int) {
		protocols[i%2].do(x, navigation(tenants[i%300]+".app.localhost:8443", "/x"))
	})
	parallel(3000, 8, func(i int) {
		q := ajax("/api", "")
		q.Host = "s" + randLabel(12) + ".app.localhost:8443"
		protocols[i%2].do(x, q)
	})
	took := time.Since(t0)
	total1, _ := idpRouter.fetches("")
	series1 := x.checkSeries(t)
	rss1, peak1 := x.memory(t)
	db1 := dbsize(t, redisB.Addr)
	t.Logf("MEASURE random tenant hosts: 300 logging in (x2) + 3000 scripts in %s -> checks_total series %d -> %d; RSS %d -> %d KiB (peak %d); outbound fetches %d (bound %d); Redis keys added %d",
		took.Round(time.Millisecond), len(series0), len(series1), rss0, rss1, peak1, total1-total0, 300*k, db1-db0)
	if grown := len(series1) - len(series0); grown > 5 {
		t.Errorf("random tenants added %d extauthz_checks_total series, want a flat count (at most a few overflow/reason series)", grown)
	}
	joined := strings.Join(series1, "\n")
	for _, tn := range append(tenants, probe, hammer) {
		if strings.Contains(joined, tn) {
			t.Errorf("/metrics names the unverified tenant %q", tn)
			break
		}
	}
	if total1-total0 > 300*k {
		t.Errorf("300 unknown tenants, two logins each: %d outbound fetches, want at most %d (failures cached)", total1-total0, 300*k)
	}
	if db1 != db0 {
		t.Errorf("random tenants added %d Redis keys, want 0", db1-db0)
	}
	// Unknown tenants are not an outage: no warning, no idp_unavailable
	// (which the shipped alerts page on).
	if n := strings.Count(readFile(x.logPath), "identity provider unavailable"); n > 0 {
		t.Errorf("random tenants wrote %d \"identity provider unavailable\" warnings, want 0", n)
	}
	if strings.Contains(joined, `reason="idp_unavailable"`) {
		t.Error("random tenants counted as idp_unavailable")
	}
	// The known tenant still logs in, and its session works.
	b, cookie := loginAt(t, x, tenantApp, "bob@tenant-a.example")
	_ = b
	q := ajax("/api", cookie)
	q.Host = "tenant-a.app.localhost:8443"
	if r := viaGRPC(x, q); r.Status != 200 || r.Bearer() == "" {
		t.Errorf("the known tenant after the flood: %s", r)
	}
	x.requireAlive(t)
	_ = ctx
}

// floodLines returns n header lines name: value filling about size bytes.
