package adversarial_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/e2e"
)

// logoutReq is a browser's GET of the logout endpoint with its session.
func logoutReq(path, cookie string, extra ...string) hreq {
	q := navigation("localhost:8443", path).with("cookie", "JSESSIONID="+cookie)
	return q.with(extra...)
}

// TestLogoutIsFinal (issue 11 class 6): a logout racing a refresh in flight
// still ends the session: afterwards the old cookie gets no token on any
// protocol. Black box, best effort: tokens live 3 s, and the logout lands
// while requests with the expired token refresh it.
func TestLogoutIsFinal(t *testing.T) {
	t.Parallel()
	h, err := e2e.StartHydra(hydraBin, t.TempDir(), e2e.HydraOptions{AccessTokenTTL: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	c, err := h.CreateClient(context.Background(), app)
	if err != nil {
		t.Fatal(err)
	}
	x := start(t, "final", "EXTAUTHZ_OIDC_ISSUER", h.Issuer, "EXTAUTHZ_OIDC_CLIENT_ID", c.ID, "EXTAUTHZ_OIDC_CLIENT_SECRET", c.Secret, "JWT_REFRESH", "2s")
	offsets := []time.Duration{0, 5 * time.Millisecond, 15 * time.Millisecond, 30 * time.Millisecond, 60 * time.Millisecond}
	var wg sync.WaitGroup
	for i, off := range offsets {
		wg.Go(func() {
			b := e2e.NewBrowser(fmt.Sprintf("final%d@example.com", i), x.Extauthz, h)
			hydraMu.Lock()
			resp, hops, err := b.Navigate(context.Background(), app+"/home")
			hydraMu.Unlock()
			if err != nil || resp.Status != 200 {
				t.Errorf("login: %v %v %v", resp, err, hops)
				return
			}
			cookie := b.Cookie(app, "JSESSIONID")
			time.Sleep(3200 * time.Millisecond) // the token has expired: the next request refreshes
			var rw sync.WaitGroup
			for k := range 8 {
				rw.Go(func() { protocols[k%2].do(x, ajax("/home", cookie)) })
			}
			time.Sleep(off)
			lo := viaGRPC(x, logoutReq("/logout", cookie))
			rw.Wait()
			if lo.Status != http.StatusFound {
				t.Errorf("logout %d: %s", i, lo)
			}
			time.Sleep(300 * time.Millisecond)
			for _, p := range protocols {
				for range 3 {
					if r := p.do(x, ajax("/home", cookie)); r.Allowed || r.Bearer() != "" {
						t.Errorf("logout racing a refresh (logout %s after the requests): %s: the logged-out cookie got %s", off, p.name, r)
					}
				}
			}
		})
	}
	wg.Wait()
}

// TestCrossSiteLogout (issue 11 class 6): a cross-site or same-site GET to
// the logout endpoint does not log out and clears no cookie; a same-origin
// one (and a typed URL) does.
func TestCrossSiteLogout(t *testing.T) {
	t.Parallel()
	x := routes(t, "xsite")
	var wg sync.WaitGroup
	for _, p := range protocols {
		for _, site := range []string{"cross-site", "same-site"} {
			for _, path := range []string{"/logout", "/logout?redirect=x", "//logout"} {
				wg.Go(func() {
					_, cookie := login(t, x, "xsite@example.com")
					r := p.do(x, logoutReq(path, cookie, "sec-fetch-site", site, "sec-fetch-mode", "navigate", "sec-fetch-dest", "document"))
					if clearsCookie(r.Header, "JSESSIONID") {
						t.Errorf("%s: GET %s with Sec-Fetch-Site: %s clears the session cookie: %s", p.name, path, site, r)
					}
					if after := p.do(x, ajax("/home", cookie)); after.Status != 200 || after.Bearer() == "" {
						t.Errorf("%s: GET %s with Sec-Fetch-Site: %s logged out: afterwards %s", p.name, path, site, after)
					}
				})
			}
		}
		for _, site := range []string{"same-origin", "none"} {
			wg.Go(func() {
				_, cookie := login(t, x, "leaver@example.com")
				r := p.do(x, logoutReq("/logout", cookie, "sec-fetch-site", site, "sec-fetch-mode", "navigate"))
				if r.Status != http.StatusFound || !clearsCookie(r.Header, "JSESSIONID") {
					t.Errorf("%s: control: logout with Sec-Fetch-Site: %s: %s, want 302 clearing the cookie", p.name, site, r)
				}
				if after := p.do(x, ajax("/home", cookie)); after.Status != http.StatusUnauthorized {
					t.Errorf("%s: control: after a same-origin logout: %s, want 401", p.name, after)
				}
			})
		}
	}
	wg.Wait()
}

// TestLogoutMethodPOST (issue 11 class 6): with logout.logoutMethod POST a
// GET, in any spelling, neither logs out nor clears the cookie.
func TestLogoutMethodPOST(t *testing.T) {
	t.Parallel()
	xs := filepath.Join(t.TempDir(), "xs-app.json")
	os.WriteFile(xs, []byte(strings.Replace(xsApp, `"routes": [`, `"logout": { "logoutEndpoint": "/logout", "logoutMethod": "POST" },
  "routes": [`, 1)), 0o644)
	x := start(t, "postlogout", "EXTAUTHZ_XS_APP", xs)
	_, cookie := login(t, x, "poster@example.com")
	for _, p := range protocols {
		for _, path := range []string{"/logout", "/logout?x=1", "//logout", "/logout;x", "/%6cogout", "/./logout", "/public/../logout"} {
			for _, extra := range [][]string{nil, {"sec-fetch-site", "cross-site"}, {"sec-fetch-site", "same-origin"}, {"x-http-method-override", "POST"}} {
				r := p.do(x, logoutReq(path, cookie, extra...))
				if clearsCookie(r.Header, "JSESSIONID") || r.Allowed || (r.Status != http.StatusMethodNotAllowed && r.Status != http.StatusBadRequest) {
					t.Errorf("%s: GET %s %v with logoutMethod POST: %s (clears cookie: %v), want 405 without clearing", p.name, path, extra, r, clearsCookie(r.Header, "JSESSIONID"))
				}
				if after := p.do(x, ajax("/home", cookie)); after.Status != 200 {
					t.Errorf("%s: GET %s %v with logoutMethod POST logged out: afterwards %s", p.name, path, extra, after)
					_, cookie = login(t, x, "poster@example.com")
				}
			}
		}
	}
	// Control: POST logs out.
	csrf := csrfToken(t, x, cookie)
	q := logoutReq("/logout", cookie, "x-csrf-token", csrf, "sec-fetch-site", "same-origin")
	q.Method = "POST"
	if r := viaGRPC(x, q); !clearsCookie(r.Header, "JSESSIONID") {
		t.Errorf("control: POST /logout: %s, want the logout", r)
	}
	if after := viaGRPC(x, ajax("/home", cookie)); after.Status != http.StatusUnauthorized {
		t.Errorf("control: after POST /logout: %s, want 401", after)
	}
}
