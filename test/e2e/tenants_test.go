package e2e_test

import (
	"context"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"strings"
	"testing"

	"github.com/extauthz/extauthz/internal/e2e"
)

// TestTwoTenants: two Hydra processes are two tenants' identity zones, one
// extauthz serves both with an issuer template. A's cookie on B's host gets
// 403; B's session is unaffected; both survive a restart.
func TestTwoTenants(t *testing.T) {
	ctx := context.Background()
	// One router in front of both Hydras: /tenant-a/… and /tenant-b/….
	rl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	router := "http://" + rl.Addr().String()
	mux := http.NewServeMux()
	rsrv := &http.Server{Handler: mux}
	go rsrv.Serve(rl)
	defer rsrv.Close()

	hydras := map[string]*e2e.Hydra{}
	appURL := func(tn string) string { return "http://" + tn + ".app.localhost:8080" }
	for _, tn := range []string{"tenant-a", "tenant-b"} {
		h, err := e2e.StartHydra(hydraBin, t.TempDir(), e2e.HydraOptions{Issuer: router + "/" + tn})
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		target, _ := url.Parse(h.ProxyURL)
		mux.Handle("/"+tn+"/", http.StripPrefix("/"+tn, httputil.NewSingleHostReverseProxy(target)))
		if _, err := h.CreateNamedClient(ctx, "tenant-app", appURL(tn)); err != nil {
			t.Fatal(err)
		}
		hydras[tn] = h
	}
	x := replica(t, "mt", hydras["tenant-a"], e2e.Client{ID: "tenant-app", Secret: "e2e-client-secret-0123456789"},
		"EXTAUTHZ_OIDC_ISSUER", router+"/{tenant}",
		"TENANT_HOST_PATTERN", `^(.*)\.app\.localhost$`)

	login := func(tn, user string) (*e2e.Browser, string) {
		b := e2e.NewBrowser(user, x, hydras["tenant-a"], hydras["tenant-b"])
		resp, hops, err := b.Navigate(ctx, appURL(tn)+"/orders")
		if err != nil || resp.Status != 200 || resp.Upstream == nil {
			t.Fatalf("%s login: %v %v (hops %v)", tn, resp, err, hops)
		}
		if !strings.HasPrefix(hops[1], router+"/"+tn+"/oauth2/auth?") {
			t.Fatalf("%s logged in at %s, want its own identity zone", tn, hops[1])
		}
		tok := strings.TrimPrefix(resp.Upstream.Get("authorization"), "Bearer ")
		for other, h := range hydras {
			active, err := h.Introspect(ctx, tok)
			if err != nil {
				t.Fatal(err)
			}
			if active != (other == tn) {
				t.Fatalf("%s's token: active at %s = %v", tn, other, active)
			}
		}
		return b, b.Cookie(appURL(tn), "JSESSIONID")
	}
	userA, cookieA := login("tenant-a", "alice@a.example")
	userB, _ := login("tenant-b", "bob@b.example")

	// A's cookie copied to B's host.
	thief := e2e.NewBrowser("mallory", x)
	thief.SetCookie(appURL("tenant-b"), "JSESSIONID", cookieA)
	r, err := thief.Do(ctx, http.MethodGet, appURL("tenant-b")+"/api", http.Header{"X-Requested-With": {"XMLHttpRequest"}})
	if err != nil || r.Status != http.StatusForbidden || !strings.Contains(r.Body, "another tenant") {
		t.Fatalf("tenant-a's cookie on tenant-b's host: %v %v, want 403", r, err)
	}
	if r, _ := thief.Do(ctx, http.MethodGet, "http://unknown.example:8080/", nil); r.Status != http.StatusNotFound {
		t.Fatalf("a host outside the pattern: %d, want 404", r.Status)
	}

	check := func(label string) {
		for tn, b := range map[string]*e2e.Browser{"tenant-a": userA, "tenant-b": userB} {
			r, err := b.Do(ctx, http.MethodGet, appURL(tn)+"/api", http.Header{"X-Requested-With": {"XMLHttpRequest"}})
			if err != nil || r.Status != 200 {
				t.Fatalf("%s: %s's session: %v %v", label, tn, r, err)
			}
		}
	}
	check("after the cross-tenant attempt")
	x.Kill()
	if err := x.Start(); err != nil {
		t.Fatal(err)
	}
	check("after a restart")
}
