package authz_test

import (
	"context"
	"fmt"

	"net/http"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/extauthz/extauthz/pkg/authz"
	"github.com/extauthz/extauthz/pkg/idp"
	"github.com/extauthz/extauthz/pkg/policy"
	"github.com/extauthz/extauthz/proto/sessionpb"
)

// A method spelled so that xs-app.json's upper-case httpMethods and scope
// keys miss it, while the upstream may serve it as the upper-case method
// ("delete" is DELETE to ASP.NET Core and Flask), is refused: never
// decided by the next route or the scope's default.
func TestMethodSpellingsCannotDodgeRoutes(t *testing.T) {
	ctx := context.Background()
	pol, err := policy.Parse([]byte(`{"routes":[
		{"source":"^/admin/","httpMethods":["DELETE","POST"],"scope":"app.Admin"},
		{"source":"^/admin/"},
		{"source":"^/api/","scope":{"GET":"app.Viewer","DELETE":"app.Admin","default":"app.Viewer"}},
		{"source":"^/public/","authenticationType":"none"}]}`), "")
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, authz.Options{Policy: pol})
	c := f.newSession(t, &sessionpb.Session{AccessToken: "tok", Scopes: []string{"app.Viewer"}, CsrfToken: "csrf"})
	check := func(method, path, cookie string) *authz.Decision {
		r := get(path, cookie, "x-csrf-token", "csrf")
		r.Method = method
		return f.engine.Check(ctx, r)
	}
	for _, m := range []string{"DELETE", "POST"} {
		if d := check(m, "/admin/x", "JSESSIONID="+c); d.Allow || d.Reason != "missing_scope" {
			t.Errorf("%s /admin/x without app.Admin: %d %s, want 403 missing_scope", m, d.Status, d.Reason)
		}
	}
	if d := check("DELETE", "/api/x", "JSESSIONID="+c); d.Allow || d.Reason != "missing_scope" {
		t.Errorf("DELETE /api/x without app.Admin: %d %s, want 403 missing_scope", d.Status, d.Reason)
	}
	for _, m := range []string{"delete", "Delete", "post", "pOST", "dElEtE", "", "GET ", " GET", "GET\x00", "G/T", "GET\r\nX", "(GET)", strings.Repeat("A", 33), "DELETE\xff"} {
		for _, p := range []string{"/admin/x", "/api/x", "/public/x"} {
			for _, cookie := range []string{"", "JSESSIONID=" + c} {
				if d := check(m, p, cookie); d.Allow || d.Status != http.StatusBadRequest || d.Reason != "bad_method" {
					t.Errorf("%q %s (cookie %v): %d %s, want 400 bad_method", m, p, cookie != "", d.Status, d.Reason)
				}
			}
		}
	}
	// Extension methods in upper case are decided as usual.
	for _, m := range []string{"PROPFIND", "M-SEARCH", "MKCALENDAR", "BASELINE-CONTROL"} {
		if d := check(m, "/public/x", ""); !d.Allow {
			t.Errorf("%s /public/x: %d %s, want allowed", m, d.Status, d.Reason)
		}
	}
}

// A request the upstream may serve as another method — a method override
// header or _method parameter (Express, ASP.NET Core, Symfony, Laravel),
// HEAD as GET — must be allowed for that method too; SAPUI5's OData
// tunnelling (POST with X-HTTP-Method: MERGE) keeps working where MERGE is
// allowed.
func TestMethodOverridesCannotDodgeRoutes(t *testing.T) {
	ctx := context.Background()
	pol, err := policy.Parse([]byte(`{"routes":[
		{"source":"^/deleteonly/","httpMethods":["DELETE"],"scope":"app.Admin"},
		{"source":"^/items/","scope":{"DELETE":"app.Admin","default":"app.Viewer"}},
		{"source":"^/getadmin/","httpMethods":["GET"],"scope":"app.Admin"},
		{"source":"^/"}]}`), "")
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, authz.Options{Policy: pol})
	c := f.newSession(t, &sessionpb.Session{AccessToken: "tok", Scopes: []string{"app.Viewer"}, CsrfToken: "csrf"})
	check := func(method, path string, kv ...string) *authz.Decision {
		r := get(path, "JSESSIONID="+c, append([]string{"x-csrf-token", "csrf"}, kv...)...)
		r.Method = method
		return f.engine.Check(ctx, r)
	}
	for _, tc := range []struct {
		method, path string
		kv           []string
	}{
		{"POST", "/deleteonly/1", []string{"x-http-method-override", "DELETE"}},
		{"POST", "/deleteonly/1", []string{"x-http-method-override", "delete"}},
		{"POST", "/deleteonly/1", []string{"x-http-method", "DELETE"}},
		{"PATCH", "/deleteonly/1", []string{"x-method-override", " Delete "}},
		{"POST", "/deleteonly/1?_method=DELETE", nil},
		{"POST", "/deleteonly/1?_method=delete&x=1", nil},
		{"POST", "/deleteonly/1?_METHOD=DELETE", nil},
		{"POST", "/deleteonly/1?%5Fmethod=DELETE", nil},
		{"POST", "/deleteonly/1?%5fmethod=DELETE", nil},
		{"POST", "/deleteonly/1?_%6Dethod=DELETE", nil},
		{"POST", "/deleteonly/1?_metho%64=DELETE", nil},
		{"POST", "/deleteonly/1?.method=DELETE", nil},
		{"POST", "/deleteonly/1?%2Emethod=DELETE", nil},
		{"POST", "/deleteonly/1?+_method=DELETE", nil},
		{"POST", "/deleteonly/1?_method[]=DELETE", nil},
		{"POST", "/deleteonly/1?_method%5B0%5D=DELETE", nil},
		{"POST", "/deleteonly/1?a=1;_method=DELETE", nil},
		{"POST", "/deleteonly/1?_method=%44ELETE", nil},
		{"POST", "/deleteonly/1?_method=+DELETE+", nil},
		{"POST", "/deleteonly/1?_method%00=DELETE", nil},
		{"POST", "/deleteonly/1?_method%00x=DELETE", nil},
		{"POST", "/deleteonly/1?.method%00=DELETE", nil},
		{"POST", "/deleteonly/1?" + strings.Repeat("+", 58) + "_method=DELETE", nil},
		{"POST", "/deleteonly/1?" + strings.Repeat("%20", 20) + "_method=DELETE", nil},
		{"POST", "/deleteonly/1?%u005Fmethod=DELETE", nil},
		{"POST", "/deleteonly/1?X-HTTP-Method-Override=DELETE", nil},
		{"POST", "/deleteonly/1?x-http-method=DELETE", nil},
		{"POST", "/deleteonly/1?X-Method-Override=delete", nil},
		{"POST", "/deleteonly/1?_method[]aaaaaaaaaaaaaaaaaaaaaaa=DELETE", nil},
		{"POST", "/deleteonly/1?X-HTTP-Method-Override[]zzzzzzz=DELETE", nil},
		{"POST", "/deleteonly/1?[_method]=DELETE", nil},
		{"POST", "/deleteonly/1?%5B_method%5D=DELETE", nil},
		{"POST", "/deleteonly/1?]_method=DELETE", nil},
		{"POST", "/deleteonly/1?[[_method=DELETE", nil},
		{"POST", "/deleteonly/1?_method]=DELETE", nil},
		{"POST", "/deleteonly/1?X-HTTP-Method-Override%01=DELETE", nil},
		{"POST", "/deleteonly/1?x-http-method-over%00ride=DELETE", nil},
		{"POST", "/deleteonly/1?X-Method-Override%C2%AD=DELETE", nil},
		{"POST", "/deleteonly/1?X-HTTP-Method%E2%80%8B=DELETE", nil},
		{"POST", "/deleteonly/1?%7FX-HTTP-Method=DELETE", nil},
		{"POST", "/deleteonly/1?" + strings.Repeat("%20", 40) + "[_method]=DELETE", nil},
		{"POST", "/getadmin/1", []string{"x-http-method-override", "HEAD"}},
		{"POST", "/getadmin/1?_method=HEAD", nil},
		{"POST", "/items/1", []string{"x-http-method-override", "DELETE"}},
		{"POST", "/items/1", []string{"x-http-method-override", "PATCH, DELETE"}},
		{"HEAD", "/getadmin/x", nil},
	} {
		if d := check(tc.method, tc.path, tc.kv...); d.Allow || d.Reason != authz.ReasonMissingScope {
			t.Errorf("%s %s %v: %d %s, want 403 missing_scope", tc.method, tc.path, tc.kv, d.Status, d.Reason)
		}
	}
	for _, kv := range [][]string{{"x-http-method-override", "DE LETE"}, {"x-method-override", "GET\x00"}} {
		if d := check("POST", "/items/1", kv...); d.Allow || d.Reason != authz.ReasonBadMethod {
			t.Errorf("POST /items/1 %q: %d %s, want 400 bad_method", kv, d.Status, d.Reason)
		}
	}
	if d := check("POST", "/items/1?_method=%00", nil...); d.Allow || d.Reason != authz.ReasonBadMethod {
		t.Errorf("POST /items/1?_method=%%00: %d %s, want 400 bad_method", d.Status, d.Reason)
	}
	// A request standing for many methods would be decided once for each:
	// more than a client ever sends is refused.
	var many []string
	for i := range 5000 {
		many = append(many, fmt.Sprintf("_method=M%d", i))
	}
	if d := check("POST", "/items/1?"+strings.Join(many, "&"), nil...); d.Allow || d.Reason != authz.ReasonBadMethod {
		t.Errorf("POST with 5,000 overrides: %d %s, want 400 bad_method", d.Status, d.Reason)
	}
	// Allowed: what the session may do, however it is spelled.
	for _, tc := range []struct {
		method, path string
		kv           []string
	}{
		{"POST", "/items/1", []string{"x-http-method", "MERGE"}},
		{"POST", "/items/1", []string{"x-http-method-override", "PUT"}},
		{"POST", "/items/1?_method=PATCH", nil},
		{"POST", "/items/1?_method=", nil},
		{"POST", "/items/1", []string{"x-http-method-override", ""}},
		{"POST", "/items/1", []string{"x-http-method-override", "PUT,"}},
		{"GET", "/items/1?$filter=Name%20eq%20%27a%27&$top=10&method=card", nil},
		{"GET", "/items/1?_methodology=x&filter[_method]=y&user%5B_method%5D=z&a.method=w", nil},
		{"HEAD", "/items/1", nil},
		{"GET", "/items/1?x=_method", nil},
	} {
		if d := check(tc.method, tc.path, tc.kv...); !d.Allow {
			t.Errorf("%s %s %v: %d %s, want allowed", tc.method, tc.path, tc.kv, d.Status, d.Reason)
		}
	}
}

// Route decisions are made on the path the upstream serves, whatever its
// spelling; what cannot be read unambiguously is refused.
func TestPathSpellingsCannotDodgeRoutes(t *testing.T) {
	ctx := context.Background()
	pol, err := policy.Parse([]byte(`{"routes":[
		{"source":"^/public/","authenticationType":"none"},
		{"source":"^/admin/","scope":"app.Admin"},
		{"source":"^/viewer/","scope":{"GET":"app.Viewer"}},
		{"source":"^/"}]}`), "")
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, authz.Options{Policy: pol})
	c := f.newSession(t, &sessionpb.Session{AccessToken: "tok", Scopes: []string{"app.Viewer"}, CsrfToken: "csrf"})
	admin := []string{
		"/admin/x", "//admin/x", "/./admin/x", "/%61dmin/x", "/admin;/x", "/admin;jsessionid=1/x", "/public/../admin/x",
		"/public/%2e%2e/admin/x", "/public/%2E%2E/admin/x", "/public/.%2e/admin/x",
		"/public;/../admin/x", "///admin/x", "/x/../admin/x", "/public/./../admin/x", "/%2e/admin/x", "/admin/./x",
	}
	refused := []string{
		"/public/%2f../admin/x", "/public%2F..%2Fadmin/x", "/public/..%2fadmin/x", "/public/..%5cadmin/x", "/public\\..\\admin/x",
		"/../admin/x", "/public/../../admin/x", "/admin%00/x", "/admin%zz/x", "/admin%/x", "/admin\x00/x", "/admin%0d%0a/x",
		"/public/..;/admin/x", "/admin/..;/public/x", "/admin/%2e%2e;/public/x", "/admin/;/../public/x", "/admin//../public/x",
	}
	for _, p := range admin {
		// Without a session: never the public route.
		if d := f.engine.Check(ctx, get(p, "", "x-requested-with", "XMLHttpRequest")); d.Allow || d.Status != http.StatusUnauthorized {
			t.Errorf("%s without a session: %d %s, want 401", p, d.Status, d.Reason)
		}
		// Without the scope: 403.
		if d := f.engine.Check(ctx, get(p, "JSESSIONID="+c)); d.Allow || d.Reason != "missing_scope" {
			t.Errorf("%s without the scope: %d %s, want 403 missing_scope", p, d.Status, d.Reason)
		}
	}
	for _, p := range refused {
		for _, cookie := range []string{"", "JSESSIONID=" + c} {
			if d := f.engine.Check(ctx, get(p, cookie)); d.Allow || d.Status != http.StatusBadRequest || d.Reason != "bad_path" {
				t.Errorf("%s (cookie %v): %d %s, want 400 bad_path", p, cookie != "", d.Status, d.Reason)
			}
		}
	}
	// A scope object without default: every other method is refused.
	for _, m := range []string{"HEAD", "POST", "PUT", "DELETE", "PATCH"} {
		r := get("/viewer/x", "JSESSIONID="+c, "x-csrf-token", "csrf")
		r.Method = m
		if d := f.engine.Check(ctx, r); d.Allow || d.Reason != "missing_scope" {
			t.Errorf("%s /viewer/x: %d %s, want 403 missing_scope", m, d.Status, d.Reason)
		}
	}
	if d := f.engine.Check(ctx, get("/viewer/x", "JSESSIONID="+c)); !d.Allow {
		t.Errorf("GET /viewer/x with app.Viewer: %d %s", d.Status, d.Reason)
	}
	// The query is not part of route matching.
	if d := f.engine.Check(ctx, get("/admin/x?/public/", "")); d.Allow {
		t.Error("/admin/x?/public/ passed as public")
	}
	// Reserved paths are found in any spelling.
	for _, p := range []string{"//logout", "/logout;x", "/%6cogout", "/x/../logout"} {
		if d := f.engine.Check(ctx, get(p, "JSESSIONID="+c)); d.Reason != "logout" {
			t.Errorf("%s: %d %s, want the logout", p, d.Status, d.Reason)
		}
		c = f.newSession(t, &sessionpb.Session{AccessToken: "tok", Scopes: []string{"app.Viewer"}, CsrfToken: "csrf"})
	}
}

// An anonymous navigation writes nothing to the store; the login lives in
// the browser's state cookie, and logins in two tabs both complete.
func TestAnonymousTrafficWritesNothing(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, authz.Options{})
	for range 100 {
		if d := f.engine.Check(ctx, get("/some/page?x=1", "")); d.Status != http.StatusFound {
			t.Fatalf("navigation: %d", d.Status)
		}
	}
	// Garbage callbacks write nothing either.
	for _, q := range []string{"state=x&code=y", "error=access_denied&state=" + strings.Repeat("A", 64), "code=y"} {
		f.engine.Check(ctx, get("/login/callback?"+q, "JSESSIONID_login_AAAAAAAAAA="+strings.Repeat("A", 300)))
	}
	if n := f.store.writes.Load(); n != 0 {
		t.Fatalf("anonymous requests made %d store writes, want 0", n)
	}

	// Two tabs: both logins complete, each on its own page.
	type tab struct{ state, cookie, path string }
	var tabs []tab
	for _, p := range []string{"/tab-one", "/tab-two?q=2"} {
		d := f.engine.Check(ctx, get(p, ""))
		loc, _ := url.Parse(header(d, "location"))
		c, _, _ := strings.Cut(headers(d, "set-cookie")[0], ";")
		tabs = append(tabs, tab{loc.Query().Get("state"), c, p})
	}
	both := tabs[0].cookie + "; " + tabs[1].cookie
	for i := len(tabs) - 1; i >= 0; i-- {
		tb := tabs[i]
		f.idp.mu.Lock()
		f.idp.lastNonce = nonceOf(t, f, tb.state, tb.cookie)
		f.idp.mu.Unlock()
		d := f.engine.Check(ctx, get("/login/callback?"+url.Values{"code": {"c"}, "state": {tb.state}}.Encode(), both))
		if d.Status != http.StatusFound || header(d, "location") != tb.path {
			t.Fatalf("tab %d callback: %d %s to %q", i, d.Status, d.Body, header(d, "location"))
		}
	}
}

// nonceOf opens a login's state cookie as the engine does.
func nonceOf(t *testing.T, f *fixture, state, cookie string) string {
	t.Helper()
	_, v, _ := strings.Cut(cookie, "=")
	ls, err := f.sessions.OpenLogin(state, v, "", "app.example.com")
	if err != nil {
		t.Fatal(err)
	}
	return ls.GetNonce()
}

// Only the app's own pages log out; with logoutMethod POST a GET changes
// nothing.
func TestLogoutOnlyFromTheAppItself(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, authz.Options{})
	c := f.newSession(t, &sessionpb.Session{AccessToken: "tok"})
	for _, site := range []string{"cross-site", "same-site", "Cross-Site", "cross-site ", " same-site"} {
		for _, m := range []string{"GET", "POST"} {
			r := get("/logout", "JSESSIONID="+c, "sec-fetch-site", site)
			r.Method = m
			d := f.engine.Check(ctx, r)
			if d.Status != http.StatusForbidden || header(d, "set-cookie") != "" || !strings.Contains(d.Body, `method="post"`) {
				t.Errorf("%s %s logout: %d %q, want 403 with a confirm form and no cookie change", m, site, d.Status, header(d, "set-cookie"))
			}
		}
	}
	if d := f.engine.Check(ctx, get("/", "JSESSIONID="+c)); !d.Allow {
		t.Fatal("a cross-site request logged the user out")
	}
	for _, site := range []string{"same-origin", "none", ""} {
		c := f.newSession(t, &sessionpb.Session{AccessToken: "tok"})
		if d := f.engine.Check(ctx, get("/logout", "JSESSIONID="+c, "sec-fetch-site", site)); d.Reason != "logout" {
			t.Errorf("logout with sec-fetch-site %q: %d %s", site, d.Status, d.Reason)
		}
	}

	f = newFixture(t, authz.Options{LogoutMethod: http.MethodPost})
	c = f.newSession(t, &sessionpb.Session{AccessToken: "tok"})
	for _, m := range []string{"GET", "HEAD", "PUT"} {
		r := get("/logout", "JSESSIONID="+c)
		r.Method = m
		if d := f.engine.Check(ctx, r); d.Status != http.StatusMethodNotAllowed || header(d, "set-cookie") != "" {
			t.Errorf("%s logout with logoutMethod POST: %d %q", m, d.Status, header(d, "set-cookie"))
		}
	}
	if d := f.engine.Check(ctx, get("/", "JSESSIONID="+c)); !d.Allow {
		t.Fatal("a GET logged out with logoutMethod POST")
	}
}

// A token that lives shorter than JWT_REFRESH is refreshed once per
// rotation, not on every request.
func TestRefreshAheadClampedToTheTokenLifetime(t *testing.T) {
	ctx := context.Background()
	now := time.Now()
	clock := func() time.Time { return now }
	f := newFixture(t, authz.Options{RefreshAhead: 5 * time.Minute, Now: clock})
	f.idp.refreshed = &idp.Tokens{AccessToken: "new", Expiry: now.Add(5 * time.Minute)}
	c := f.newSession(t, &sessionpb.Session{AccessToken: "old", RefreshToken: "rt",
		AccessTokenObtainedAt: now.Unix(), AccessTokenExpiry: now.Add(5 * time.Minute).Unix()})
	for range 20 {
		if d := f.engine.Check(ctx, get("/", "JSESSIONID="+c)); !d.Allow {
			t.Fatalf("%+v", d)
		}
	}
	if n := f.idp.refreshes.Load(); n != 0 {
		t.Fatalf("%d refreshes of a fresh 5-minute token with JWT_REFRESH 5m, want 0", n)
	}
	now = now.Add(151 * time.Second) // past half its life
	f.idp.refreshed = &idp.Tokens{AccessToken: "new", Expiry: now.Add(5 * time.Minute)}
	for range 20 {
		f.engine.Check(ctx, get("/", "JSESSIONID="+c))
	}
	if n := f.idp.refreshes.Load(); n != 1 {
		t.Fatalf("%d refreshes past half the lifetime, want 1", n)
	}
}

// Logout is final: a refresh that was in flight does not write the session
// back.
func TestRefreshDuringLogoutDoesNotResurrect(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, authz.Options{RefreshAhead: 5 * time.Minute})
	f.idp.gate = make(chan struct{}) // the refresh is held at the IdP until the logout is done
	f.idp.refreshed = &idp.Tokens{AccessToken: "new", Expiry: time.Now().Add(time.Hour)}
	c := f.newSession(t, &sessionpb.Session{AccessToken: "old", RefreshToken: "rt", AccessTokenExpiry: time.Now().Add(-time.Second).Unix()})
	var wg sync.WaitGroup
	var refreshDecision *authz.Decision
	wg.Go(func() {
		refreshDecision = f.engine.Check(ctx, get("/", "JSESSIONID="+c, "x-requested-with", "XMLHttpRequest"))
	})
	for f.idp.refreshes.Load() == 0 { // the refresh is at the IdP
		time.Sleep(time.Millisecond)
	}
	if d := f.engine.Check(ctx, get("/logout", "JSESSIONID="+c)); d.Reason != "logout" {
		t.Fatalf("logout: %+v", d)
	}
	close(f.idp.gate)
	wg.Wait()
	if refreshDecision.Allow {
		t.Errorf("the request whose refresh raced the logout was allowed")
	}
	if d := f.engine.Check(ctx, get("/", "JSESSIONID="+c, "x-requested-with", "XMLHttpRequest")); d.Allow || d.Status != http.StatusUnauthorized {
		t.Fatalf("after logout and a finished refresh: %d %s, want 401", d.Status, d.Reason)
	}
}

// Hosts that are not ours get 404 and nothing else: no redirect, no cookie,
// no store call.
func TestForeignHostsGetNothing(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, authz.Options{})
	before := f.store.calls.Load()
	for _, h := range []string{"attacker.example", "app.example.com.attacker.example", "app.example.com@attacker.example",
		"attacker.example#app.example.com", "app.example.com:443@x", " app.example.com", "", "APP.EXAMPLE.COM.EVIL", "xapp.example.com"} {
		r := get("/", "JSESSIONID=x")
		r.Host = h
		d := f.engine.Check(ctx, r)
		if d.Status != http.StatusNotFound || header(d, "location") != "" || header(d, "set-cookie") != "" {
			t.Errorf("host %q: %d location %q", h, d.Status, header(d, "location"))
		}
	}
	if n := f.store.calls.Load() - before; n != 0 {
		t.Fatalf("foreign hosts made %d store calls", n)
	}
	for _, h := range []string{"APP.example.com", "app.example.com.", "app.example.com:8443"} {
		r := get("/", "")
		r.Host = h
		d := f.engine.Check(ctx, r)
		loc, _ := url.Parse(header(d, "location"))
		if ru := loc.Query().Get("redirect_uri"); d.Status != http.StatusFound || !strings.HasPrefix(ru, "https://app.example.com") {
			t.Errorf("host %q: %d redirect_uri %q", h, d.Status, ru)
		}
	}
}

// Requests waiting for another request's refresh share one wait per
// session: the store is polled once per interval, not once per request.
func TestRefreshWaitersShareOneWait(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, authz.Options{RefreshAhead: 5 * time.Minute})
	f.idp.delay = 500 * time.Millisecond
	f.idp.refreshed = &idp.Tokens{AccessToken: "new", Expiry: time.Now().Add(time.Hour)}
	c := f.newSession(t, &sessionpb.Session{AccessToken: "old", RefreshToken: "rt", AccessTokenExpiry: time.Now().Add(-time.Second).Unix()})
	before := f.store.gets.Load()
	var wg sync.WaitGroup
	var allowed atomic.Int32
	for range 50 {
		wg.Go(func() {
			if d := f.engine.Check(ctx, get("/", "JSESSIONID="+c)); d.Allow && d.Upstream[0].Value == "Bearer new" {
				allowed.Add(1)
			}
		})
	}
	wg.Wait()
	if n := allowed.Load(); n != 50 {
		t.Fatalf("%d of 50 requests got the new token", n)
	}
	// 50 loads, the refresher's re-read, and about 10 shared polls; one
	// poll per waiter would be about 500.
	if n := f.store.gets.Load() - before; n > 50+1+20 {
		t.Fatalf("%d store reads for 50 requests waiting on one refresh", n)
	}
	if n := f.idp.refreshes.Load(); n != 1 {
		t.Fatalf("%d refresh grants", n)
	}
}
