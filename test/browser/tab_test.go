package browser_test

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/cdp"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/page"
	"github.com/chromedp/chromedp"
)

// tab is one browser tab. Tabs made with newBrowser have a browser context
// (cookies, cache, history) of their own; tabs made with tab.newTab share
// their opener's.
type tab struct {
	t   *testing.T
	ctx context.Context
}

// newBrowser opens a tab in a fresh browser context: a person with a new
// browser profile.
func newBrowser(t *testing.T) *tab {
	t.Helper()
	ctx, cancel := chromedp.NewContext(browser, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	tb := &tab{t: t, ctx: ctx}
	tb.open("about:blank")
	return tb
}

// newTab opens another tab in the same browser context.
func (tb *tab) newTab() *tab {
	tb.t.Helper()
	ctx, cancel := chromedp.NewContext(tb.ctx)
	tb.t.Cleanup(cancel)
	nt := &tab{t: tb.t, ctx: ctx}
	nt.open("about:blank")
	return nt
}

func (tb *tab) do(actions ...chromedp.Action[chromedp.Void]) {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 20*time.Second)
	defer cancel()
	if err := chromedp.Do(ctx, actions...); err != nil {
		tb.t.Fatalf("browser: %v (at %s)", err, tb.url())
	}
}

func run[T any](tb *tab, a chromedp.Action[T]) T {
	tb.t.Helper()
	ctx, cancel := context.WithTimeout(tb.ctx, 20*time.Second)
	defer cancel()
	v, err := chromedp.Run(ctx, a)
	if err != nil {
		tb.t.Fatalf("browser: %v (at %s)", err, tb.url())
	}
	return v
}

// url is where the tab is ("" when it cannot tell).
func (tb *tab) url() string {
	ctx, cancel := context.WithTimeout(tb.ctx, 2*time.Second)
	defer cancel()
	u, _ := chromedp.Run(ctx, chromedp.Location())
	return u
}

// open navigates to u and waits until the page has loaded, wherever the
// redirects took the browser.
func (tb *tab) open(u string) string {
	tb.t.Helper()
	// Page.navigate, then a wait for the loaded document: chromedp.Navigate's
	// own wait for the load never ended here when the redirects led to
	// another site (the identity provider).
	res, err := chromedp.Call(tb.ctx, page.Navigate, page.NavigateParams{URL: u})
	if err != nil || res.ErrorText != "" {
		tb.t.Fatalf("open %s: %v %s", u, err, res.ErrorText)
	}
	return tb.settled()
}

// settled waits until the document has loaded and returns its URL.
func (tb *tab) settled() string {
	tb.t.Helper()
	return tb.waitURL("a loaded page", func(string) bool { return true })
}

// waitURL waits until a page whose URL satisfies ok has loaded, and
// returns that URL.
func (tb *tab) waitURL(what string, ok func(u string) bool) string {
	tb.t.Helper()
	var last string
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		ctx, cancel := context.WithTimeout(tb.ctx, 2*time.Second)
		u, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.readyState === "complete" ? location.href : ""`))
		cancel()
		if err == nil && u != "" {
			last = u
			if ok(u) {
				return u
			}
		}
	}
	tb.t.Fatalf("waiting for %s: the browser is at %q", what, last)
	return ""
}

// text is the visible text of the first element sel matches.
func (tb *tab) text(sel string) string {
	tb.t.Helper()
	return strings.TrimSpace(run(tb, chromedp.Text(chromedp.CSS(sel))))
}

// atLoginForm asserts that the tab shows the identity provider's login form.
func (tb *tab) atLoginForm() {
	tb.t.Helper()
	u := tb.waitURL("the login form", func(u string) bool { return strings.HasPrefix(u, loginURL+"/login?") })
	if h := tb.text("h1"); h != "Log in" {
		tb.t.Fatalf("at %s the page says %q, want the login form", u, h)
	}
	tb.do(chromedp.WaitVisible(chromedp.ID("username")))
}

// submitLogin types user into the login form and presses "Log in", as a
// person would, without waiting for where it leads.
func (tb *tab) submitLogin(user string) {
	tb.t.Helper()
	tb.atLoginForm()
	tb.do(
		chromedp.SendKeys(chromedp.ID("username"), user),
		chromedp.Click(chromedp.ID("login")),
	)
}

// login logs in at the login form and waits until the browser is back at
// want.
func (tb *tab) login(user, want string) {
	tb.t.Helper()
	tb.submitLogin(user)
	tb.waitURL(want, func(u string) bool { return u == want })
}

// apiResult is what the page's callAPI() gets from fetch().
type apiResult struct {
	Status     int             `json:"status"`
	Redirected bool            `json:"redirected"`
	Type       string          `json:"type"`
	URL        string          `json:"url"`
	Body       json.RawMessage `json:"body"`
	Error      string          `json:"error"`
}

// echo is the API's echo in the result, or nil when the body is not one.
func (r apiResult) echo() *apiEcho {
	var e apiEcho
	if r.Status != 200 || json.Unmarshal(r.Body, &e) != nil || e.Method == "" {
		return nil
	}
	return &e
}

func (r apiResult) text() string {
	var s string
	if json.Unmarshal(r.Body, &s) == nil {
		return s
	}
	return string(r.Body)
}

// callAPI runs the app page's own script: callAPI(path), a fetch().
func (tb *tab) callAPI(path string) apiResult {
	tb.t.Helper()
	b := run(tb, chromedp.Evaluate[[]byte](`callAPI(`+jsString(path)+`)`, chromedp.EvalAwaitPromise))
	var r apiResult
	if err := json.Unmarshal(b, &r); err != nil {
		tb.t.Fatalf("callAPI: %v: %s", err, b)
	}
	return r
}

// pageAPIStatus waits for the page's own fetch (at load, or when shown
// again from the back/forward cache) and returns what it showed the person
// and the status it got. (Read with script: chromedp's DOM queries do not
// see a document the back/forward cache restored.)
func (tb *tab) pageAPIStatus() (shown, status string) {
	tb.t.Helper()
	var r struct{ Shown, Status string }
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		b := run(tb, chromedp.Evaluate[[]byte](`(() => { const el = document.getElementById("api");
			return el ? { shown: el.textContent, status: el.dataset.status } : {}; })()`))
		if err := json.Unmarshal(b, &r); err == nil && r.Status != "" {
			return r.Shown, r.Status
		}
	}
	tb.t.Fatalf("the page's own API call did not finish: %+v", r)
	return "", ""
}

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// cookies are the cookies the browser stores for the URLs (CDP
// Network.getCookies).
func (tb *tab) cookies(urls ...string) []*network.Cookie {
	tb.t.Helper()
	res, err := chromedp.Call(tb.ctx, network.GetCookies, network.GetCookiesParams{URLs: urls})
	if err != nil {
		tb.t.Fatal(err)
	}
	return res.Cookies
}

// back presses the back button and waits until a page is shown, whether it
// came from the network or from the back/forward cache.
func (tb *tab) back() string {
	tb.t.Helper()
	h := run(tb, chromedp.NavigationEntries())
	if h.CurrentIndex < 1 {
		tb.t.Fatal("no page to go back to")
	}
	prev := h.Entries[h.CurrentIndex-1]
	if _, err := chromedp.Call(tb.ctx, page.NavigateToHistoryEntry, page.NavigateToHistoryEntryParams{EntryID: prev.ID}); err != nil {
		tb.t.Fatal(err)
	}
	return tb.waitURL("the previous page", func(u string) bool {
		hh, err := chromedp.Run(tb.ctx, chromedp.NavigationEntries())
		return err == nil && hh.CurrentIndex == h.CurrentIndex-1
	})
}

// reload presses reload and waits for the page.
func (tb *tab) reload() string {
	tb.t.Helper()
	tb.do(chromedp.Reload())
	return tb.settled()
}

// screenshot writes what the tab shows to the test's artifact directory
// (go test -artifacts keeps it) and returns its path.
func (tb *tab) screenshot(name string) string {
	tb.t.Helper()
	png := run(tb, chromedp.FullScreenshot(100))
	p := filepath.Join(tb.t.ArtifactDir(), name+".png")
	if err := os.WriteFile(p, png, 0o644); err != nil {
		tb.t.Fatal(err)
	}
	tb.t.Logf("screenshot: %s", p)
	return p
}

// expireCookie makes the browser's cookie called name (for u) expire in a
// second, as it would after its Max-Age, and waits until it has.
func (tb *tab) expireCookie(u, name string) {
	tb.t.Helper()
	for _, c := range tb.cookies(u) {
		if c.Name != name {
			continue
		}
		exp := cdp.TimeSinceEpoch(float64(time.Now().Add(time.Second).UnixMilli()) / 1000)
		_, err := chromedp.Call(tb.ctx, network.SetCookie, network.SetCookieParams{
			Name: c.Name, Value: c.Value, URL: u, Path: c.Path, Secure: &c.Secure, HTTPOnly: &c.HTTPOnly,
			SameSite: c.SameSite, Expires: exp,
		})
		if err != nil {
			tb.t.Fatal(err)
		}
		time.Sleep(1100 * time.Millisecond)
		if cookieNamed(tb.cookies(u), name) != nil {
			tb.t.Fatalf("cookie %s did not expire", name)
		}
		return
	}
	tb.t.Fatalf("no cookie %s for %s", name, u)
}

func cookieNamed(cs []*network.Cookie, name string) *network.Cookie {
	for _, c := range cs {
		if c.Name == name {
			return c
		}
	}
	return nil
}

// stateCookies are the per-login state cookies among cs.
func stateCookies(cs []*network.Cookie) []*network.Cookie {
	var out []*network.Cookie
	for _, c := range cs {
		if strings.Contains(c.Name, "_login_") {
			out = append(out, c)
		}
	}
	return out
}
