// Package e2e_test runs extauthz end to end: the real binary as child
// processes, a real redis-server, a real Ory Hydra, and a client that plays
// Envoy and a browser. See DEVELOPERS.md.
package e2e_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/e2e"
	"github.com/extauthz/extauthz/internal/redistest"
)

const app = "http://app.localhost:8080"

var (
	extauthzBin string
	hydraBin    string
	redis       *redistest.Server
	hydra       *e2e.Hydra
	client      e2e.Client
)

func TestMain(m *testing.M) { os.Exit(setup(m)) }

func setup(m *testing.M) int {
	if _, err := redistest.Binary(); err != nil {
		if os.Getenv("CI") != "" {
			fmt.Fprintln(os.Stderr, "e2e:", err, "(CI is set: a real Redis is required)")
			return 1
		}
		fmt.Fprintln(os.Stderr, "e2e: skipped:", err)
		return 0
	}
	dir, err := os.MkdirTemp("", "extauthz-e2e-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	root, err := e2e.ModuleRoot()
	if err == nil {
		extauthzBin, err = e2e.BuildExtauthz(root, dir)
	}
	if err == nil {
		hydraBin, err = e2e.BuildHydra(root, os.Stderr)
	}
	if err == nil {
		redis, err = redistest.Start(dir)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e setup:", err)
		return 1
	}
	defer redis.Stop()
	hydra, err = e2e.StartHydra(hydraBin, dir, e2e.HydraOptions{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e setup:", err)
		return 1
	}
	defer hydra.Close()
	if client, err = hydra.CreateClient(context.Background(), app); err != nil {
		fmt.Fprintln(os.Stderr, "e2e setup:", err)
		return 1
	}
	return m.Run()
}

const e2eSecret = "e2e-secret-7d1f3a9c5b2e8f0a4c6d1b3e5f7a9c2d4e6f8a0b1c3d5e7f9a2b4c6d8e0f"

// keyPrefix is the Redis key prefix of a test's replicas.
func keyPrefix(t *testing.T) string { return "e2e-" + strings.ReplaceAll(t.Name(), "/", "-") }

// replica starts one extauthz process on the shared Redis, logging in at h,
// and waits until it is ready.
func replica(t *testing.T, name string, h *e2e.Hydra, c e2e.Client, extra ...string) *e2e.Extauthz {
	t.Helper()
	return startReplica(t, name, e2e.StartExtauthz, h, c, extra...)
}

func startReplica(t *testing.T, name string, start func(string, string, map[string]string, io.Writer) (*e2e.Extauthz, error),
	h *e2e.Hydra, c e2e.Client, extra ...string) *e2e.Extauthz {
	t.Helper()
	logFile := filepath.Join(t.TempDir(), name+".log")
	f, err := os.Create(logFile)
	if err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"EXTAUTHZ_REDIS_URL":          "redis://" + redis.Addr,
		"EXTAUTHZ_SESSION_KEY_PREFIX": keyPrefix(t),
		"EXTAUTHZ_SESSION_SECRETS":    e2eSecret,
		"EXTAUTHZ_OIDC_ISSUER":        h.Issuer,
		"EXTAUTHZ_OIDC_CLIENT_ID":     c.ID,
		"EXTAUTHZ_OIDC_CLIENT_SECRET": c.Secret,
		"EXTAUTHZ_OIDC_SCOPES":        "openid offline_access",
		"EXTAUTHZ_LOG_LEVEL":          "debug",
		"EXTAUTHZ_LOG_FORMAT":         "text",
	}
	for i := 0; i+1 < len(extra); i += 2 {
		env[extra[i]] = extra[i+1]
	}
	x, err := start(name, extauthzBin, env, f)
	if err != nil {
		t.Fatalf("%v\n%s", err, readFile(logFile))
	}
	t.Cleanup(func() {
		x.Close()
		f.Close()
		log := readFile(logFile)
		if t.Failed() {
			t.Logf("%s log:\n%s", name, log)
		}
		// Whatever happened, no secret reaches the log.
		for _, secret := range []string{c.Secret, env["EXTAUTHZ_SESSION_SECRETS"], "ory_at_", "ory_rt_", "eyJ"} {
			if strings.Contains(log, secret) {
				t.Errorf("%s's log contains %q", name, secret)
			}
		}
	})
	return x
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

// loginAt logs a browser in and checks what the app received.
func loginAt(t *testing.T, b *e2e.Browser, path string) (resp *e2e.Response, hops []string) {
	t.Helper()
	ctx := context.Background()
	resp, hops, err := b.Navigate(ctx, app+path)
	if err != nil {
		t.Fatalf("login: %v (hops %v)", err, hops)
	}
	if resp.Status != 200 || resp.Upstream == nil {
		t.Fatalf("login ended with %d %q (hops %v)", resp.Status, resp.Body, hops)
	}
	if got := hops[len(hops)-1]; got != app+path {
		t.Fatalf("after login the browser is at %s, want %s", got, app+path)
	}
	return resp, hops
}

func bearer(t *testing.T, r *e2e.Response) string {
	t.Helper()
	tok, ok := strings.CutPrefix(r.Upstream.Get("authorization"), "Bearer ")
	if !ok || tok == "" {
		t.Fatalf("upstream authorization = %q, want a Bearer token", r.Upstream.Get("authorization"))
	}
	return tok
}

func ajax(t *testing.T, b *e2e.Browser, path string) *e2e.Response {
	t.Helper()
	r, err := b.Do(context.Background(), http.MethodGet, app+path, http.Header{"X-Requested-With": {"XMLHttpRequest"}})
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Scenario 1: log in; the upstream sees the Bearer token Hydra issued and no
// session cookie.
func TestLoginUpstreamSeesHydraToken(t *testing.T) {
	x := replica(t, "a", hydra, client)
	b := e2e.NewBrowser("alice@example.com", x, hydra)
	b.SetCookie(app, "theme", "dark")
	resp, hops := loginAt(t, b, "/orders?id=42")

	var sawHydra, sawCallback bool
	for _, h := range hops {
		sawHydra = sawHydra || strings.HasPrefix(h, hydra.Issuer+"/oauth2/auth")
		sawCallback = sawCallback || strings.HasPrefix(h, app+"/login/callback?")
	}
	if !sawHydra || !sawCallback {
		t.Fatalf("the login did not go through Hydra and the callback: %v", hops)
	}
	tok := bearer(t, resp)
	active, err := hydra.Introspect(context.Background(), tok)
	if err != nil || !active {
		t.Fatalf("Hydra says the forwarded token is active=%v (%v)", active, err)
	}
	if c := resp.Upstream.Get("cookie"); strings.Contains(c, "JSESSIONID") || c != "theme=dark" {
		t.Fatalf("upstream cookie header %q: want the app's cookies without the session cookie", c)
	}
	if n := hydra.CodeGrants.Load(); n < 1 {
		t.Fatalf("no code grant reached Hydra")
	}
}

// Scenario 2: SIGKILL extauthz and start a new process: the same cookie works.
func TestSessionSurvivesSIGKILL(t *testing.T) {
	x := replica(t, "a", hydra, client)
	b := e2e.NewBrowser("bob@example.com", x, hydra)
	resp, _ := loginAt(t, b, "/")
	before := bearer(t, resp)
	cookie := b.Cookie(app, "JSESSIONID")

	x.Kill()
	if err := x.Start(); err != nil {
		t.Fatal(err)
	}
	r := ajax(t, b, "/api/orders")
	if r.Status != 200 || bearer(t, r) != before {
		t.Fatalf("after SIGKILL and restart: %d, want 200 with the same token", r.Status)
	}
	if b.Cookie(app, "JSESSIONID") != cookie {
		t.Fatal("the session cookie changed across the restart")
	}
}

// Scenario 3: two processes on one Redis: a session made on one works on the other.
func TestSessionWorksOnAnotherReplica(t *testing.T) {
	a := replica(t, "a", hydra, client)
	bRep := replica(t, "b", hydra, client)
	br := e2e.NewBrowser("carol@example.com", a, hydra)
	resp, _ := loginAt(t, br, "/")
	br.Use(bRep)
	r := ajax(t, br, "/api")
	if r.Status != 200 || bearer(t, r) != bearer(t, resp) {
		t.Fatalf("on replica b: %d %q", r.Status, r.Body)
	}
}

// Scenario 4: logout on one replica: the cookie is refused on both, and the
// browser lands on Hydra's logout.
func TestLogoutOnOneReplicaEndsTheSessionEverywhere(t *testing.T) {
	a := replica(t, "a", hydra, client)
	bRep := replica(t, "b", hydra, client)
	br := e2e.NewBrowser("dave@example.com", a, hydra)
	loginAt(t, br, "/")
	cookie := br.Cookie(app, "JSESSIONID")

	br.Use(bRep)
	r, err := br.Do(context.Background(), http.MethodGet, app+"/logout", nil)
	if err != nil {
		t.Fatal(err)
	}
	loc, _ := url.Parse(r.Header.Get("location"))
	if r.Status != http.StatusFound || !strings.HasPrefix(loc.String(), hydra.Issuer+"/oauth2/sessions/logout?") ||
		loc.Query().Get("id_token_hint") == "" || loc.Query().Get("post_logout_redirect_uri") != app+"/" {
		t.Fatalf("logout answered %d to %s, want a redirect to Hydra's logout with id_token_hint", r.Status, loc)
	}
	if br.Cookie(app, "JSESSIONID") != "" {
		t.Fatal("logout did not clear the session cookie")
	}
	// Follow Hydra's logout until it sends the browser back to the app.
	_, hops, err := br.NavigateUntil(context.Background(), loc.String(), func(u *url.URL) bool { return u.Host == "app.localhost:8080" })
	if err != nil || hops[len(hops)-1] != app+"/" {
		t.Fatalf("Hydra's logout ended at %v (%v), want %s/", hops, err, app)
	}
	// The old cookie, replayed on either replica, opens nothing.
	for _, x := range []*e2e.Extauthz{a, bRep} {
		br.Use(x)
		br.SetCookie(app, "JSESSIONID", cookie)
		if r := ajax(t, br, "/api"); r.Status != http.StatusUnauthorized {
			t.Fatalf("%s: the logged-out cookie got %d, want 401", x.Name, r.Status)
		}
	}
}

// Scenario 5: short-lived tokens: 50 concurrent requests on two replicas
// around expiry cause exactly one refresh grant, and no request fails.
func TestRefreshOnceAcrossReplicas(t *testing.T) {
	h, err := e2e.StartHydra(hydraBin, t.TempDir(), e2e.HydraOptions{AccessTokenTTL: 8 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	c, err := h.CreateClient(context.Background(), app)
	if err != nil {
		t.Fatal(err)
	}
	a := replica(t, "a", h, c, "JWT_REFRESH", "5s")
	bRep := replica(t, "b", h, c, "JWT_REFRESH", "5s")
	br := e2e.NewBrowser("erin@example.com", a, h)
	resp, _ := loginAt(t, br, "/")
	first := bearer(t, resp)
	loggedIn := time.Now()
	cookie := br.Cookie(app, "JSESSIONID")

	burst := func(label string) map[string]int {
		tokens := map[string]int{}
		var mu sync.Mutex
		var wg sync.WaitGroup
		for i := range 50 {
			wg.Go(func() {
				nb := e2e.NewBrowser("erin@example.com", []*e2e.Extauthz{a, bRep}[i%2], h)
				nb.SetCookie(app, "JSESSIONID", cookie)
				r := ajax(t, nb, "/api")
				mu.Lock()
				defer mu.Unlock()
				if r.Status != 200 {
					t.Errorf("%s: request %d got %d %q", label, i, r.Status, r.Body)
					return
				}
				tokens[strings.TrimPrefix(r.Upstream.Get("authorization"), "Bearer ")]++
			})
		}
		wg.Wait()
		return tokens
	}

	// (a) Inside the refresh window, the token still valid: one request
	// refreshes, the others keep using the current token.
	time.Sleep(time.Until(loggedIn.Add(4 * time.Second)))
	burst("refresh ahead")
	if n := h.RefreshGrants.Load(); n != 1 {
		t.Fatalf("refresh ahead: %d refresh grants for 50 requests on 2 replicas, want 1", n)
	}
	after := burst("after refresh")
	if len(after) != 1 || after[first] != 0 {
		t.Fatalf("after the refresh every request must carry the one new token: %v", after)
	}
	var second string
	for tok := range after {
		second = tok
	}
	if active, _ := h.Introspect(context.Background(), second); !active {
		t.Fatal("the refreshed token is not active at Hydra")
	}

	// (b) The token has expired with nobody asking: the burst waits for one
	// refresh instead of failing.
	time.Sleep(10 * time.Second)
	if n := h.RefreshGrants.Load(); n != 1 {
		t.Fatalf("refresh grants without requests: %d", n)
	}
	expired := burst("after expiry")
	if n := h.RefreshGrants.Load(); n != 2 {
		t.Fatalf("after expiry: %d refresh grants in all, want 2 (one per rotation)", n)
	}
	if len(expired) != 1 || expired[second] != 0 {
		t.Fatalf("after expiry every request must carry the one new token: %v", expired)
	}
}

// Scenario 6: AJAX without a session gets 401; a replayed callback gets 4xx;
// a callback whose state cookie is missing gets 4xx; a cancelled login gets 403.
func TestLoginErrors(t *testing.T) {
	x := replica(t, "a", hydra, client)
	ctx := context.Background()

	t.Run("ajax without session", func(t *testing.T) {
		b := e2e.NewBrowser("frank@example.com", x, hydra)
		if r := ajax(t, b, "/api"); r.Status != http.StatusUnauthorized {
			t.Fatalf("got %d, want 401", r.Status)
		}
		r, err := b.Do(ctx, http.MethodPost, app+"/api", nil)
		if err != nil || r.Status != http.StatusUnauthorized {
			t.Fatalf("POST without session: %d %v, want 401", r.Status, err)
		}
	})
	t.Run("replayed callback", func(t *testing.T) {
		b := e2e.NewBrowser("frank@example.com", x, hydra)
		_, hops := loginAt(t, b, "/")
		var callback string
		for _, h := range hops {
			if strings.HasPrefix(h, app+"/login/callback?") {
				callback = h
			}
		}
		r, err := b.Do(ctx, http.MethodGet, callback, nil)
		if err != nil || r.Status < 400 || r.Status >= 500 || r.Header.Get("location") != "" {
			t.Fatalf("replayed callback: %d %v (location %q), want a 4xx page", r.Status, err, r.Header.Get("location"))
		}
	})
	t.Run("callback without state cookie", func(t *testing.T) {
		b := e2e.NewBrowser("frank@example.com", x, hydra)
		_, hops, err := b.NavigateUntil(ctx, app+"/", func(u *url.URL) bool { return u.Path == "/login/callback" })
		if err != nil {
			t.Fatal(err)
		}
		b.DeleteCookies(app+"/login/callback", "JSESSIONID_login_")
		r, err := b.Do(ctx, http.MethodGet, hops[len(hops)-1], nil)
		if err != nil || r.Status != http.StatusBadRequest || !strings.Contains(r.Body, "not started in this browser") {
			t.Fatalf("callback without state cookie: %d %q %v, want 400", r.Status, r.Body, err)
		}
		if b.Cookie(app, "JSESSIONID") != "" {
			t.Fatal("a session cookie was set")
		}
	})
	t.Run("cancelled login", func(t *testing.T) {
		b := e2e.NewBrowser("frank@example.com", x, hydra)
		_, hops, err := b.NavigateUntil(ctx, app+"/", func(u *url.URL) bool { return u.Host == e2e.LoginHost })
		if err != nil {
			t.Fatal(err)
		}
		login, _ := url.Parse(hops[len(hops)-1])
		next, err := hydra.RejectLogin(ctx, login.Query().Get("login_challenge"))
		if err != nil {
			t.Fatal(err)
		}
		r, hops, err := b.Navigate(ctx, next)
		if err != nil || r.Status != http.StatusForbidden || !strings.Contains(r.Body, "access_denied") {
			t.Fatalf("cancelled login ended with %v %v (hops %v), want a 403 page naming access_denied", r, err, hops)
		}
	})
}
