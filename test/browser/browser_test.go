package browser_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"
)

// loggedIn opens page in a new browser, logs in as user at the login form
// and checks the browser is back on page.
func loggedIn(t *testing.T, s *stack, user, page string) *tab {
	t.Helper()
	b := newBrowser(t)
	b.open(s.URL + page)
	b.atLoginForm()
	b.login(user, s.URL+page)
	return b
}

// Scenario 1: open the app, land on the login form, log in, and be back on
// the page asked for; the page's fetch() gets 200, and the API saw a Bearer
// token and no session cookie (the app's own cookie passes).
func TestLoginLandsOnTheAskedPage(t *testing.T) {
	s := newStack(t, stackOptions{})
	b := newBrowser(t)
	asked := s.URL + "/orders/42?tab=items"
	b.open(asked)
	b.atLoginForm()
	if got := b.text("p"); !strings.Contains(got, "Orders app") {
		t.Errorf("the login form says %q, want the app's name", got)
	}
	b.login("alice", asked)

	if got := b.text("#path"); got != "/orders/42?tab=items" {
		t.Fatalf("the page shows path %q", got)
	}
	if shown, status := b.pageAPIStatus(); status != "200" {
		t.Fatalf("the page's own fetch at load got %s: %q", status, shown)
	}
	if got := b.text("main, body"); !strings.Contains(got, "served with a Bearer token") {
		t.Errorf("the page was not served with a Bearer token: %q", got)
	}

	// The app's own cookie, set by its script, passes to the API; the
	// session cookie does not, and the script cannot read it.
	b.do(chromedp.Evaluate[chromedp.Void](`document.cookie = "theme=dark; path=/"`))
	if dc := run(b, chromedp.Evaluate[string](`document.cookie`)); strings.Contains(dc, sessionCookie) {
		t.Errorf("the page's script reads the session cookie: %q", dc)
	}
	r := b.callAPI("/api/orders?id=42")
	e := r.echo()
	if r.Status != 200 || r.Redirected || e == nil {
		t.Fatalf("fetch('/api/orders'): %+v", r)
	}
	if !e.Bearer {
		t.Fatalf("the API saw no Bearer token: %+v", e)
	}
	if active, err := hydra.Introspect(context.Background(), e.Token); err != nil || !active {
		t.Fatalf("the API's token is not active at Hydra (%v)", err)
	}
	if e.SessionCookie || e.Cookie != "theme=dark" {
		t.Fatalf("the API got cookie %q, want only the app's own (theme=dark)", e.Cookie)
	}
	if e.SecFetchMode != "cors" || e.SecFetchSite != "same-origin" {
		t.Errorf("the API saw Sec-Fetch-Mode %q, Sec-Fetch-Site %q", e.SecFetchMode, e.SecFetchSite)
	}
	t.Logf("fetch from the page: Sec-Fetch-Mode %s, Sec-Fetch-Dest %s", e.SecFetchMode, e.SecFetchDest)
}

// Scenario 2: extauthz is killed (SIGKILL) and started again: a reload and
// the page's fetch keep working, without a login.
func TestRestartKeepsTheSession(t *testing.T) {
	s := newStack(t, stackOptions{})
	page := s.URL + "/orders"
	b := loggedIn(t, s, "bob", "/orders")
	before := b.callAPI("/api/echo").echo()
	if before == nil {
		t.Fatal("no API answer before the restart")
	}

	s.X.Kill()
	if err := s.X.Start(); err != nil {
		t.Fatal(err)
	}
	if u := b.reload(); u != page {
		t.Fatalf("after the restart a reload went to %s, want %s", u, page)
	}
	if shown, status := b.pageAPIStatus(); status != "200" {
		t.Fatalf("after the restart the page's fetch got %s: %q", status, shown)
	}
	r := b.callAPI("/api/echo")
	if e := r.echo(); e == nil || !e.Bearer || e.Token != before.Token {
		t.Fatalf("after the restart fetch got %+v, want 200 with the same token", r)
	}
}

// Scenario 3: the session ends (an administrator deletes it in Redis, or
// its idle timeout passes): the page's fetch gets a 401 it can read (not a
// redirect, not a CORS failure) and no login starts for it; a reload, a
// navigation, goes to the login form, and logging in again brings the
// person back to the page.
func TestEndedSessionFetchGets401ReloadLogsIn(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  []string
		end  func(t *testing.T, s *stack)
	}{
		{"revoked by an administrator", nil, func(t *testing.T, s *stack) { s.endSessions(t, "carol") }},
		// The cache extends the idle expiry at most once per touch interval:
		// a session idle 2 s expires between 2 and 2 + 1 s.
		{"idle timeout", []string{"SESSION_TIMEOUT", "2s", "EXTAUTHZ_SESSION_TOUCH_INTERVAL", "1s"}, func(t *testing.T, s *stack) {
			for deadline := time.Now().Add(5 * time.Second); len(s.sessionKeys(t)) > 0; time.Sleep(100 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Fatal("the session did not expire")
				}
			}
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStack(t, stackOptions{Env: tc.env})
			page := s.URL + "/reports?year=2026"
			b := loggedIn(t, s, "carol", "/reports?year=2026")
			if r := b.callAPI("/api/echo"); r.Status != 200 {
				t.Fatalf("fetch before the session ended: %+v", r)
			}

			tc.end(t, s)
			r := b.callAPI("/api/echo")
			if r.Error != "" {
				t.Fatalf("fetch after the session ended failed as a script sees a network or CORS error: %s", r.Error)
			}
			if r.Status != 401 || r.Redirected || r.Type != "basic" || r.URL != s.URL+"/api/echo" {
				t.Fatalf("fetch after the session ended: %+v, want a plain 401 from the app's own URL", r)
			}
			if !strings.Contains(r.text(), "Unauthorized") {
				t.Errorf("the 401's body: %q", r.text())
			}
			if st := stateCookies(b.cookies(s.URL + "/login/callback")); len(st) != 0 {
				t.Errorf("a script's 401 started a login: state cookie %s", st[0].Name)
			}

			b.reload()
			b.atLoginForm()
			b.login("carol", page)
			if shown, status := b.pageAPIStatus(); status != "200" {
				t.Fatalf("after logging in again the page's fetch got %s: %q", status, shown)
			}
		})
	}
}

// Scenario 4: two tabs of one browser start a login at the same time; both
// finish, each on its own page. extauthz gives each login its own state
// cookie. Hydra keeps one pending login per client in a browser cookie, so
// of two logins at once it refuses the older (request_forbidden, "CSRF
// value ... does not match"): that tab shows the "Login failed" page,
// whose "Start again" leads back to the tab's own page, where the other
// tab's login has already signed the browser in.
func TestTwoTabsLogInAtOnce(t *testing.T) {
	s := newStack(t, stackOptions{})
	a := newBrowser(t)
	b := a.newTab()
	tabs := []*tab{a, b}
	pages := []string{s.URL + "/tab/a?x=1", s.URL + "/tab/b"}
	both := func(f func(tb *tab, page string)) {
		done := make(chan struct{})
		go func() { defer close(done); f(b, pages[1]) }()
		f(a, pages[0])
		<-done
	}
	both(func(tb *tab, page string) { tb.open(page) })
	a.atLoginForm()
	b.atLoginForm()
	if n := len(stateCookies(a.cookies(s.URL + "/login/callback"))); n != 2 {
		t.Fatalf("%d state cookies for two logins, want one each", n)
	}
	both(func(tb *tab, _ string) { tb.submitLogin("dave") })
	landed := 0
	var failed []int
	for i, tb := range tabs {
		u := tb.waitURL("the page or an error", func(u string) bool {
			return u == pages[i] || strings.HasPrefix(u, s.URL+"/login/callback?")
		})
		if u == pages[i] {
			landed++
			continue
		}
		failed = append(failed, i)
		if h, p := tb.text("h1"), tb.text("body"); h != "Login failed" || !strings.Contains(p, "identity provider answered") {
			t.Fatalf("tab %d ended at %s saying %q: %q", i, u, h, p)
		}
		t.Logf("tab %d: %s", i, tb.text("body"))
	}
	if landed == 0 {
		t.Fatal("neither tab's login finished")
	}
	for _, i := range failed {
		tabs[i].do(chromedp.Click(chromedp.CSS("a")))
		tabs[i].waitURL(pages[i], func(u string) bool { return u == pages[i] })
	}
	t.Logf("%d of 2 tabs landed at once; %d after Start again", landed, len(failed))
	for _, tb := range tabs {
		if shown, status := tb.pageAPIStatus(); status != "200" {
			t.Fatalf("the page's fetch got %s: %q", status, shown)
		}
		if r := tb.callAPI("/api/echo"); r.echo() == nil || !r.echo().Bearer {
			t.Fatalf("fetch: %+v", r)
		}
	}
	if st := stateCookies(a.cookies(s.URL + "/login/callback")); len(st) != 0 {
		t.Errorf("state cookies left after both logins: %d", len(st))
	}
}

// Scenario 5: logout ends on the logged-out page; neither the back button
// nor a reload brings the session back.
func TestLogoutIsFinal(t *testing.T) {
	s := newStack(t, stackOptions{TLS: true})
	page := s.URL + "/orders"
	b := loggedIn(t, s, "erin", "/orders")
	if n := len(s.sessionKeys(t)); n != 1 {
		t.Fatalf("%d sessions in Redis, want 1", n)
	}

	b.do(chromedp.Click(chromedp.ID("logout")))
	b.waitURL("the logged-out page", func(u string) bool { return u == s.URL+"/logged-out.html" })
	if h := b.text("h1"); h != "You are logged out" {
		t.Fatalf("after logout the page says %q", h)
	}
	if n := len(s.sessionKeys(t)); n != 0 {
		t.Fatalf("%d sessions left in Redis after logout", n)
	}
	if c := cookieNamed(b.cookies(s.URL+"/"), sessionCookie); c != nil {
		t.Fatalf("the browser still holds the session cookie after logout")
	}

	// Back: Chromium shows the page again from its back/forward cache,
	// without asking the server (the logout happened during the navigation
	// that put it there, so neither its Cache-Control: no-store nor the
	// deleted cookie evicts it). Its script, asking again on pageshow, gets
	// 401 and tells the person. Were the page asked for again, it would be a
	// login.
	u := b.back()
	restored := run(b, chromedp.Evaluate[string](`document.documentElement.dataset.restored || ""`))
	t.Logf("back button after logout: %s (restored from the back/forward cache: %v)", u, restored == "bfcache")
	switch {
	case strings.HasPrefix(u, loginURL+"/login?"):
	case u == page && restored == "bfcache":
		if shown, status := b.pageAPIStatus(); status != "401" || !strings.Contains(shown, "session has ended") {
			t.Fatalf("after logout and back, the page's fetch got %s and shows %q", status, shown)
		}
		if r := b.callAPI("/api/echo"); r.Status != 401 || r.Redirected {
			t.Fatalf("after logout and back, fetch got %+v", r)
		}
	default:
		t.Fatalf("back after logout went to %s", u)
	}
	b.reload()
	b.atLoginForm()
}

// Scenario 6: the cookies as Chromium stores them (CDP Network.getCookies):
// with extauthz's default (Secure) over plain http on app.localhost (a
// browser keeps Secure cookies on http://localhost) and over https, and
// with SECURE_SESSION_COOKIE=false: the per-login state cookie while the
// login runs, the session cookie after it, and no state cookie left.
func TestCookiesAsStored(t *testing.T) {
	for _, tc := range []struct {
		name   string
		tls    bool
		env    []string
		secure bool
		cookie string // the session cookie's name
	}{
		{"http default Secure", false, nil, true, sessionCookie},
		{"https default Secure", true, nil, true, sessionCookie},
		{"http SECURE_SESSION_COOKIE=false", false, []string{"SECURE_SESSION_COOKIE", "false"}, false, sessionCookie},
		// A __Host- name (kept only Secure, Path=/, no Domain): the state
		// cookie, on the callback's path, is __Secure-sid_login_….
		{"https __Host- session cookie", true, []string{"SESSION_COOKIE_NAME", hostCookie}, true, hostCookie},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := newStack(t, stackOptions{TLS: tc.tls, Env: tc.env})
			host := strings.Split(strings.TrimPrefix(strings.TrimPrefix(s.URL, "https://"), "http://"), ":")[0]
			urls := []string{s.URL + "/", s.URL + "/login/callback", s.URL + "/orders"}
			check := func(c *network.Cookie, path string) {
				t.Helper()
				if !c.HTTPOnly || c.Secure != tc.secure || c.SameSite != network.CookieSameSiteLax || c.Path != path {
					t.Errorf("%s: HttpOnly %v, Secure %v (want %v), SameSite %q, Path %q (want %s)", c.Name, c.HTTPOnly, c.Secure, tc.secure, c.SameSite, c.Path, path)
				}
				// Host-only: no Domain attribute, so the browser keeps the
				// bare host (a Domain cookie's has a leading dot).
				if c.Domain != host {
					t.Errorf("%s: domain %q, want host-only %q", c.Name, c.Domain, host)
				}
				if c.PartitionKey != nil {
					t.Errorf("%s: partitioned %+v", c.Name, c.PartitionKey)
				}
			}
			b := newBrowser(t)
			b.open(s.URL + "/orders")
			b.atLoginForm()
			st := stateCookies(b.cookies(urls...))
			if len(st) != 1 {
				t.Fatalf("%d state cookies during the login, want 1", len(st))
			}
			check(st[0], "/login/callback")
			if tc.cookie == hostCookie && !strings.HasPrefix(st[0].Name, "__Secure-sid_login_") {
				t.Errorf("state cookie %s, want __Secure-sid_login_…", st[0].Name)
			}
			if left := time.Until(time.Unix(int64(st[0].Expires), 0)); st[0].Session || left < 170*time.Second || left > 181*time.Second {
				t.Errorf("state cookie: session %v, expires in %s, want about 180s", st[0].Session, left)
			}
			if c := cookieNamed(b.cookies(urls...), tc.cookie); c != nil {
				t.Fatalf("a session cookie before the login: %+v", c)
			}

			b.login("frank", s.URL+"/orders")
			all := b.cookies(urls...)
			c := cookieNamed(all, tc.cookie)
			if c == nil {
				t.Fatalf("no session cookie after the login: %+v", all)
			}
			check(c, "/")
			if tc.cookie == hostCookie {
				// The login binding (a __Host- cookie no sibling can plant).
				if b := cookieNamed(all, hostCookie+"_b"); b == nil {
					t.Errorf("no %s_b binding cookie: %+v", hostCookie, all)
				} else {
					check(b, "/")
				}
			}
			if !c.Session {
				t.Errorf("session cookie expires at %v, want a browser-session cookie", c.Expires)
			}
			if st := stateCookies(all); len(st) != 0 {
				t.Errorf("state cookie %s left after the callback", st[0].Name)
			}
			for _, c := range all {
				t.Logf("stored: %s domain=%s path=%s httpOnly=%v secure=%v sameSite=%s session=%v", c.Name, c.Domain, c.Path, c.HTTPOnly, c.Secure, c.SameSite, c.Session)
			}
			if r := b.callAPI("/api/echo"); r.echo() == nil || !r.echo().Bearer || r.echo().SessionCookie {
				t.Fatalf("fetch: %+v", r)
			}
		})
	}
}

// Scenario 7: what a person sees when the login fails: the identity
// provider's error (the person pressed Cancel) and an expired login (the
// login form was left open until the state cookie expired). Each page says
// what happened and offers a way back; screenshots are written to the
// test's artifact directory (go test -artifacts).
func TestLoginFailurePages(t *testing.T) {
	s := newStack(t, stackOptions{})
	t.Run("identity provider error", func(t *testing.T) {
		b := newBrowser(t)
		b.open(s.URL + "/reports")
		b.atLoginForm()
		b.do(chromedp.Click(chromedp.ID("cancel")))
		b.waitURL("the callback's page", func(u string) bool { return strings.HasPrefix(u, s.URL+"/login/callback?") })
		b.screenshot("idp-error")
		if h := b.text("h1"); h != "Login failed" {
			t.Fatalf("the page says %q", h)
		}
		if p := b.text("body"); !strings.Contains(p, "access_denied") || !strings.Contains(p, "cancelled") {
			t.Errorf("the page does not say what happened: %q", p)
		}
		if st := stateCookies(b.cookies(s.URL + "/login/callback")); len(st) != 0 {
			t.Errorf("state cookie left after the failed login")
		}
		// The way back: to the page asked for, through a new login.
		b.do(chromedp.Click(chromedp.CSS("a")))
		b.atLoginForm()
		b.login("grace", s.URL+"/reports")
	})
	t.Run("expired login", func(t *testing.T) {
		b := newBrowser(t)
		b.open(s.URL + "/reports")
		b.atLoginForm()
		st := stateCookies(b.cookies(s.URL + "/login/callback"))
		if len(st) != 1 {
			t.Fatalf("%d state cookies", len(st))
		}
		// The person leaves the form open past the state cookie's Max-Age
		// (180 s): Chromium drops it. (Here it is made to expire in 1 s.)
		b.expireCookie(s.URL+"/login/callback", st[0].Name)
		b.submitLogin("heidi")
		b.waitURL("the callback's page", func(u string) bool { return strings.HasPrefix(u, s.URL+"/login/callback?") })
		b.screenshot("expired-login")
		if h := b.text("h1"); h != "Login failed" {
			t.Fatalf("the page says %q", h)
		}
		if p := b.text("body"); !strings.Contains(p, "expired") {
			t.Errorf("the page does not say the login expired: %q", p)
		}
		if c := cookieNamed(b.cookies(s.URL+"/"), sessionCookie); c != nil {
			t.Fatal("an expired login set a session cookie")
		}
		b.do(chromedp.Click(chromedp.CSS("a")))
		b.atLoginForm()
		b.login("heidi", s.URL+"/")
	})
}
