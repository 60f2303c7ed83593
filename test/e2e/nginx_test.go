package e2e_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/e2e"
	"github.com/extauthz/extauthz/internal/redistest"
)

// nginxFront starts the test app and picks nginx's port: front is the URL
// the browser uses, and start runs the shipped deploy/nginx configuration
// there, in front of the app and x's nginx listener.
func nginxFront(t *testing.T) (front string, start func(x *e2e.Extauthz)) {
	t.Helper()
	appLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	appSrv := &http.Server{Handler: e2e.AppEcho()}
	go appSrv.Serve(appLis)
	t.Cleanup(func() { appSrv.Close() })
	bin := e2e.RequireNginx(t)
	port, err := redistest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	root, _ := e2e.ModuleRoot()
	return fmt.Sprintf("http://localhost:%d", port), func(x *e2e.Extauthz) {
		t.Helper()
		n, err := e2e.StartNginx(bin, root, t.TempDir(), e2e.NginxOptions{Port: port, ExtauthzAddr: x.NginxAddr, AppAddr: appLis.Addr().String()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			n.Close()
			if t.Failed() {
				t.Logf("nginx log:\n%s", n.Log())
			}
		})
	}
}

// TestNginxAuthRequest: a real front proxy no one here wrote, nginx with
// auth_request, in front of a test app and pointed at the nginx listener:
// log in through Hydra, reach the app with the Bearer token, restart
// extauthz, still reach it.
func TestNginxAuthRequest(t *testing.T) {
	ctx := context.Background()
	front, startNginx := nginxFront(t)
	c, err := hydra.CreateClient(ctx, front)
	if err != nil {
		t.Fatal(err)
	}
	x := replica(t, "a", hydra, c)
	startNginx(x)
	b := e2e.NewHTTPBrowser("grace@example.com", hydra)
	b.SetCookie(front, "theme", "dark")

	resp, hops, err := b.Navigate(ctx, front+"/orders?id=1")
	if err != nil {
		t.Fatalf("login through nginx: %v (hops %v)", err, hops)
	}
	if resp.Status != 200 || resp.Upstream == nil || hops[len(hops)-1] != front+"/orders?id=1" {
		t.Fatalf("login through nginx ended with %d %q at %v", resp.Status, resp.Body, hops)
	}
	tok := strings.TrimPrefix(resp.Upstream.Get("Authorization"), "Bearer ")
	if active, err := hydra.Introspect(ctx, tok); err != nil || !active {
		t.Fatalf("the app received %q, not an active Hydra token (%v)", resp.Upstream.Get("Authorization"), err)
	}
	if got := resp.Upstream.Get("Cookie"); got != "theme=dark" {
		t.Fatalf("the app received cookie %q, want the app's cookies without the session cookie", got)
	}

	x.Kill()
	if err := x.Start(); err != nil {
		t.Fatal(err)
	}
	r, err := b.Do(ctx, http.MethodGet, front+"/api", http.Header{"X-Requested-With": {"XMLHttpRequest"}})
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != 200 || strings.TrimPrefix(r.Upstream.Get("Authorization"), "Bearer ") != tok {
		t.Fatalf("after restarting extauthz: %d %q", r.Status, r.Body)
	}
	// Scripts without a session get 401 through nginx, not a redirect.
	anon := e2e.NewHTTPBrowser("nobody", hydra)
	if r, err := anon.Do(ctx, http.MethodPost, front+"/api", nil); err != nil || r.Status != 401 {
		t.Fatalf("POST without session through nginx: %v %v, want 401", r, err)
	}
}

// upstreamOnly are the headers of an allow meant for the app, never for the
// browser.
var upstreamOnly = []string{"Authorization", "Cookie", "X-Envoy-Auth-Headers-To-Remove"}

// TestNginxMarkerIsNotAClientFeature: the real nginx with the shipped
// configuration, a logged-in browser and an attacker's headers. The marker
// nginx puts on its auth_request subrequest (X-Extauthz-Subrequest,
// X-Original-Method) does nothing when a client sends it, through nginx or
// straight to the Envoy HTTP listener; and no answer nginx gives the browser
// ever carries the token or another header meant for the app.
func TestNginxMarkerIsNotAClientFeature(t *testing.T) {
	ctx := context.Background()
	front, startNginx := nginxFront(t)
	c, err := hydra.CreateClient(ctx, front)
	if err != nil {
		t.Fatal(err)
	}
	xsapp := filepath.Join(t.TempDir(), "xs-app.json")
	os.WriteFile(xsapp, []byte(`{"routes": [
		{ "source": "^/public/(.*)$", "authenticationType": "none" },
		{ "source": "^/api/(.*)$", "csrfProtection": true },
		{ "source": "^/(.*)$", "httpMethods": ["GET", "HEAD", "POST"] }
	]}`), 0o644)
	x := replica(t, "a", hydra, c, "EXTAUTHZ_XS_APP", xsapp)
	startNginx(x)
	b := e2e.NewHTTPBrowser("mallory@example.com", hydra)
	if resp, hops, err := b.Navigate(ctx, front+"/index.html"); err != nil || resp.Status != 200 || resp.Upstream == nil {
		t.Fatalf("login through nginx: %v %v (hops %v)", resp, err, hops)
	}
	sessionCookie := "JSESSIONID=" + b.Cookie(front, "JSESSIONID")
	marker := http.Header{"X-Extauthz-Subrequest": {"nginx"}, "X-Original-Method": {"GET"}}

	// (1) A CSRF-protected POST with the marker: refused, through nginx...
	r, err := b.Do(ctx, http.MethodPost, front+"/api/orders", marker.Clone())
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != http.StatusForbidden || r.Upstream != nil {
		t.Fatalf("POST without CSRF token, with the nginx marker, through nginx: %d (app reached: %v), want 403", r.Status, r.Upstream != nil)
	}
	// ... and at the Envoy HTTP listener, where the marker is just a header.
	for _, h := range []http.Header{marker, {"X-Original-Method": {"GET"}}} {
		req, _ := http.NewRequest(http.MethodPost, "http://"+x.HTTPAddr+"/api/orders", nil)
		req.Host = strings.TrimPrefix(front, "http://")
		req.Header = h.Clone()
		req.Header.Set("Cookie", sessionCookie)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusForbidden || resp.Header.Get("Authorization") != "" {
			t.Fatalf("POST with %v at the Envoy HTTP listener: %d %v, want 403 without a token", h, resp.StatusCode, resp.Header)
		}
	}
	// The same POST with its CSRF token passes: the refusal was the CSRF check.
	r, err = b.Do(ctx, http.MethodGet, front+"/api/orders", http.Header{"X-Csrf-Token": {"Fetch"}})
	if err != nil || r.Status != 200 || r.Header.Get("X-Csrf-Token") == "" {
		t.Fatalf("CSRF token fetch through nginx: %v %v", r, err)
	}
	if r, err = b.Do(ctx, http.MethodPost, front+"/api/orders", http.Header{"X-Csrf-Token": {r.Header.Get("X-Csrf-Token")}}); err != nil || r.Status != 200 || r.Upstream == nil {
		t.Fatalf("POST with the CSRF token through nginx: %v %v, want the app", r, err)
	}
	// The app never sees the marker headers.
	if r.Upstream.Get("X-Extauthz-Subrequest") != "" || r.Upstream.Get("X-Original-Method") != "" {
		t.Fatalf("the app received the marker headers: %v", r.Upstream)
	}
	if r, err = b.Do(ctx, http.MethodGet, front+"/index.html", marker.Clone()); err != nil || r.Upstream == nil ||
		r.Upstream.Get("X-Extauthz-Subrequest") != "" || r.Upstream.Get("X-Original-Method") != "" {
		t.Fatalf("the app received a client's marker headers: %v %v", r, err)
	}

	// A late allow on the unmarked path (the fallback nginx returns to the
	// browser) is a retry, never the token.
	req, _ := http.NewRequest(http.MethodGet, "http://"+x.NginxAddr+"/orders?id=1", nil)
	req.Host = strings.TrimPrefix(front, "http://")
	req.Header.Set("Cookie", sessionCookie)
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusTemporaryRedirect || resp.Header.Get("Location") != "/orders?id=1" || resp.Header.Get("Authorization") != "" {
		t.Fatalf("allowed unmarked request at the nginx listener: %d %v, want a 307 to itself without a token", resp.StatusCode, resp.Header)
	}

	// (2) Many request shapes, with and without a session: no answer to the
	// browser has a header meant for the app. /logout comes last (it ends
	// the session).
	anon := e2e.NewHTTPBrowser("nobody", hydra)
	shapes := []http.Header{
		{},
		{"X-Extauthz-Subrequest": {"nginx"}},
		marker,
		{"X-Extauthz-Subrequest": {"nginx"}, "X-Original-Method": {"POST"}},
		{"X-Original-Method": {"GET"}},
		{"X-Original-Method": {"DELETE"}},
		{"X-Requested-With": {"XMLHttpRequest"}, "X-Extauthz-Subrequest": {"nginx"}, "X-Original-Method": {"GET"}},
		{"X-Csrf-Token": {"Fetch"}, "X-Extauthz-Subrequest": {"nginx"}},
		{"Authorization": {"Bearer forged"}, "X-Extauthz-Subrequest": {"nginx"}},
	}
	paths := []string{"/", "/index.html", "/api/orders", "//api/orders", "/public/x", "/_extauthz",
		"/login/callback", "/login/callback?code=abc&state=def", "/logout"}
	n := 0
	for _, path := range paths {
		for _, br := range []*e2e.Browser{anon, b} {
			for _, method := range []string{http.MethodGet, http.MethodPost, http.MethodHead, http.MethodDelete} {
				for _, h := range shapes {
					r, err := br.Do(ctx, method, front+path, h.Clone())
					if err != nil {
						t.Fatalf("%s %s %v: %v", method, path, h, err)
					}
					n++
					for _, k := range upstreamOnly {
						if v := r.Header.Get(k); v != "" {
							t.Fatalf("%s %s with %v (%s): the browser got %s: %s (status %d)", method, path, h, br.Subject, k, v, r.Status)
						}
					}
					// A client's marker never lets a CSRF-protected change through.
					if method != http.MethodGet && method != http.MethodHead && strings.Contains(path, "/api/") && r.Upstream != nil {
						t.Fatalf("%s %s with %v (%s) reached the app without a CSRF token", method, path, h, br.Subject)
					}
				}
			}
		}
	}
	t.Logf("%d request shapes through nginx, none answered with a header meant for the app", n)
}

// TestNginxBackchannelLogout: the shipped nginx configuration passes
// Hydra's back-channel logout POST, body included, to extauthz, which
// answers Hydra itself: a browser logged in through nginx is logged out
// when its Hydra session ends.
func TestNginxBackchannelLogout(t *testing.T) {
	ctx := context.Background()
	front, startNginx := nginxFront(t)
	c, err := hydra.CreateClientWith(ctx, e2e.ClientOptions{BackchannelLogoutURI: front + "/logout/backchannel"}, front)
	if err != nil {
		t.Fatal(err)
	}
	var log e2e.SyncBuffer
	x := loggedReplica(t, "a", &log, c, "EXTAUTHZ_XFF_TRUSTED_HOPS", "1")
	startNginx(x)
	b := e2e.NewHTTPBrowser("heidi@example.com", hydra)
	b.Remember = true
	if resp, hops, err := b.Navigate(ctx, front+"/"); err != nil || resp.Status != 200 {
		t.Fatalf("login through nginx: %v %v (hops %v)", resp, err, hops)
	}
	api := func() int {
		r, err := b.Do(ctx, http.MethodGet, front+"/api", http.Header{"X-Requested-With": {"XMLHttpRequest"}})
		if err != nil {
			t.Fatal(err)
		}
		return r.Status
	}
	if st := api(); st != 200 {
		t.Fatalf("logged in: %d", st)
	}
	// A forged token through nginx: 400 from extauthz, with its reason (so
	// the body did arrive).
	resp, err := http.Post(front+"/logout/backchannel", "application/x-www-form-urlencoded", strings.NewReader("logout_token=a.b.c"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 400 || resp.Header.Get("Cache-Control") != "no-store" || !strings.Contains(string(body), "logout token") {
		t.Fatalf("forged logout token through nginx: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	if st := api(); st != 200 {
		t.Fatalf("after a forged logout token: %d", st)
	}
	if _, hops, err := b.NavigateUntil(ctx, hydra.Issuer+"/oauth2/sessions/logout", func(u *url.URL) bool {
		return !strings.HasPrefix(u.String(), hydra.Issuer) && u.Host != e2e.LoginHost
	}); err != nil {
		t.Fatalf("Hydra's logout: %v (%v)", err, hops)
	}
	deadline := time.Now().Add(10 * time.Second)
	for api() != 401 {
		if time.Now().After(deadline) {
			t.Fatalf("the session still works 10s after Hydra's logout:\n%s", auditLines(log.String()))
		}
		time.Sleep(50 * time.Millisecond)
	}
	if l := auditLines(log.String()); !strings.Contains(l, "via=backchannel") || !strings.Contains(l, "client=127.0.0.1") || !strings.Contains(l, "request_id=") {
		t.Fatalf("audit lines through nginx lack the back-channel logout, the client or the request id:\n%s", l)
	}
}
