package e2e_test

import (
	"context"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"testing"

	"github.com/extauthz/extauthz/internal/e2e"
)

// TestXSAppJSON: an approuter xs-app.json enforced end to end with Hydra:
// scopes from the token, CSRF, public routes, the logout endpoint and page.
func TestXSAppJSON(t *testing.T) {
	ctx := context.Background()
	file := filepath.Join(t.TempDir(), "xs-app.json")
	os.WriteFile(file, []byte(`{
  "welcomeFile": "/index.html",
  "authenticationMethod": "route",
  "logout": { "logoutEndpoint": "/my/logout", "logoutPage": "/bye.html" },
  "routes": [
    { "source": "^/bye.html$", "localDir": "web", "authenticationType": "none" },
    { "source": "^/public/(.*)$", "target": "$1", "destination": "backend", "authenticationType": "none" },
    { "source": "^/admin/(.*)$", "destination": "backend", "scope": "admin" },
    { "source": "^/offline/(.*)$", "destination": "backend", "scope": ["admin", "offline_access"] },
    { "source": "^/api/(.*)$", "destination": "backend", "csrfProtection": true },
    { "source": "^/(.*)$", "localDir": "web" }
  ]
}`), 0o644)
	x := replica(t, "a", hydra, client, "EXTAUTHZ_XS_APP", file)
	b := e2e.NewBrowser("henry@example.com", x, hydra)
	loginAt(t, b, "/index.html")

	do := func(method, path string, h http.Header) *e2e.Response {
		t.Helper()
		if h == nil {
			h = http.Header{}
		}
		h.Set("X-Requested-With", "XMLHttpRequest")
		r, err := b.Do(ctx, method, app+path, h)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	if r := do("GET", "/admin/users", nil); r.Status != http.StatusForbidden {
		t.Fatalf("a route whose scope the Hydra user lacks: %d, want 403", r.Status)
	}
	if r := do("GET", "/offline/report", nil); r.Status != 200 {
		t.Fatalf("a route needing a scope Hydra granted (offline_access): %d, want 200", r.Status)
	}
	r := do("POST", "/api/orders", nil)
	if r.Status != http.StatusForbidden || r.Header.Get("x-csrf-token") != "Required" {
		t.Fatalf("POST without CSRF token: %d %v, want 403 with x-csrf-token: Required", r.Status, r.Header)
	}
	r = do("GET", "/api/orders", http.Header{"X-Csrf-Token": {"Fetch"}})
	token := r.Header.Get("x-csrf-token")
	if r.Status != 200 || len(token) < 20 {
		t.Fatalf("fetch: %d, token %q", r.Status, token)
	}
	if r := do("POST", "/api/orders", http.Header{"X-Csrf-Token": {token}}); r.Status != 200 {
		t.Fatalf("POST with the fetched token: %d", r.Status)
	}

	anon := e2e.NewBrowser("nobody", x, hydra)
	r, err := anon.Do(ctx, "GET", app+"/public/logo.png", nil)
	if err != nil || r.Status != 200 || r.Upstream.Get("authorization") != "" {
		t.Fatalf("public route without a session: %v %v, want 200 without a token", r, err)
	}

	r = do("GET", "/my/logout", nil)
	loc, _ := url.Parse(r.Header.Get("location"))
	if r.Status != http.StatusFound || loc.Query().Get("post_logout_redirect_uri") != app+"/bye.html" {
		t.Fatalf("logout endpoint from xs-app.json: %d to %s, want Hydra's logout coming back to /bye.html", r.Status, loc)
	}
	if r := do("GET", "/api/orders", nil); r.Status != http.StatusUnauthorized {
		t.Fatalf("after logout: %d, want 401", r.Status)
	}
}
