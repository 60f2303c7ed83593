package adversarial_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/e2e"
	"github.com/extauthz/extauthz/internal/redistest"
)

// markerSets are the nginx subrequest marker headers a client may send.
var markerSets = [][]string{
	{"X-Extauthz-Subrequest", "nginx", "X-Original-Method", "GET"},
	{"X-Extauthz-Subrequest", "nginx", "X-Original-Method", "HEAD"},
	{"X-Extauthz-Subrequest", "nginx", "X-Original-Method", "get"},
	{"X-Extauthz-Subrequest", "NGINX", "X-Original-Method", "GET"},
	{"X-Extauthz-Subrequest", "nginx"},
	{"X-Original-Method", "GET"},
	{"X-Extauthz-Subrequest", "nginx", "X-Extauthz-Subrequest", "nginx", "X-Original-Method", "GET", "X-Original-Method", "GET"},
	{"X-Extauthz-Subrequest", "nginx", "X-Original-Method", "GET", "X-Original-URI", "/public/x"},
}

// TestNginxMarkerIsJustAHeader (issue 11 class 5): on the Envoy-facing
// listeners the nginx marker and X-Original-Method change nothing.
func TestNginxMarkerIsJustAHeader(t *testing.T) {
	x := routes(t, "marker")
	_, cookie := login(t, x, "marker@example.com")
	sess := func(method, path string) hreq {
		q := ajax(path, cookie)
		q.Method = method
		return q
	}
	anonPost := ajax("/api/orders", "")
	anonPost.Method = "POST"
	shapes := []struct {
		name string
		q    hreq
	}{
		{"CSRF-protected POST without token", sess("POST", "/api/orders")},
		{"CSRF-protected PUT without token", sess("PUT", "/api/orders")},
		{"CSRF-protected DELETE without token", sess("DELETE", "/home")},
		{"POST on a GET-only scope object", sess("POST", "/getonly/x")},
		{"GET without the scope", sess("GET", "/admin/x")},
		{"anonymous navigation", navigation("localhost:8443", "/x")},
		{"anonymous POST", anonPost},
		{"session GET", sess("GET", "/home")},
	}
	for _, p := range protocols {
		for _, s := range shapes {
			base := p.do(x, s.q)
			for _, m := range markerSets {
				r := p.do(x, s.q.with(m...))
				if r.Status != base.Status || (r.Allowed && !base.Allowed) {
					t.Errorf("%s %s with %v: %s; without the headers: %s; want the same answer", p.name, s.name, m, r, base)
				}
			}
		}
	}
	x.requireAlive(t)
}

// startNginx runs the shipped deploy/nginx configuration on port with its
// upstreams pointed at extauthz's nginx listener and the app.
func startNginx(t *testing.T, bin string, port int, extauthz, app string) {
	t.Helper()
	root, _ := e2e.ModuleRoot()
	n, err := e2e.StartNginx(bin, root, t.TempDir(), e2e.NginxOptions{Port: port, ExtauthzAddr: extauthz, AppAddr: app})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		n.Close()
		if t.Failed() {
			t.Logf("nginx log:\n%s", tail(n.Log(), 4000))
		}
	})
}

// testApp echoes the request headers; under /app401 it answers 401, as
// an app's own API may.
func testApp() http.Handler {
	echo := e2e.AppEcho()
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/app401") {
			w.Header().Set("www-authenticate", `Basic realm="app"`)
			w.WriteHeader(http.StatusUnauthorized)
			return
		}
		echo.ServeHTTP(w, r)
	})
}

// TestNginxNeverLeaksAuthorization (issue 11 class 5): through the real
// nginx with the shipped configuration, on extauthz's own nginx listener,
// no response to the client ever carries the upstream Authorization, and the
// client's marker headers unlock nothing.
func TestNginxNeverLeaksAuthorization(t *testing.T) {
	bin := e2e.RequireNginx(t)
	ctx := context.Background()
	appLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	appSrv := &http.Server{Handler: testApp(), ReadHeaderTimeout: 5 * time.Second}
	go appSrv.Serve(appLis)
	defer appSrv.Close()

	np, err := redistest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	nginxAddr := fmt.Sprintf("127.0.0.1:%d", np)
	// Routes limited by method and no catch-all: a request can be denied
	// with 404 for its method and allowed for another.
	xs := filepath.Join(t.TempDir(), "xs-app.json")
	os.WriteFile(xs, []byte(`{
  "authenticationMethod": "route",
  "routes": [
    { "source": "^/public/", "authenticationType": "none", "destination": "backend" },
    { "source": "^/admin/", "scope": "Admin", "destination": "backend" },
    { "source": "^/getonly/", "scope": { "GET": "offline_access" }, "csrfProtection": false, "destination": "backend" },
    { "source": "^/ro/", "httpMethods": ["GET"], "destination": "backend" },
    { "source": "^/app401/", "destination": "backend" },
    { "source": "^/api/", "csrfProtection": true, "destination": "backend" },
    { "source": "^/home$", "destination": "backend" }
  ]
}`), 0o644)
	x := start(t, "nginx", "EXTAUTHZ_XS_APP", xs, "EXTAUTHZ_NGINX_ADDR", nginxAddr, "SECURE_SESSION_COOKIE", "false")
	target := nginxAddr
	if c, err := net.DialTimeout("tcp", nginxAddr, time.Second); err != nil {
		t.Errorf("EXTAUTHZ_NGINX_ADDR=%s is not served (%v); the rest of this test uses the HTTP listener", nginxAddr, err)
		target = x.HTTPAddr
	} else {
		c.Close()
	}
	startNginx(t, bin, nginxPort, target, appLis.Addr().String())
	front := fmt.Sprintf("http://localhost:%d", nginxPort)
	host := fmt.Sprintf("localhost:%d", nginxPort)

	b := e2e.NewHTTPBrowser("nginx-user@example.com", hydra)
	resp, hops, err := b.Navigate(ctx, front+"/home")
	if err != nil || resp.Status != 200 || resp.Upstream == nil || !strings.HasPrefix(resp.Upstream.Get("Authorization"), "Bearer ") {
		t.Fatalf("login through nginx: %v %v (hops %v)", resp, err, hops)
	}
	cookie := b.Cookie(front, "JSESSIONID")
	if cookie == "" {
		t.Fatal("no session cookie after logging in through nginx")
	}
	// CSRF token through nginx.
	r := rawHTTP(front[len("http://"):], hreq{Method: "GET", Host: host, Path: "/home",
		H: [][2]string{{"Cookie", "JSESSIONID=" + cookie}, {"X-CSRF-Token", "Fetch"}, {"X-Requested-With", "XMLHttpRequest"}}})
	csrf := r.Header.Get("X-CSRF-Token")
	if r.Status != 200 || csrf == "" {
		t.Fatalf("CSRF fetch through nginx: %s", r)
	}

	nginxHost := fmt.Sprintf("127.0.0.1:%d", nginxPort)
	do := func(q hreq) hres { q.Host = host; return rawHTTP(nginxHost, q) }

	// The marker unlocks nothing through nginx either.
	for _, m := range markerSets {
		r := do(hreq{Method: "POST", Path: "/ro/report", H: [][2]string{{"Cookie", "JSESSIONID=" + cookie}, {"X-Requested-With", "XMLHttpRequest"}}}.with(m...))
		if r.Status == 200 || r.Header.Get("Authorization") != "" {
			t.Errorf("POST /ro/report (a GET-only route) with a session, client headers %v through nginx: %s (Authorization to the client: %q), want a denial", m, r, r.Header.Get("Authorization"))
		}
		r = do(hreq{Method: "POST", Path: "/api/orders", H: [][2]string{{"Cookie", "JSESSIONID=" + cookie}, {"X-Requested-With", "XMLHttpRequest"}}}.with(m...))
		if r.Status != http.StatusForbidden {
			t.Errorf("POST /api/orders with a session, no CSRF token, client headers %v through nginx: %s, want 403", m, r)
		}
	}
	if r := do(hreq{Method: "POST", Path: "/api/orders", H: [][2]string{{"Cookie", "JSESSIONID=" + cookie}, {"X-CSRF-Token", csrf}}}); r.Status != 200 || r.Header.Get(e2e.AppEchoHeader) == "" {
		t.Errorf("control: POST /api/orders with the CSRF token through nginx: %s, want the app's 200", r)
	}

	// Many shapes: nothing sent to the client carries Authorization.
	sessions := map[string]string{"none": "", "valid": "JSESSIONID=" + cookie, "forged": "JSESSIONID=" + randLabel(50) + "; theme=dark"}
	methods := []string{"GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "PATCH"}
	paths := []string{"/home", "/ro/report", "/unknown", "/api/orders", "/admin/x", "/public/x", "/getonly/x", "/viewer/x", "/app401/x", "/login/callback?code=x&state=0123456789abcdef",
		"/_extauthz", "/public/../admin/x", "/%2e%2e/admin/x", "//admin/x", "/public/%2e%2e/app401/x", "/logout?x=1"}
	extras := [][]string{
		nil,
		{"X-Extauthz-Subrequest", "nginx", "X-Original-Method", "GET"},
		{"X-Requested-With", "XMLHttpRequest"},
		{"X-CSRF-Token", "Fetch"},
		{"X-Extauthz-Subrequest", "nginx", "X-Original-Method", "GET", "X-Requested-With", "XMLHttpRequest", "Authorization", "Bearer client-sent"},
		{"X-CSRF-Token", csrf, "X-Extauthz-Subrequest", "nginx"},
	}
	type job struct {
		sess, method, path string
		extra              []string
	}
	var jobs []job
	for s := range sessions {
		for _, m := range methods {
			for _, p := range paths {
				if s == "valid" && strings.HasPrefix(p, "/logout") {
					continue // keep the session for the other shapes
				}
				for _, e := range extras {
					jobs = append(jobs, job{s, m, p, e})
				}
			}
		}
	}
	var mu sync.Mutex
	var leaks []string
	statuses := map[int]int{}
	parallel(len(jobs), 8, func(i int) {
		j := jobs[i]
		q := hreq{Method: j.method, Path: j.path}
		if c := sessions[j.sess]; c != "" {
			q.H = append(q.H, [2]string{"Cookie", c})
		}
		q = q.with(j.extra...)
		r := do(q)
		mu.Lock()
		defer mu.Unlock()
		statuses[r.Status]++
		if r.Err != nil {
			leaks = append(leaks, fmt.Sprintf("%s %s session=%s %v: %v", j.method, j.path, j.sess, j.extra, r.Err))
			return
		}
		for k, vs := range r.Header {
			leak := strings.EqualFold(k, "Authorization")
			for _, v := range vs {
				leak = leak || strings.Contains(v, "Bearer ") || strings.Contains(v, "ory_at_")
			}
			if leak {
				leaks = append(leaks, fmt.Sprintf("%s %s session=%s %v: the client got %s: %.40q", j.method, j.path, j.sess, j.extra, k, vs))
			}
		}
		if r.Status >= 500 {
			leaks = append(leaks, fmt.Sprintf("%s %s session=%s %v: %s", j.method, j.path, j.sess, j.extra, r))
		}
	})
	for i, l := range leaks {
		if i == 40 {
			t.Errorf("... %d more", len(leaks)-40)
			break
		}
		t.Error(l)
	}
	t.Logf("%d request shapes through nginx: statuses %v; %d leaks or errors", len(jobs), statuses, len(leaks))
	x.requireAlive(t)
}
