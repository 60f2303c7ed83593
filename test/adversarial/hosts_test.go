package adversarial_test

import (
	"net/http"
	"slices"
	"strings"
	"sync"
	"testing"
)

// hostPaths are requested on every host: a page, the login callback and
// the logout.
var hostPaths = []string{"/x", "/", "/login/callback?code=abc&state=0123456789abcdef0123", "/logout"}

// malformedHosts are never a host anyone configured: 400 or 404, never a
// redirect or a cookie.
var malformedHosts = []string{
	"", " ", "localhost attacker.example", " localhost", "localhost ", "localhost\t", "local host",
	"localhost@attacker.example", "localhost:8443@attacker.example", "attacker.example#localhost",
	"attacker.example/localhost", `localhost\@attacker.example`, "localhost:", "localhost:abc", "localhost:8443:8443",
	"localhost:99999", "[localhost]", "[::1", "::1", "localhost,attacker.example", "localhost%2eattacker.example",
	strings.Repeat("a", 300) + ".example", "xn--80ak6aa92e.com", "аpp.example.com",
	"app.example.com@attacker.example", "attacker.example#app.example.com", "app.example.com:443@x",
	"app.example.com attacker.example", "app.example.com.attacker.example:8443@x", "*.wild.example", "app.example.com..",
	// A port without a name (once a panic that killed the process).
	":80", ":", ":8443", "[]:80", ":localhost", "[::1]:", "[%1]:80",
}

type hostCheck struct {
	allowed   []string          // served: the login redirect
	foreign   []string          // well-formed, not ours: 404
	isOurs    func(string) bool // is a redirect_uri's host name ours
	headers   []string          // extra headers (pairs) on every request
	proxyHost string            // when set, x-forwarded-host carries the host and Host is this
}

// checkHosts requests hostPaths on every host over both protocols and
// asserts: our hosts get the login redirect whose redirect_uri names one of
// ours; any other host gets 404 (400 when malformed), no location and no
// Set-Cookie.
func checkHosts(t *testing.T, x *instance, hc hostCheck) {
	t.Helper()
	var mu sync.Mutex
	var fails []string
	type job struct {
		p    protocol
		host string
		kind string
	}
	var jobs []job
	for _, p := range protocols {
		for _, h := range hc.allowed {
			jobs = append(jobs, job{p, h, "ours"})
		}
		for _, h := range hc.foreign {
			jobs = append(jobs, job{p, h, "foreign"})
		}
		for _, h := range malformedHosts {
			if hc.isOurs(strings.ToLower(h)) {
				continue
			}
			if p.name == "http" && strings.TrimSpace(h) != h && h != " " {
				continue // HTTP/1.1 strips the blanks around a header value: the same Host as without
			}
			jobs = append(jobs, job{p, h, "malformed"})
		}
	}
	parallel(len(jobs), 8, func(i int) {
		j := jobs[i]
		var msgs []string
		fail := func(s string) { msgs = append(msgs, s) }
		defer func() {
			if len(msgs) > 0 {
				what := "Host " + quote(j.host)
				if hc.proxyHost != "" {
					what = "x-forwarded-host " + quote(j.host)
				}
				mu.Lock()
				fails = append(fails, j.p.name+" "+what+" ("+j.kind+"): "+strings.Join(msgs, " | "))
				mu.Unlock()
			}
		}()
		for _, path := range hostPaths {
			if j.kind == "ours" && path != "/x" {
				continue
			}
			q := navigation(j.host, path).with(hc.headers...)
			if hc.proxyHost != "" {
				q.Host = hc.proxyHost
				q = q.with("x-forwarded-host", j.host)
			}
			r := j.p.do(x, q)
			where := path
			switch j.kind {
			case "ours":
				if r.Status != http.StatusFound {
					fail(where + ": " + r.String() + "; want the login redirect")
					continue
				}
				ru, err := redirectURI(r.Header.Get("location"))
				if err != nil || !hc.isOurs(normHost(ru.Hostname())) {
					fail(where + ": redirect_uri " + ruString(ru, err) + " does not name one of our hosts")
				}
			default:
				bad := r.Allowed || r.Header.Get("location") != "" || len(r.Header.Values("set-cookie")) > 0
				want := r.Status == http.StatusNotFound || (j.kind == "malformed" && r.Status == http.StatusBadRequest)
				if bad || !want {
					w := "404"
					if j.kind == "malformed" {
						w = "400 or 404"
					}
					fail(where + ": " + r.String() + setCookieNote(r) + "; want " + w + ", no location, no Set-Cookie")
				}
			}
		}
	})
	slices.Sort(fails)
	for _, f := range fails {
		t.Error(f)
	}
	x.requireAlive(t)
}

func quote(s string) string {
	if len(s) > 40 {
		s = s[:40] + "..."
	}
	return "\"" + s + "\""
}

func ruString(u interface{ String() string }, err error) string {
	if err != nil {
		return err.Error()
	}
	return u.String()
}

func setCookieNote(r hres) string {
	if n := len(r.Header.Values("set-cookie")); n > 0 {
		return " (with Set-Cookie)"
	}
	return ""
}

func normHost(h string) string { return strings.TrimSuffix(strings.ToLower(h), ".") }

var loopback = func(h string) bool { return h == "localhost" || h == "127.0.0.1" || h == "::1" }

// TestLoginsOnlyForOwnHosts (issue 11 class 4).
func TestLoginsOnlyForOwnHosts(t *testing.T) {
	foreign := []string{
		"attacker.example", "attacker.example:8443", "app.example.com.attacker.example", "localhost.attacker.example",
		"127.0.0.1.nip.io", "evil.localhost.attacker.example:80", "ATTACKER.EXAMPLE", "attacker.example.", "10.0.0.1",
		"0.0.0.0", "[::2]", "[fe80::1]:8443", "example.com", "com", "a",
	}
	t.Run("single tenant, no host configured: loopback only", func(t *testing.T) {
		t.Parallel()
		x := start(t, "hosts-default")
		checkHosts(t, x, hostCheck{
			allowed: []string{"localhost", "localhost:8443", "127.0.0.1", "127.0.0.1:9", "[::1]", "[::1]:8443", "LOCALHOST:8443"},
			foreign: append(foreign, "app.example.com", "app.example.com:443"),
			isOurs:  loopback,
		})
		// x-forwarded-host is not believed (EXTAUTHZ_TRUST_FORWARDED_HOST off).
		for _, p := range protocols {
			r := p.do(x, navigation("localhost:8443", "/x").with("x-forwarded-host", "attacker.example"))
			ru, err := redirectURI(r.Header.Get("location"))
			if r.Status != http.StatusFound || err != nil || !loopback(normHost(ru.Hostname())) {
				t.Errorf("%s: Host localhost with x-forwarded-host attacker.example: %s (redirect_uri %s), want a login for localhost", p.name, r, ruString(ru, err))
			}
			r = p.do(x, navigation("attacker.example", "/x").with("x-forwarded-host", "localhost:8443"))
			if r.Status != http.StatusNotFound || r.Header.Get("location") != "" {
				t.Errorf("%s: Host attacker.example with x-forwarded-host localhost: %s, want 404", p.name, r)
			}
		}
		// gRPC: the attributes' host and :authority disagree.
		for _, q := range []hreq{
			{Method: "GET", Host: "localhost:8443", Authority: "attacker.example", Path: "/x"},
			{Method: "GET", Host: "attacker.example", Authority: "localhost:8443", Path: "/x"},
			{Method: "GET", Host: "", Authority: "attacker.example", Path: "/x"},
		} {
			r := viaGRPC(x, q)
			if r.Status == http.StatusFound {
				if ru, err := redirectURI(r.Header.Get("location")); err != nil || !loopback(normHost(ru.Hostname())) {
					t.Errorf("grpc host %q :authority %q: redirect_uri %s", q.Host, q.Authority, ruString(ru, err))
				}
			} else if r.Status != http.StatusNotFound && r.Status != http.StatusBadRequest {
				t.Errorf("grpc host %q :authority %q: %s, want a loopback login or 404/400", q.Host, q.Authority, r)
			}
		}
	})
	t.Run("EXTAUTHZ_ALLOWED_HOSTS", func(t *testing.T) {
		t.Parallel()
		x := start(t, "hosts-list", "EXTAUTHZ_ALLOWED_HOSTS", "app.example.com, *.wild.example")
		ours := func(h string) bool {
			return h == "app.example.com" || (strings.HasSuffix(h, ".wild.example") && len(h) > len(".wild.example"))
		}
		checkHosts(t, x, hostCheck{
			allowed: []string{
				"app.example.com", "app.example.com:8443", "app.example.com:443", "APP.EXAMPLE.COM", "App.Example.Com:1",
				"app.example.com.", "app.example.com.:8443", "a.wild.example", "A.WILD.EXAMPLE:443", "x-y.wild.example:8443",
			},
			foreign: append(foreign, "localhost", "localhost:8443", "127.0.0.1", "[::1]:8443", "wild.example", "evilwild.example",
				"a.wild.example.evil", "app.example.co", "app.example.comm", "xapp.example.com", "app-example.com", "example.com",
				"app.example.com.evil", "wild.example.:8443"),
			isOurs: ours,
		})
	})
	t.Run("EXTAUTHZ_ALLOWED_HOSTS behind a trusted proxy", func(t *testing.T) {
		t.Parallel()
		x := start(t, "hosts-xfh", "EXTAUTHZ_ALLOWED_HOSTS", "app.example.com", "EXTAUTHZ_TRUST_FORWARDED_HOST", "true")
		checkHosts(t, x, hostCheck{
			allowed:   []string{"app.example.com", "APP.example.com:8443"},
			foreign:   []string{"attacker.example", "app.example.com.attacker.example", "localhost"},
			isOurs:    func(h string) bool { return h == "app.example.com" },
			proxyHost: "internal-gateway:8080",
		})
		// Behind a proxy that appends, the first value is the client's: the
		// last one, the proxy's, decides.
		for _, c := range []struct {
			xfh    string
			served bool
		}{
			{"attacker.example, app.example.com", true},
			{"app.example.com, attacker.example", false},
			{"app.example.com,", false},
			{"app.example.com, ", false},
			{"app.example.com,attacker.example", false},
		} {
			for _, p := range protocols {
				r := p.do(x, navigation("internal-gateway:8080", "/x").with("x-forwarded-host", c.xfh))
				ru, err := redirectURI(r.Header.Get("location"))
				switch {
				case c.served && (r.Status != http.StatusFound || err != nil || ru.Hostname() != "app.example.com"):
					t.Errorf("%s: x-forwarded-host %q: %s, want a login for app.example.com", p.name, c.xfh, r)
				case !c.served && (r.Status != http.StatusNotFound || r.Header.Get("location") != ""):
					t.Errorf("%s: x-forwarded-host %q: %s, want 404", p.name, c.xfh, r)
				}
			}
		}
	})
	t.Run("Cloud Foundry application_uris", func(t *testing.T) {
		t.Parallel()
		x := start(t, "hosts-cf", "VCAP_APPLICATION",
			`{"application_name":"approuter","application_uris":["cfapp.example.com","other.cfapps.example.net"],"space_name":"dev","organization_name":"org","instance_index":0}`)
		checkHosts(t, x, hostCheck{
			allowed: []string{"cfapp.example.com", "CFAPP.example.com:443", "other.cfapps.example.net"},
			foreign: append(foreign, "localhost:8443", "cfapp.example.com.attacker.example", "x.cfapp.example.com", "cfapps.example.net"),
			isOurs:  func(h string) bool { return h == "cfapp.example.com" || h == "other.cfapps.example.net" },
		})
	})
	t.Run("multitenant: TENANT_HOST_PATTERN", func(t *testing.T) {
		t.Parallel()
		x := start(t, "hosts-mt", "EXTAUTHZ_OIDC_ISSUER", idpRouter.URL+"/{tenant}", "TENANT_HOST_PATTERN", `^(.*)\.app\.localhost$`)
		r := viaGRPC(x, navigation("tenant-a.app.localhost:8443", "/x"))
		if ru, err := redirectURI(r.Header.Get("location")); r.Status != http.StatusFound || err != nil || ru.Hostname() != "tenant-a.app.localhost" {
			t.Errorf("the known tenant's login: %s", r)
		}
		checkHosts(t, x, hostCheck{
			foreign: append(foreign, "localhost:8443", "app.localhost", "tenant-a.app.localhost.attacker.example",
				"tenant-a.app.localhost.attacker.example:8443", "tenant-a.app.localhostattacker.example", "tenant-aapp.localhost"),
			isOurs: func(h string) bool { return strings.HasSuffix(h, ".app.localhost") },
		})
		for _, h := range []string{"tenant-a.app.localhost@attacker.example", "tenant-a.app.localhost#.attacker.example", ".app.localhost", "a/b.app.localhost"} {
			for _, p := range protocols {
				r := p.do(x, navigation(h, "/x"))
				if r.Allowed || r.Header.Get("location") != "" || len(r.Header.Values("set-cookie")) > 0 || (r.Status != 404 && r.Status != 400) {
					t.Errorf("%s: Host %q: %s, want 404 or 400 without redirect or cookie", p.name, h, r)
				}
			}
		}
	})
}
