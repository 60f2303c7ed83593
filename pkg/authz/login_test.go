package authz_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"

	"github.com/extauthz/extauthz/pkg/authz"
	"github.com/extauthz/extauthz/pkg/idp"
)

func login(t *testing.T, f *fixture, path string) string {
	t.Helper()
	ctx := context.Background()
	d := f.engine.Check(ctx, get(path, ""))
	if d.Status != http.StatusFound {
		t.Fatalf("login start: %+v", d)
	}
	loc, _ := url.Parse(header(d, "location"))
	q := loc.Query()
	if q.Get("redirect_uri") != "https://app.example.com/login/callback" || q.Get("code_challenge_method") != "S256" {
		t.Fatalf("authorize URL %s", loc)
	}
	stateCookie := headers(d, "set-cookie")[0]
	if !strings.Contains(stateCookie, "Path=/login/callback") || !strings.Contains(stateCookie, "HttpOnly") ||
		!strings.Contains(stateCookie, "Secure") || !strings.Contains(stateCookie, "Max-Age=180") {
		t.Fatalf("state cookie %q", stateCookie)
	}
	nameValue, _, _ := strings.Cut(stateCookie, ";")
	cb := get("/login/callback?"+url.Values{"code": {"c1"}, "state": {q.Get("state")}}.Encode(), nameValue)
	d = f.engine.Check(ctx, cb)
	if d.Status != http.StatusFound || header(d, "location") != path {
		t.Fatalf("callback: %+v, want 302 to %s", d, path)
	}
	var session string
	for _, sc := range headers(d, "set-cookie") {
		if v, ok := strings.CutPrefix(sc, "JSESSIONID="); ok {
			session, _, _ = strings.Cut(v, ";")
		} else if !strings.Contains(sc, "Max-Age=0") {
			t.Fatalf("callback must clear the state cookie, set %q", sc)
		}
	}
	if session == "" {
		t.Fatalf("callback set no session cookie: %v", headers(d, "set-cookie"))
	}
	// Replaying the same callback fails.
	if d := f.engine.Check(ctx, cb); d.Status != http.StatusBadRequest {
		t.Fatalf("replayed callback: %d, want 400", d.Status)
	}
	return session
}

func TestLoginFlow(t *testing.T) {
	f := newFixture(t, authz.Options{})
	c := login(t, f, "/orders?id=7")
	d := f.engine.Check(context.Background(), get("/orders", "JSESSIONID="+c))
	if !d.Allow || d.Upstream[0].Value != "Bearer at-c1" {
		t.Fatalf("after login: %+v", d)
	}
}

func TestCallbackFailures(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, authz.Options{})
	start := func() (state, cookie string) {
		d := f.engine.Check(ctx, get("/", ""))
		loc, _ := url.Parse(header(d, "location"))
		c, _, _ := strings.Cut(headers(d, "set-cookie")[0], ";")
		return loc.Query().Get("state"), c
	}
	cb := func(q url.Values, cookie string) *authz.Decision {
		return f.engine.Check(ctx, get("/login/callback?"+q.Encode(), cookie))
	}
	state, cookie := start()
	if d := cb(url.Values{"state": {state}, "error": {"access_denied"}}, cookie); d.Status != http.StatusForbidden || !strings.Contains(d.Body, "access_denied") {
		t.Fatalf("error=access_denied: %d %q", d.Status, d.Body)
	}
	if d := cb(url.Values{"state": {state}, "code": {"c"}}, ""); d.Status != http.StatusBadRequest {
		t.Fatalf("state cookie cleared by the IdP error: %d", d.Status)
	}
	state, _ = start()
	if d := cb(url.Values{"state": {state}, "code": {"c"}}, ""); d.Status != http.StatusBadRequest || !strings.Contains(d.Body, "not started in this browser") {
		t.Fatalf("missing state cookie: %d %q", d.Status, d.Body)
	}
	state, _ = start()
	if d := cb(url.Values{"state": {state}, "code": {"c"}}, "JSESSIONID_login_"+state[:10]+"=forged"); d.Status != http.StatusBadRequest {
		t.Fatalf("wrong state cookie: %d", d.Status)
	}
	if d := cb(url.Values{"state": {"unknown-state-value"}, "code": {"c"}}, ""); d.Status != http.StatusBadRequest {
		t.Fatalf("unknown state: %d", d.Status)
	}
	if d := cb(url.Values{"code": {"c"}}, ""); d.Status != http.StatusBadRequest {
		t.Fatalf("no state: %d", d.Status)
	}
	f.idp.exchangeErr = fmt.Errorf("%w: invalid_grant", idp.ErrRejected)
	state, cookie = start()
	if d := cb(url.Values{"state": {state}, "code": {"bad"}}, cookie); d.Status != http.StatusBadRequest {
		t.Fatalf("rejected code: %d", d.Status)
	}
	f.idp.exchangeErr = errors.New("dial tcp: connection refused")
	state, cookie = start()
	if d := cb(url.Values{"state": {state}, "code": {"c"}}, cookie); d.Status != http.StatusBadGateway {
		t.Fatalf("IdP down at exchange: %d", d.Status)
	}
	f.idp.authErr = errors.New("discovery failed")
	if d := f.engine.Check(ctx, get("/", "")); d.Status != http.StatusBadGateway {
		t.Fatalf("IdP down at login start: %d", d.Status)
	}
}

func TestReturnPathStaysOnHost(t *testing.T) {
	f := newFixture(t, authz.Options{})
	for path, want := range map[string]string{
		"/a/b?c=d": "/a/b?c=d", "//evil.example/x": "/evil.example/x", "/./a/../b?x": "/b?x",
		"/" + strings.Repeat("a", 600): "/", "/" + strings.Repeat("a", 500): "/" + strings.Repeat("a", 500),
		"/\\evil.example": "", "https://evil.example/": "", "*": "", "/%2F%2Fevil.example": "",
	} {
		d := f.engine.Check(context.Background(), get(path, ""))
		if want == "" {
			if d.Status != http.StatusBadRequest || header(d, "location") != "" {
				t.Errorf("request target %q: %d to %q, want 400", path, d.Status, header(d, "location"))
			}
			continue
		}
		loc, _ := url.Parse(header(d, "location"))
		state := loc.Query().Get("state")
		c, _, _ := strings.Cut(headers(d, "set-cookie")[0], ";")
		_, value, _ := strings.Cut(c, "=")
		ls, err := f.sessions.OpenLogin(state, value, "", "app.example.com")
		if err != nil {
			t.Fatal(err)
		}
		if ls.GetReturnPath() != want {
			t.Errorf("request target %q returns to %q, want %q", path, ls.GetReturnPath(), want)
		}
	}
}

func TestLogout(t *testing.T) {
	f := newFixture(t, authz.Options{})
	c := login(t, f, "/")
	d := f.engine.Check(context.Background(), get("/logout", "JSESSIONID="+c))
	loc, _ := url.Parse(header(d, "location"))
	if d.Status != http.StatusFound || loc.Host != "idp.test" || loc.Query().Get("id_token_hint") != "idt-1" ||
		loc.Query().Get("post_logout_redirect_uri") != "https://app.example.com/" {
		t.Fatalf("logout: %+v", d)
	}
	if sc := header(d, "set-cookie"); !strings.HasPrefix(sc, "JSESSIONID=;") || !strings.Contains(sc, "Max-Age=0") {
		t.Fatalf("logout must clear the cookie: %q", sc)
	}
	if d := f.engine.Check(context.Background(), get("/", "JSESSIONID="+c, "x-requested-with", "XMLHttpRequest")); d.Status != http.StatusUnauthorized {
		t.Fatalf("cookie after logout: %d, want 401", d.Status)
	}
}

// A failed login's page leads back to the page the login was started for,
// not to the app's root: in a real browser, two tabs logging in at once
// through an identity provider that keeps one pending login per browser
// (Hydra) leave one tab on this page, already signed in by the other tab's
// login; "Start again" must take it to its own page. (Found by
// test/browser.)
func TestFailedLoginLeadsBackToTheAskedPage(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, authz.Options{})
	start := func(path string) (state, cookie string) {
		d := f.engine.Check(ctx, get(path, ""))
		loc, _ := url.Parse(header(d, "location"))
		c, _, _ := strings.Cut(headers(d, "set-cookie")[0], ";")
		return loc.Query().Get("state"), c
	}
	cb := func(q url.Values, cookie string) *authz.Decision {
		return f.engine.Check(ctx, get("/login/callback?"+q.Encode(), cookie))
	}
	const back = `<a href="/orders/7?tab=items&amp;x=%3Cy%3E">Start again</a>`

	state, cookie := start("/orders/7?tab=items&x=%3Cy%3E")
	d := cb(url.Values{"state": {state}, "error": {"request_forbidden"}}, cookie)
	if d.Status != http.StatusBadRequest || !strings.Contains(d.Body, back) {
		t.Fatalf("identity provider error: %d %q, want a link back to the page", d.Status, d.Body)
	}
	f.idp.exchangeErr = fmt.Errorf("%w: invalid_grant", idp.ErrRejected)
	state, cookie = start("/orders/7?tab=items&x=%3Cy%3E")
	if d := cb(url.Values{"state": {state}, "code": {"bad"}}, cookie); !strings.Contains(d.Body, back) {
		t.Fatalf("rejected code: %d %q, want a link back to the page", d.Status, d.Body)
	}
	// Without its state cookie the login, and its page, are unknown: the
	// way back is the app's root.
	state, _ = start("/orders/7")
	if d := cb(url.Values{"state": {state}, "code": {"c"}}, ""); !strings.Contains(d.Body, `<a href="/">Start again</a>`) {
		t.Fatalf("unknown login: %d %q, want a link to /", d.Status, d.Body)
	}
}

// A session cookie named __Host-… (which browsers keep only Secure, with
// Path=/ and no Domain) must not break the login: the state cookie, whose
// path is the callback's, is named __Secure-… instead. As a __Secure-
// cookie may carry Domain, a sibling subdomain could plant one an attacker
// got for his own login; each login is therefore also sealed to a __Host-
// binding cookie of the browser, which no sibling can set and which never
// goes upstream.
func TestHostPrefixedCookieName(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, authz.Options{CookieName: "__Host-sid"})
	// start begins a login in a browser holding cookies; it returns the
	// callback's query, the state cookie and the browser's binding cookie.
	start := func(cookies string) (query, state, binding string) {
		d := f.engine.Check(ctx, get("/orders", cookies))
		loc, _ := url.Parse(header(d, "location"))
		for _, sc := range headers(d, "set-cookie") {
			nv, _, _ := strings.Cut(sc, ";")
			switch {
			case strings.HasPrefix(sc, "__Secure-sid_login_"):
				if !strings.Contains(sc, "Path=/login/callback") || !strings.Contains(sc, "Secure") {
					t.Fatalf("state cookie %q: want Secure, on the callback's path", sc)
				}
				state = nv
			case strings.HasPrefix(sc, "__Host-sid_b="):
				if !strings.Contains(sc, "Path=/") || !strings.Contains(sc, "Secure") || strings.Contains(sc, "Domain") || strings.Contains(sc, "Max-Age") {
					t.Fatalf("binding cookie %q: want a __Host- browser-session cookie", sc)
				}
				binding = nv
			default:
				t.Fatalf("unexpected cookie %q", sc)
			}
		}
		if state == "" {
			t.Fatalf("no __Secure-sid_login_ state cookie: %v", headers(d, "set-cookie"))
		}
		return url.Values{"code": {"c1"}, "state": {loc.Query().Get("state")}}.Encode(), state, binding
	}
	// The victim's browser has its binding; the attacker's login, in his
	// own browser, has another.
	_, _, victim := start("")
	if victim == "" {
		t.Fatal("the first login set no binding cookie")
	}
	if _, _, again := start(victim); again != "" {
		t.Fatalf("a browser with a binding got another: %q", again)
	}
	attackerQuery, attackerState, _ := start("")
	if d := f.engine.Check(ctx, get("/login/callback?"+attackerQuery, victim+"; "+attackerState)); d.Status != http.StatusBadRequest || d.Reason != authz.ReasonCallbackUnknownState {
		t.Fatalf("another browser's state cookie, planted: %d %s, want 400 callback_unknown_state", d.Status, d.Reason)
	}
	// The victim's own login completes.
	query, state, _ := start(victim)
	d := f.engine.Check(ctx, get("/login/callback?"+query, victim+"; "+state))
	if d.Status != http.StatusFound {
		t.Fatalf("callback with the __Secure- state cookie and the binding: %d %s %q", d.Status, d.Reason, d.Body)
	}
	var session string
	for _, c := range headers(d, "set-cookie") {
		if v, ok := strings.CutPrefix(c, "__Host-sid="); ok {
			if !strings.Contains(c, "Path=/;") && !strings.HasSuffix(c, "Path=/") || !strings.Contains(c, "Secure") || strings.Contains(c, "Domain") {
				t.Fatalf("session cookie %q: a browser drops a __Host- cookie without Secure and Path=/, or with a Domain", c)
			}
			session, _, _ = strings.Cut(v, ";")
		}
	}
	d = f.engine.Check(ctx, get("/orders", "__Host-sid="+session+"; "+victim+"; theme=dark"))
	if !d.Allow {
		t.Fatalf("with the __Host-sid cookie: %d %s", d.Status, d.Reason)
	}
	var upstream string
	for _, h := range d.Upstream {
		if h.Name == "cookie" {
			upstream = h.Value
		}
	}
	if upstream != "theme=dark" {
		t.Fatalf("upstream cookie header %q: want the app's cookies only (no session, no binding)", upstream)
	}
}
