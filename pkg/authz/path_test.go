package authz

import (
	"strings"
	"testing"
)

func TestCanonicalPath(t *testing.T) {
	for target, want := range map[string]string{
		"/":                       "/",
		"/app":                    "/app",
		"/app/":                   "/app/",
		"/app?x=1":                "/app",
		"/a/b/../c":               "/a/c",
		"/a/./b":                  "/a/b",
		"/a/b/..":                 "/a/",
		"/a/b/.":                  "/a/b/",
		"//admin/x":               "/admin/x",
		"/./admin/x":              "/admin/x",
		"///admin///x":            "/admin/x",
		"/public/../admin/x":      "/admin/x",
		"/public/%2e%2e/admin/x":  "/admin/x",
		"/public/%2E%2e/admin/x":  "/admin/x",
		"/public/.%2e/admin/x":    "/admin/x",
		"/public/%2e/admin":       "/public/admin",
		"/%61dmin/x":              "/admin/x",
		"/%41dmin/x":              "/Admin/x",
		"/admin;/x":               "/admin/x",
		"/admin;jsessionid=1/x":   "/admin/x",
		"/public;/../admin/x":     "/admin/x",
		"/admin;/../public/x":     "/public/x",
		"/a%7eb":                  "/a~b",
		"/a%20b":                  "/a%20b",
		"/a%c3%a4":                "/a%C3%A4",
		"/a%3bb/x":                "/a%3Bb/x",
		"/a%3Fb":                  "/a%3Fb",
		"/.well-known/x":          "/.well-known/x",
		"/a/..b/c":                "/a/..b/c",
		"/public/?x=/../admin":    "/public/",
		"/admin/x?/public/":       "/admin/x",
		"/a/b/../../c/./d/../e/":  "/c/e/",
		"//admin//x/":             "/admin/x/",
		"/logout;x":               "/logout",
		"/%6cogout":               "/logout",
		"//logout":                "/logout",
		"/login/callback;x?code=": "/login/callback",
	} {
		got, _, err := canonicalPath(target)
		if err != nil || got != want {
			t.Errorf("canonicalPath(%q) = %q, %v; want %q", target, got, err, want)
		}
	}
	for _, target := range []string{
		"", "*", "admin", "http://evil.example/admin", "/a%2fb", "/a%2Fb", "/public%2F..%2Fadmin", "/a%5cb", "/a\\b",
		"/a%00b", "/a\x00b", "/a%0ab", "/a\nb", "/a%7fb", "/a\x7fb", "/a%1Fb", "/a%zz", "/a%2", "/a%", "/a%%41",
		"/../admin", "/public/../../admin", "/..", "/%2e%2e/admin", "/..;/admin", "/a b", "/a\tb", "/a#b", "/ä",
		"/a;%2fb", "/a;%00", "/a;x%zz/b", "/a?x\ny", "/a?x\x00",
		// Resolved differently by different upstreams.
		"/public/..;/admin/x", "/public/..;a=b/admin/x", "/;x/admin", "/admin/..;/public/x", "/admin/..;x=1/public/x",
		"/admin/%2e%2e;/public/x", "/admin/.;/../public/x", "/admin/;/../public/x", "/admin/;x/../public/x",
		"/admin/x/..;/..;/public/x", "/admin//../public/x", "//admin/../public/x", "/admin/.//public", "/a//./b",
		"/admin/x/;", "/admin/%2e;/x",
	} {
		if got, _, err := canonicalPath(target); err == nil {
			t.Errorf("canonicalPath(%q) = %q, want refused", target, got)
		}
	}
}

// The fast path returns canonical targets as they are, without allocating.
func TestCanonicalPathFastPath(t *testing.T) {
	target := "/api/orders/42/items.json?top=10&skip=0"
	if n := testing.AllocsPerRun(100, func() { _, _, _ = canonicalPath(target) }); n != 0 {
		t.Fatalf("%v allocations for a canonical target, want 0", n)
	}
}

func FuzzCanonicalPath(f *testing.F) {
	for _, s := range []string{"/", "/a/../b", "/%2e%2e/x", "/a;b/c", "//x", "/a%41"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, target string) {
		p, q, err := canonicalPath(target)
		if err != nil {
			return
		}
		// The canonical form is canonical: one more pass changes nothing.
		if p2, _, err := canonicalPath(p); err != nil || p2 != p {
			t.Fatalf("canonicalPath(%q) = %q, and again %q, %v", target, p, p2, err)
		}
		if !strings.HasPrefix(p, "/") || strings.Contains(p, "//") || strings.Contains(p, "/./") || strings.Contains(p, "/../") ||
			strings.ContainsAny(p, ";\\\x00") || strings.HasSuffix(p, "/..") || strings.HasSuffix(p, "/.") {
			t.Fatalf("canonicalPath(%q) = %q: not canonical", target, p)
		}
		if strings.Contains(q, "#") {
			t.Fatalf("query %q", q)
		}
	})
}

func TestLoopbackHost(t *testing.T) {
	for host, want := range map[string]bool{
		"localhost": true, "localhost:8080": true, "app.localhost:8080": true, "127.0.0.1": true, "127.0.0.1:80": true,
		"[::1]": true, "[::1]:8080": true, "app.example.com": false, "localhost.example.com": false, "10.0.0.1:80": false, "[::2]:1": false,
	} {
		if got := loopbackHost(host); got != want {
			t.Errorf("loopbackHost(%q) = %v, want %v", host, got, want)
		}
	}
}
