package adversarial_test

import (
	"cmp"
	"fmt"
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
)

// routes starts an instance enforcing the test xs-app.json.
func routes(t *testing.T, name string, extra ...string) *instance {
	t.Helper()
	return start(t, name, append([]string{"EXTAUTHZ_XS_APP", xsAppFile}, extra...)...)
}

// Path classes: what the canonical path of a spelling is.
const (
	classAdmin      = "admin"        // the admin route: 403 without the scope
	classAdminOrBad = "admin-or-400" // the admin route, or refused as ambiguous
	classBad        = "400"          // refused: 400 bad_path
	classNotAllowed = "not-allowed"  // not a valid origin-form path: never allowed
)

type pathCase struct {
	path, class string
	grpcOnly    bool // bytes a real HTTP/1.1 request line cannot carry
}

// adminSpellings reach the admin route after canonicalisation (RFC 3986
// 5.2.4 dot segments, unreserved escapes, repeated slashes, ;params).
var adminSpellings = []pathCase{
	{"/admin/x", classAdmin, false},
	{"/admin/x/", classAdmin, false},
	{"/public/../admin/x", classAdmin, false},
	{"/public/../admin/", classAdmin, false},
	{"/public/./../admin/x", classAdmin, false},
	{"/public/x/../../admin/x", classAdmin, false},
	{"/x/../admin/x", classAdmin, false},
	{"/public/%2e%2e/admin/x", classAdmin, false},
	{"/public/%2E%2e/admin/x", classAdmin, false},
	{"/public/%2e%2E/admin/x", classAdmin, false},
	{"/public/%2E%2E/admin/x", classAdmin, false},
	{"/public/.%2e/admin/x", classAdmin, false},
	{"/public/%2e./admin/x", classAdmin, false},
	{"/public/.%2E/admin/x", classAdmin, false},
	{"/public/%2e%2e/%61dmin/x", classAdmin, false},
	{"//admin/x", classAdmin, false},
	{"///admin/x", classAdmin, false},
	{"//admin//x", classAdmin, false},
	{"/admin//x", classAdmin, false},
	{"/./admin/x", classAdmin, false},
	{"/././admin/x", classAdmin, false},
	{"/.//admin/x", classAdminOrBad, false},
	{"/%2e/admin/x", classAdmin, false},
	{"/%2E/admin/x", classAdmin, false},
	{"/admin/./x", classAdmin, false},
	{"/admin/%2e/x", classAdmin, false},
	{"/%61dmin/x", classAdmin, false},
	{"/%61%64%6d%69%6e/x", classAdmin, false},
	{"/%61%64%6D%69%6E/x", classAdmin, false},
	{"/adm%69n/x", classAdmin, false},
	{"/admi%6E/x", classAdmin, false},
	{"/admin;/x", classAdmin, false},
	{"/admin;jsessionid=1/x", classAdmin, false},
	{"/admin;a=b;c=d/x", classAdmin, false},
	{"/admin;/./x", classAdmin, false},
	{"/public/..;/admin/x", classAdminOrBad, false},
	{"/public;/../admin/x", classAdmin, false},
	{"/public;x=1/../admin/x", classAdmin, false},
	{"/public/%2e%2e;/admin/x", classAdminOrBad, false},
	{"/public/..;x=y/admin/x", classAdminOrBad, false},
	{"/public/x/..;/..;/admin/x", classAdminOrBad, false},
	{"/%61dmin;/x", classAdmin, false},
	{"//public/../admin/x", classAdminOrBad, false},
	{"/public//../admin/x", classAdminOrBad, false}, // /admin/x merging first, /public/admin/x by RFC 3986: refused
	{"/admin/x?/public/", classAdmin, false},
	{"/admin/x?x=/public/../public/", classAdmin, false},
	{"/public/../admin/x?y=%2f", classAdmin, false},
	{"/..;/admin/x", classAdminOrBad, false},
	{"/admin;x=%2f/x", classAdminOrBad, false},
	{"/public/%23/../../admin/x", classAdmin, false},
	{"/public/#/../../admin/x", classAdminOrBad, true},
	{"admin/x", classNotAllowed, true},
	{"http://localhost:8443/admin/x", classNotAllowed, true},
	{"*", classNotAllowed, true},
	{"", classNotAllowed, true},
}

// badSpellings cannot be made unambiguous: 400, never matched as anything.
var badSpellings = []pathCase{
	// Spellings an upstream reads as /admin/… while Tomcat or RFC 3986 read
	// them as /public/…: refused, never the public route.
	{"/admin/..;/public/x", classBad, false},
	{"/admin/..;x=1/public/x", classBad, false},
	{"/admin/%2e%2e;/public/x", classBad, false},
	{"/admin/.;/../public/x", classBad, false},
	{"/admin/;/../public/x", classBad, false},
	{"/admin/;x/../public/x", classBad, false},
	{"/admin/x/..;/..;/public/x", classBad, false},
	{"/admin//../public/x", classBad, false},
	{"/admin/x//../../public/x", classBad, false},
	// An encoded slash next to a byte net/http re-escapes: decided on the
	// raw target, not on a re-encoding of the decoded path.
	{"/admin/foo%2F..%2F..%2Fpublic/y|", classBad, false},
	{"/admin/foo%2F..%2F..%2Fpublic/y`", classBad, false},
	{"/api/orders%2F..%2F..%2Fpublic/x{", classBad, false},
	{"/admin%2fx", classBad, false},
	{"/admin%2Fx", classBad, false},
	{"/%2fadmin/x", classBad, false},
	{"/public%2f..%2fadmin/x", classBad, false},
	{"/public/..%2fadmin/x", classBad, false},
	{"/public/..%2Fadmin/x", classBad, false},
	{"/public/%2e%2e%2fadmin/x", classBad, false},
	{"/public/x%2f", classBad, false},
	{"/admin%5cx", classBad, false},
	{"/admin%5Cx", classBad, false},
	{"/public/..%5cadmin/x", classBad, false},
	{"/public/..%5Cadmin/x", classBad, false},
	{`/public\..\admin/x`, classBad, false},
	{`/public/..\admin/x`, classBad, false},
	{`/admin\x`, classBad, false},
	{`/\admin/x`, classBad, false},
	{"/public/x\\", classBad, false},
	{"/admin/x%00", classBad, false},
	{"/public/%00/../admin/x", classBad, false},
	{"/public/x%00.png", classBad, false},
	{"/public/%0a/../admin/x", classBad, false},
	{"/public/%0A", classBad, false},
	{"/public/x%0d%0a", classBad, false},
	{"/public/%09", classBad, false},
	{"/public/%1f", classBad, false},
	{"/public/%7f", classBad, false},
	{"/public/%7F", classBad, false},
	{"/public/\x00/../admin/x", classBad, true},
	{"/public/x\x00", classBad, true},
	{"/public/x\n", classBad, true},
	{"/public/x\r", classBad, true},
	{"/public/x\t", classBad, true},
	{"/public/x\x7f", classBad, true},
	{"/public/x\x01", classBad, true},
	{"/public/%zz", classBad, false},
	{"/public/%2", classBad, false},
	{"/public/%", classBad, false},
	{"/public/x%g0", classBad, false},
	{"/public/%%32%65%%32%65/admin/x", classBad, false},
	{"/public/%u002e%u002e/admin/x", classBad, false},
	{"/public/%2e%2", classBad, false},
	{"/../admin/x", classBad, false},
	{"/..", classBad, false},
	{"/../", classBad, false},
	{"/public/../../admin/x", classBad, false},
	{"/public/%2e%2e/%2e%2e/admin/x", classBad, false},
	{"/%2e%2e/admin/x", classBad, false},
	{"/.%2e/admin/x", classBad, false},
	{"/./../admin/x", classBad, false},
	{"/admin/../../x", classBad, false},
	{"/public/x/../../../admin/x", classBad, false},
	{"/public;/../../admin/x", classBad, false},
}

// TestCanonicalPath (issue 11 class 1): the route decision is made on the
// path the upstream serves. A session without the Admin scope, and no
// session, try every spelling of the admin route over both protocols; none
// reaches admin or passes as public; the ambiguous ones get 400.
func TestCanonicalPath(t *testing.T) {
	x := routes(t, "paths")
	_, cookie := login(t, x, "pathfinder@example.com")

	// Controls: the policy works as written for plain spellings.
	for _, p := range protocols {
		if r := p.do(x, ajax("/home", cookie)); r.Status != 200 || r.Bearer() == "" {
			t.Fatalf("%s: control: the default route with a session: %s, want 200 with a token", p.name, r)
		}
		if r := p.do(x, ajax("/admin/x", cookie)); r.Status != http.StatusForbidden {
			t.Fatalf("%s: control: /admin/x without the scope: %s, want 403", p.name, r)
		}
		if r := p.do(x, navigation("localhost:8443", "/public/x")); r.Status != 200 || r.Bearer() != "" {
			t.Fatalf("%s: control: /public/x without a session: %s, want 200 without a token", p.name, r)
		}
	}

	type failure struct{ proto, who, path, got, want string }
	var mu sync.Mutex
	var fails []failure
	record := func(proto, who, path, got, want string) {
		mu.Lock()
		fails = append(fails, failure{proto, who, path, got, want})
		mu.Unlock()
	}
	cases := append(append([]pathCase{}, adminSpellings...), badSpellings...)
	var wg sync.WaitGroup
	for _, p := range protocols {
		for _, c := range cases {
			if c.grpcOnly && p.name == "http" {
				continue
			}
			wg.Go(func() {
				sess := p.do(x, ajax(c.path, cookie))
				anon := p.do(x, navigation("localhost:8443", c.path))
				if sess.Err != nil || anon.Err != nil {
					record(p.name, "any", c.path, fmt.Sprintf("session: %s / anonymous: %s", sess, anon), "an answer")
					return
				}
				// Whatever the class: no token for the admin route, nothing
				// passes as public. One line per spelling and client.
				sessWant, anonWant := "", ""
				switch c.class {
				case classAdmin:
					if sess.Status != http.StatusForbidden {
						sessWant = "403 (the admin route)"
					}
				case classAdminOrBad:
					if sess.Status != http.StatusForbidden && sess.Status != http.StatusBadRequest {
						sessWant = "403 (the admin route) or 400"
					}
				case classBad:
					if sess.Status != http.StatusBadRequest {
						sessWant = "400 bad_path"
					}
					if anon.Status != http.StatusBadRequest {
						anonWant = "400 bad_path"
					}
				case classNotAllowed:
					if sess.Status < 400 || sess.Status >= 500 {
						sessWant = "a 4xx"
					}
				}
				if sess.Allowed {
					sessWant = "not allowed; " + sessWant
				}
				if anon.Allowed {
					anonWant = "not allowed (passed as public); " + anonWant
				}
				if sessWant != "" {
					record(p.name, "session without Admin", c.path, sess.String(), sessWant)
				}
				if anonWant != "" {
					record(p.name, "no session", c.path, anon.String(), anonWant)
				}
			})
		}
	}
	wg.Wait()
	slices.SortFunc(fails, func(a, b failure) int {
		return cmp.Or(cmp.Compare(a.proto, b.proto), cmp.Compare(a.path, b.path), cmp.Compare(a.who, b.who))
	})
	for _, f := range fails {
		t.Errorf("%-4s %-22s %-36q got %s; want %s", f.proto, f.who, f.path, f.got, f.want)
	}
	t.Logf("%d spellings x 2 protocols x (session, anonymous): %d failures", len(cases), len(fails))

	// A 400 of the engine is counted as bad_path.
	if !strings.Contains(strings.Join(x.checkSeries(t), "\n"), `reason="bad_path"`) {
		t.Errorf("/metrics has no extauthz_checks_total series with reason=\"bad_path\"")
	}
	x.requireAlive(t)
}

// TestCanonicalPathStillServes: canonicalisation is not a refusal of
// everything unusual: unreserved escapes, repeated slashes, dot segments
// inside the tree and query strings reach the route they name.
func TestCanonicalPathStillServes(t *testing.T) {
	x := routes(t, "serves")
	_, cookie := login(t, x, "server@example.com")
	public := []string{
		"/public/x", "/public/%78", "/%70ublic/x", "/public/./x", "//public/x", "/public//x", "/public/a/../x",
		"/public/?x=/../admin", "/public/x?y=%2f", "/public/x?a=%5c", "/public/x?next=%2Fadmin%2F..%2F", "/public/x;v=1",
		"/public/%7e", "/public/%2D%2E%5F%7E",
	}
	token := []string{ // routes a session may use: the default route, and a scope it holds
		"/home", "/x?next=%2Fadmin%2F..%2F", "/x?a=/../admin/", "/offline/x", "/%6fffline/x", "//offline/x",
		"/admin/../offline/x", "/x/./y", "/x;jsessionid=1",
	}
	for _, p := range protocols {
		for _, path := range public {
			if r := p.do(x, navigation("localhost:8443", path)); r.Status != 200 || r.Bearer() != "" {
				t.Errorf("%s: %q without a session: %s, want 200 (public) without a token", p.name, path, r)
			}
		}
		for _, path := range token {
			if r := p.do(x, ajax(path, cookie)); r.Status != 200 || r.Bearer() == "" {
				t.Errorf("%s: %q with a session: %s, want 200 with a token", p.name, path, r)
			}
		}
	}
}

// TestReservedPathsCanonical: the callback and logout endpoints are found on
// the canonical path too: their spellings behave as the endpoint or are
// refused, and never pass as an ordinary route with a token.
func TestReservedPathsCanonical(t *testing.T) {
	x := routes(t, "reserved")
	logouts := []string{"//logout", "/logout;x", "/%6cogout", "/%6Cogout", "/./logout", "/x/../logout", "/logout;jsessionid=1", "/public/../logout"}
	callbacks := []string{
		"//login/callback", "/login//callback", "/login;x/callback", "/login/callback;x", "/login/%63allback", "/%6cogin/callback",
		"/login/./callback", "/public/../login/callback",
	}
	var wg sync.WaitGroup
	for _, p := range protocols {
		for _, path := range logouts {
			wg.Go(func() {
				_, cookie := login(t, x, "leaver@example.com")
				r := p.do(x, ajax(path, cookie))
				switch {
				case r.Allowed || r.Bearer() != "":
					t.Errorf("%s: %q with a session passed as an ordinary route: %s", p.name, path, r)
				case r.Status == http.StatusBadRequest:
					// refused
				case r.Status >= 300 && r.Status < 400 && clearsCookie(r.Header, "JSESSIONID"):
					// the logout: the session must be gone
					if after := p.do(x, ajax("/home", cookie)); after.Status != http.StatusUnauthorized {
						t.Errorf("%s: %q answered as logout but the session still works: %s", p.name, path, after)
					}
				default:
					t.Errorf("%s: %q: %s, want the logout (302 clearing the cookie) or 400", p.name, path, r)
				}
			})
		}
	}
	wg.Wait()
	_, cookie := login(t, x, "caller@example.com")
	for _, p := range protocols {
		for _, path := range callbacks {
			q := ajax(path+"?code=abc&state=0123456789abcdef0123456789", cookie)
			q.H = q.H[1:] // a browser navigation back from the IdP
			r := p.do(x, q)
			if r.Allowed || r.Status < 400 || r.Status >= 500 || setsCookie(r.Header, "JSESSIONID") {
				t.Errorf("%s: %q with a session: %s, want the callback's 400 (unknown state) or bad_path 400", p.name, path, r)
			}
		}
	}
	x.requireAlive(t)
}

// TestScopeObjectWithoutDefault (issue 11 class 2): "scope": {"GET": S}
// without "default": every other method needs a scope nobody has: 403.
func TestScopeObjectWithoutDefault(t *testing.T) {
	x := routes(t, "scopes")
	_, cookie := login(t, x, "scoper@example.com")
	csrf := csrfToken(t, x, cookie)
	others := []string{"HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "PROPFIND", "MKCOL", "FOO"}
	for _, p := range protocols {
		req := func(method, path string) hreq {
			q := ajax(path, cookie).with("x-csrf-token", csrf)
			q.Method = method
			return q
		}
		// {"GET": "offline_access"}: the session holds the GET scope.
		if r := p.do(x, req("GET", "/getonly/x")); r.Status != 200 || r.Bearer() == "" {
			t.Errorf("%s: GET /getonly/x (scope held): %s, want 200", p.name, r)
		}
		// {"GET": "Viewer", "default": "offline_access"}: control for the default.
		if r := p.do(x, req("POST", "/withdefault/x")); r.Status != 200 || r.Bearer() == "" {
			t.Errorf("%s: POST /withdefault/x (default scope held): %s, want 200", p.name, r)
		}
		if r := p.do(x, req("GET", "/withdefault/x")); r.Status != http.StatusForbidden {
			t.Errorf("%s: GET /withdefault/x (Viewer not held): %s, want 403", p.name, r)
		}
		for _, m := range others {
			for _, path := range []string{"/getonly/x", "/viewer/x", "//getonly/x", "/%67etonly/x"} {
				if r := p.do(x, req(m, path)); r.Status != http.StatusForbidden || r.Bearer() != "" {
					t.Errorf("%s: %s %s (no scope listed for the method, no default): %s, want 403", p.name, m, path, r)
				}
			}
		}
	}
}
