package browser_test

import (
	"context"
	"strings"
	"testing"

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
