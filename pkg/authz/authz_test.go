package authz_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/extauthz/extauthz/pkg/authz"
	"github.com/extauthz/extauthz/pkg/policy"
	"github.com/extauthz/extauthz/pkg/session"
	"github.com/extauthz/extauthz/pkg/tenant"
	"github.com/extauthz/extauthz/proto/sessionpb"
)

func TestAllowWithSession(t *testing.T) {
	f := newFixture(t, authz.Options{})
	c := f.newSession(t, &sessionpb.Session{AccessToken: "the-access-token", AccessTokenExpiry: time.Now().Add(time.Hour).Unix()})

	d := f.engine.Check(context.Background(), get("/app", "theme=dark; JSESSIONID="+c+"; lang=de"))
	if !d.Allow || d.Reason != "session" {
		t.Fatalf("decision %+v, want allow", d)
	}
	want := []authz.Header{{"authorization", "Bearer the-access-token"}, {"cookie", "theme=dark; lang=de"}}
	if fmt.Sprint(d.Upstream) != fmt.Sprint(want) || d.Remove != nil {
		t.Fatalf("upstream %v remove %v, want %v", d.Upstream, d.Remove, want)
	}

	d = f.engine.Check(context.Background(), get("/app", "JSESSIONID="+c))
	if !d.Allow || fmt.Sprint(d.Remove) != "[cookie]" || len(d.Upstream) != 1 {
		t.Fatalf("only the session cookie: upstream %v remove %v, want the cookie header removed", d.Upstream, d.Remove)
	}
}

func TestNoSession(t *testing.T) {
	f := newFixture(t, authz.Options{})
	tests := []struct {
		name   string
		req    *authz.Request
		status int
	}{
		{"browser navigation", get("/app?x=1", ""), http.StatusFound},
		{"HEAD navigation", &authz.Request{Method: "HEAD", Host: "app.example.com", Path: "/", Headers: map[string]string{}}, http.StatusFound},
		{"XMLHttpRequest", get("/api", "", "x-requested-with", "XMLHttpRequest"), http.StatusUnauthorized},
		{"fetch()", get("/api", "", "sec-fetch-mode", "cors"), http.StatusUnauthorized},
		{"POST", &authz.Request{Method: "POST", Host: "app.example.com", Path: "/api", Headers: map[string]string{}}, http.StatusUnauthorized},
		{"garbage cookie", get("/app", "JSESSIONID=garbage", "x-requested-with", "XMLHttpRequest"), http.StatusUnauthorized},
		{"hostile host", &authz.Request{Method: "GET", Host: "evil.com/x@", Path: "/", Headers: map[string]string{}}, http.StatusNotFound},
		{"foreign host", &authz.Request{Method: "GET", Host: "attacker.example", Path: "/", Headers: map[string]string{}}, http.StatusNotFound},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := f.engine.Check(context.Background(), tt.req)
			if d.Allow || d.Status != tt.status {
				t.Fatalf("decision %+v, want deny %d", d, tt.status)
			}
		})
	}
}

func TestForgedCookieNeverReachesTheStore(t *testing.T) {
	f := newFixture(t, authz.Options{})
	good := f.newSession(t, &sessionpb.Session{AccessToken: "x"})
	forged := []byte(good)
	forged[5] ^= 2
	before := f.store.calls.Load()
	for _, c := range []string{string(forged), "x", strings.Repeat("A", 10000), good + "A"} {
		d := f.engine.Check(context.Background(), get("/", "JSESSIONID="+c, "x-requested-with", "XMLHttpRequest"))
		if d.Status != http.StatusUnauthorized {
			t.Fatalf("forged cookie: status %d", d.Status)
		}
	}
	if n := f.store.calls.Load() - before; n != 0 {
		t.Fatalf("forged cookies caused %d store calls, want 0", n)
	}
}

func TestStoreDownFailsClosedAndKeepsTheSession(t *testing.T) {
	f := newFixture(t, authz.Options{})
	c := f.newSession(t, &sessionpb.Session{AccessToken: "x"})
	f.store.fail.Store(true)
	reqs := []*authz.Request{get("/logout", "JSESSIONID="+c), get("/", "JSESSIONID="+c)}
	if fixtureCache {
		f.peer.Cut(true) // the channel lives on the same Redis
		// A logout needs the store at once; a check may be served from the
		// cache within the staleness bound, and only then.
		if d := f.engine.Check(context.Background(), reqs[0]); d.Status != http.StatusServiceUnavailable {
			t.Fatalf("logout with the store down: %+v, want 503", d)
		}
		time.Sleep(fixtureStaleness)
	}
	for _, req := range reqs {
		d := f.engine.Check(context.Background(), req)
		if d.Allow || d.Status != http.StatusServiceUnavailable || header(d, "retry-after") == "" {
			t.Fatalf("%s with the store down: %+v, want 503 with retry-after", req.Path, d)
		}
	}
	f.store.fail.Store(false)
	if d := f.engine.Check(context.Background(), get("/", "JSESSIONID="+c)); !d.Allow {
		t.Fatalf("after the store is back the session must work: %+v", d)
	}
}

// login walks a browser through login start and callback, returning the
// session cookie value.
func TestCookieAttributes(t *testing.T) {
	f := newFixture(t, authz.Options{SecureCookie: session.SecureAuto, TrustForwardedProto: true, SameSite: http.SameSiteNoneMode, Partitioned: true})
	d := f.engine.Check(context.Background(), &authz.Request{Method: "GET", Scheme: "http", Host: "localhost:8080", Path: "/",
		Headers: map[string]string{"x-forwarded-proto": "https"}})
	sc := headers(d, "set-cookie")[0]
	for _, want := range []string{"Secure", "SameSite=None", "Partitioned", "HttpOnly"} {
		if !strings.Contains(sc, want) {
			t.Errorf("state cookie %q lacks %s", sc, want)
		}
	}
	loc, _ := url.Parse(header(d, "location"))
	if got := loc.Query().Get("redirect_uri"); got != "https://localhost:8080/login/callback" {
		t.Errorf("redirect_uri %q", got)
	}
	// Of an appended x-forwarded-proto, the last value is the proxy's: a
	// client's "https" before it does not make plain http look secure.
	d = f.engine.Check(context.Background(), &authz.Request{Method: "GET", Scheme: "http", Host: "localhost:8080", Path: "/",
		Headers: map[string]string{"x-forwarded-proto": "https, http"}})
	if sc := headers(d, "set-cookie")[0]; strings.Contains(sc, "Secure") {
		t.Errorf("x-forwarded-proto \"https, http\" (auto, trusted): cookie %q must not be Secure", sc)
	}
	// auto believes x-forwarded-proto only from a trusted proxy.
	f = newFixture(t, authz.Options{SecureCookie: session.SecureAuto})
	d = f.engine.Check(context.Background(), &authz.Request{Method: "GET", Scheme: "http", Host: "localhost:8080", Path: "/",
		Headers: map[string]string{"x-forwarded-proto": "https"}})
	if sc := headers(d, "set-cookie")[0]; strings.Contains(sc, "Secure") {
		t.Errorf("plain http (auto, untrusted x-forwarded-proto): cookie %q must not be Secure", sc)
	}
	d = f.engine.Check(context.Background(), &authz.Request{Method: "GET", Scheme: "https", Host: "localhost:8080", Path: "/", Headers: map[string]string{}})
	if sc := headers(d, "set-cookie")[0]; !strings.Contains(sc, "Secure") {
		t.Errorf("https (auto): cookie %q must be Secure", sc)
	}
	// The default is Secure, whatever the scheme.
	f = newFixture(t, authz.Options{})
	d = f.engine.Check(context.Background(), &authz.Request{Method: "GET", Scheme: "http", Host: "localhost:8080", Path: "/",
		Headers: map[string]string{"x-forwarded-proto": "http"}})
	if sc := headers(d, "set-cookie")[0]; !strings.Contains(sc, "Secure") {
		t.Errorf("default: cookie %q must be Secure", sc)
	}
}

func TestTenants(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, authz.Options{})
	mt, err := tenant.New(tenant.Options{Pattern: `^(.*)\.app\.example\.com$`})
	if err != nil {
		t.Fatal(err)
	}
	f.engine = authz.New(f.sessions, authz.StaticProvider{P: f.idp}, mt, authz.Options{}, slog.New(slog.DiscardHandler))
	on := func(host, path, cookie string, extra ...string) *authz.Request {
		r := get(path, cookie, extra...)
		r.Host = host
		return r
	}
	before := f.store.calls.Load()
	if d := f.engine.Check(ctx, on("evil.example.com", "/", "")); d.Status != http.StatusNotFound {
		t.Fatalf("host outside the pattern: %d, want 404", d.Status)
	}
	if n := f.store.calls.Load() - before; n != 0 {
		t.Fatalf("a host outside the pattern caused %d store calls (no login may start)", n)
	}
	_, a, _ := f.sessions.Create(ctx, &sessionpb.Session{Tenant: "a", AccessToken: "token-a"})
	d := f.engine.Check(ctx, on("a.app.example.com", "/", "JSESSIONID="+a))
	if !d.Allow || d.Tenant != "a" {
		t.Fatalf("own tenant: %+v", d)
	}
	d = f.engine.Check(ctx, on("b.app.example.com", "/", "JSESSIONID="+a))
	if d.Allow || d.Status != http.StatusForbidden || !strings.Contains(d.Body, "another tenant") || d.Tenant != "b" {
		t.Fatalf("tenant a's cookie on b's host: %+v, want 403", d)
	}
	if d := f.engine.Check(ctx, on("b.app.example.com", "/logout", "JSESSIONID="+a)); d.Status != http.StatusFound {
		t.Fatalf("logout on b with a's cookie: %d", d.Status)
	}
	if d := f.engine.Check(ctx, on("a.app.example.com", "/", "JSESSIONID="+a)); !d.Allow {
		t.Fatal("tenant a's session was harmed by its use (or logout) on b's host")
	}

	// A login started on a's host cannot complete on b's.
	d = f.engine.Check(ctx, on("a.app.example.com", "/", ""))
	loc, _ := url.Parse(header(d, "location"))
	state := loc.Query().Get("state")
	if got := loc.Query().Get("redirect_uri"); got != "https://a.app.example.com/login/callback" {
		t.Fatalf("redirect_uri %q: the callback must be on the tenant's host", got)
	}
	stateCookie, _, _ := strings.Cut(headers(d, "set-cookie")[0], ";")
	cb := on("b.app.example.com", "/login/callback?"+url.Values{"code": {"c"}, "state": {state}}.Encode(), stateCookie)
	if d := f.engine.Check(ctx, cb); d.Status != http.StatusBadRequest || d.Reason != "callback_unknown_state" || f.idp.exchanges.Load() != 0 {
		t.Fatalf("callback on another tenant's host: %d %q (%d exchanges)", d.Status, d.Body, f.idp.exchanges.Load())
	}
}

func TestPolicy(t *testing.T) {
	ctx := context.Background()
	pol, err := policy.Parse([]byte(`{"routes":[
		{"source":"^/public/","authenticationType":"none"},
		{"source":"^/admin/","scope":"app.Admin"},
		{"source":"^/api/","scope":{"GET":"app.Read","default":"app.Write"}},
		{"source":"^/hook$","csrfProtection":false}]}`), "")
	if err != nil {
		t.Fatal(err)
	}
	f := newFixture(t, authz.Options{Policy: pol})
	c := f.newSession(t, &sessionpb.Session{AccessToken: "tok", Scopes: []string{"app.Read"}, CsrfToken: "the-csrf-token"})
	req := func(method, path string, headers ...string) *authz.Request {
		r := get(path, "theme=dark; JSESSIONID="+c, headers...)
		r.Method = method
		return r
	}
	for _, tc := range []struct {
		name   string
		req    *authz.Request
		status int
		reason authz.Reason
	}{
		{"public without session", &authz.Request{Method: "POST", Host: "app.example.com", Path: "/public/x", Headers: map[string]string{}}, 200, "public_route"},
		{"scope missing", req("GET", "/admin/users"), 403, "missing_scope"},
		{"scope by method: GET has it", req("GET", "/api/orders"), 200, "session"},
		{"scope by method: POST lacks it", req("POST", "/api/orders", "x-csrf-token", "the-csrf-token"), 403, "missing_scope"},
		{"no route", req("GET", "/elsewhere"), 404, "no_route"},
		{"csrf off for the route", req("POST", "/hook"), 200, "session"},
	} {
		d := f.engine.Check(ctx, tc.req)
		if d.Status != tc.status || d.Reason != tc.reason {
			t.Errorf("%s: %d %s, want %d %s", tc.name, d.Status, d.Reason, tc.status, tc.reason)
		}
	}
	// A public route still strips the session cookie from what the app sees.
	if d := f.engine.Check(ctx, req("GET", "/public/x")); fmt.Sprint(d.Upstream) != "[{cookie theme=dark}]" || len(d.Upstream) != 1 {
		t.Fatalf("public route upstream: %v", d.Upstream)
	}

	// CSRF: a POST without the token, with a wrong one, then fetch and POST.
	writer := f.newSession(t, &sessionpb.Session{AccessToken: "tok", Scopes: []string{"app.Write", "app.Read"}, CsrfToken: "the-csrf-token"})
	post := func(token string) *authz.Decision {
		r := get("/api/orders", "JSESSIONID="+writer)
		r.Method = "POST"
		if token != "" {
			r.Headers["x-csrf-token"] = token
		}
		return f.engine.Check(ctx, r)
	}
	for _, tok := range []string{"", "wrong"} {
		if d := post(tok); d.Status != 403 || header(d, "x-csrf-token") != "Required" {
			t.Fatalf("POST with CSRF token %q: %d %v, want 403 with x-csrf-token: Required", tok, d.Status, d.Response)
		}
	}
	d := f.engine.Check(ctx, get("/api/orders", "JSESSIONID="+writer, "x-csrf-token", "Fetch"))
	fetched := header(d, "x-csrf-token")
	if !d.Allow || fetched != "the-csrf-token" {
		t.Fatalf("fetch: %+v", d)
	}
	if d := post(fetched); !d.Allow {
		t.Fatalf("POST with the fetched token: %+v", d)
	}
}

func TestLogoutMethodPost(t *testing.T) {
	f := newFixture(t, authz.Options{LogoutMethod: http.MethodPost})
	if d := f.engine.Check(context.Background(), get("/logout", "")); d.Status != http.StatusMethodNotAllowed || header(d, "allow") != "POST" {
		t.Fatalf("GET /logout with logoutMethod POST: %+v", d)
	}
	r := get("/logout", "")
	r.Method = "POST"
	if d := f.engine.Check(context.Background(), r); d.Status != http.StatusFound {
		t.Fatalf("POST /logout: %d", d.Status)
	}
}
