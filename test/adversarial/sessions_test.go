package adversarial_test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/e2e"
)

// ---------------------------------------------------------------------------
// sessions

// login logs a new browser in at x (app's host, over gRPC) and returns it
// with its session cookie.
func login(t *testing.T, x *instance, user string) (*e2e.Browser, string) {
	t.Helper()
	return loginAt(t, x, app, user)
}

// hydraMu serialises login flows: Hydra on its in-memory database fails
// some of several concurrent logins ("The error is unrecognizable").
var hydraMu sync.Mutex

func loginAt(t *testing.T, x *instance, origin, user string) (*e2e.Browser, string) {
	t.Helper()
	b := e2e.NewBrowser(user, x.Extauthz, hydra)
	hydraMu.Lock()
	resp, hops, err := b.Navigate(context.Background(), origin+"/home")
	hydraMu.Unlock()
	if err != nil {
		t.Fatalf("login: %v (hops %v)", err, hops)
	}
	if resp.Status != 200 || resp.Upstream == nil || !strings.HasPrefix(resp.Upstream.Get("authorization"), "Bearer ") {
		t.Fatalf("login ended with %d %q (hops %v)", resp.Status, resp.Body, hops)
	}
	c := b.Cookie(origin, "JSESSIONID")
	if c == "" {
		t.Fatal("no session cookie after login")
	}
	return b, c
}

// ajax is a script's GET with a session cookie (no redirects).
func ajax(path, cookie string) hreq {
	q := hreq{Method: "GET", Host: "localhost:8443", Path: path, H: [][2]string{{"x-requested-with", "XMLHttpRequest"}}}
	if cookie != "" {
		q.H = append(q.H, [2]string{"cookie", "JSESSIONID=" + cookie})
	}
	return q
}

// navigation is a browser's top-level GET without cookies.
func navigation(host, path string) hreq {
	return hreq{Method: "GET", Host: host, Path: path, H: [][2]string{{"sec-fetch-mode", "navigate"}, {"accept", "text/html"}}}
}

// csrfToken fetches the session's CSRF token.
func csrfToken(t *testing.T, x *instance, cookie string) string {
	t.Helper()
	r := viaGRPC(x, ajax("/home", cookie).with("x-csrf-token", "Fetch"))
	tok := r.Header.Get("x-csrf-token")
	if r.Status != 200 || tok == "" {
		t.Fatalf("CSRF fetch: %s", r)
	}
	return tok
}

// clearsCookie says whether a response deletes the cookie called name.
func clearsCookie(h http.Header, name string) bool {
	for _, sc := range h.Values("set-cookie") {
		c, err := http.ParseSetCookie(sc)
		if err != nil || c.Name != name {
			continue
		}
		if c.Value == "" || c.MaxAge < 0 || (!c.Expires.IsZero() && c.Expires.Before(time.Now())) {
			return true
		}
	}
	return false
}

// setsCookie says whether a response sets the (non-empty) cookie called name.
func setsCookie(h http.Header, name string) bool {
	for _, sc := range h.Values("set-cookie") {
		c, err := http.ParseSetCookie(sc)
		if err == nil && c.Name == name && c.Value != "" && c.MaxAge >= 0 {
			return true
		}
	}
	return false
}

var reRedirectURI = regexp.MustCompile(`[?&]redirect_uri=([^&]*)`)

// redirectURI is the redirect_uri of a login redirect's location.
func redirectURI(loc string) (*url.URL, error) {
	m := reRedirectURI.FindStringSubmatch(loc)
	if m == nil {
		return nil, fmt.Errorf("no redirect_uri in %q", loc)
	}
	s, err := url.QueryUnescape(m[1])
	if err != nil {
		return nil, err
	}
	return url.Parse(s)
}
