package tenant

import (
	"errors"
	"strings"
	"testing"
)

func TestResolve(t *testing.T) {
	r, err := New(Options{Pattern: `^([^.]+)\.(?:cert\.)?app\.example\.com$`})
	if err != nil {
		t.Fatal(err)
	}
	for host, want := range map[string]string{
		"acme.app.example.com":                        "acme",
		"ACME.App.Example.COM":                        "acme",
		"acme.app.example.com:8443":                   "acme",
		"acme.cert.app.example.com":                   "acme",
		"acme.app.example.com.":                       "acme",
		"eu-10.acme.app.example.com":                  "",
		"app.example.com":                             "",
		"acme.app.example.com.evil":                   "",
		"":                                            "",
		"..app.example.com":                           "",
		"a..b.app.example.com":                        "",
		"acme.app.example.com/x":                      "",
		"ac me.app.example.com":                       "",
		"äcme.app.example.com":                        "",
		"xn--cme-2la.app.example.com":                 "xn--cme-2la",
		strings.Repeat("a", 300) + ".app.example.com": "",
		"[::1]:8080":                                  "",
	} {
		_, got, err := r.Resolve(host, "")
		if want == "" {
			if !errors.Is(err, ErrUnknownHost) && !errors.Is(err, ErrBadHost) {
				t.Errorf("Resolve(%q) = %q, %v; want ErrUnknownHost or ErrBadHost", host, got, err)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("Resolve(%q) = %q, %v; want %q", host, got, err, want)
		}
	}
}

func TestForwardedHostOnlyWhenTrusted(t *testing.T) {
	untrusted, _ := New(Options{Pattern: `^(.*)\.app\.example\.com$`})
	if _, got, _ := untrusted.Resolve("a.app.example.com", "b.app.example.com"); got != "a" {
		t.Fatalf("untrusted x-forwarded-host was used: %q", got)
	}
	trusted, _ := New(Options{Pattern: `^(.*)\.app\.example\.com$`, TrustForwardedHost: true})
	if host, got, _ := trusted.Resolve("internal:8080", "b.app.example.com"); got != "b" || host != "b.app.example.com" {
		t.Fatalf("trusted x-forwarded-host: %q %q, want b on b.app.example.com", host, got)
	}
	// Behind a proxy that appends (Envoy's append_x_forwarded_host), the
	// first value is whatever the client sent: the last one is the proxy's.
	if host, got, _ := trusted.Resolve("internal:8080", "a.app.example.com, b.app.example.com"); got != "b" || host != "b.app.example.com" {
		t.Fatalf("appended x-forwarded-host: %q %q, want the proxy's b on b.app.example.com", host, got)
	}
}

func TestNewErrors(t *testing.T) {
	if _, err := New(Options{Pattern: `^.*\.app$`}); err == nil || !strings.Contains(err.Error(), "capture group") {
		t.Fatalf("pattern without a group: %v", err)
	}
	if _, err := New(Options{Pattern: `^(.*\.app$`}); err == nil {
		t.Fatal("a broken regex compiled")
	}
	r, err := New(Options{})
	if err != nil || r.MultiTenant() || !r.LoopbackOnly() {
		t.Fatal("no pattern and no hosts must be single-tenant on loopback")
	}
	if _, got, err := r.Resolve("localhost", ""); err != nil || got != "" {
		t.Fatalf("single-tenant Resolve = %q, %v", got, err)
	}
	for _, bad := range []string{"app.example.com:8080", "exa*mple.com", "*.", "[::1]x", "host/path", "*.[::1]", ""} {
		if _, err := New(Options{AllowedHosts: []string{bad}}); err == nil {
			t.Errorf("allowed host %q accepted", bad)
		}
	}
}

func FuzzResolve(f *testing.F) {
	r, _ := New(Options{Pattern: `^(.*)\.app\.example\.com$`, TrustForwardedHost: true})
	single, _ := New(Options{AllowedHosts: []string{"app.example.com", "*.apps.example.com"}})
	f.Add("acme.app.example.com", "")
	f.Add("x", "y.app.example.com")
	f.Add(":80", "")
	f.Add("a", ":8443")
	f.Fuzz(func(t *testing.T, host, fwd string) {
		h, tn, err := r.Resolve(host, fwd)
		if err == nil && (tn == "" || strings.ContainsAny(tn, "/:@ \\") || !strings.HasSuffix(Hostname(h), ".app.example.com")) {
			t.Fatalf("tenant %q on %q from %q/%q", tn, h, host, fwd)
		}
		h, _, err = single.Resolve(host, fwd)
		if n := Hostname(h); err == nil && n != "app.example.com" && !strings.HasSuffix(n, ".apps.example.com") {
			t.Fatalf("host %q served from %q", h, host)
		}
	})
}

func TestAllowedHosts(t *testing.T) {
	r, err := New(Options{AllowedHosts: []string{"App.Example.com.", "*.apps.example.com", "10.0.0.1"}})
	if err != nil {
		t.Fatal(err)
	}
	for host, want := range map[string]string{
		"app.example.com":             "app.example.com",
		"APP.example.com:8443":        "app.example.com:8443",
		"app.example.com.":            "app.example.com",
		"x.apps.example.com":          "x.apps.example.com",
		"a.b.apps.example.com":        "a.b.apps.example.com",
		"10.0.0.1:80":                 "10.0.0.1:80",
		"apps.example.com":            "",
		".apps.example.com":           "",
		"localhost":                   "",
		"127.0.0.1":                   "",
		"attacker.example":            "",
		"app.example.com.attacker.io": "",
		"app.example.com@attacker.io": "",
		"attacker.io#app.example.com": "",
		"app.example.com:443@x":       "",
		" app.example.com":            "",
		"app.example.com:0":           "",
		"app.example.com:08080":       "",
		":80":                         "",
		":":                           "",
		"[]:80":                       "",
		"[::1]:":                      "",
	} {
		got, _, err := r.Resolve(host, "")
		if got != want || (err == nil) != (want != "") {
			t.Errorf("Resolve(%q) = %q, %v; want %q", host, got, err, want)
		}
	}
	loop, _ := New(Options{})
	for host, ok := range map[string]bool{
		"localhost": true, "LOCALHOST:8080": true, "app.localhost:8080": true, "127.0.0.1": true, "127.1.2.3:9": true,
		"[::1]:8080": true, "localhost.attacker.io": false, "attacker.io": false, "[::2]": false, "0.0.0.0": false,
	} {
		if _, _, err := loop.Resolve(host, ""); (err == nil) != ok {
			t.Errorf("loopback-only Resolve(%q): %v, want served=%v", host, err, ok)
		}
	}
}

func TestCanonicalHost(t *testing.T) {
	loopbackOrAny, _ := New(Options{Pattern: `^(.*)$`})
	for host, want := range map[string]string{
		"App.Example.com":       "app.example.com",
		"app.example.com:8443":  "app.example.com:8443",
		"localhost:8080":        "localhost:8080",
		"evil.com/x@":           "",
		"user@evil.com":         "",
		"app.example.com:":      "",
		"app.example.com:+80":   "",
		"app.example.com:70000": "",
		"[zz::1]":               "",
		"[::1]x":                "",
		"-a.example.com":        "",
		"":                      "",
		".":                     "",
	} {
		got, _, err := loopbackOrAny.Resolve(host, "")
		if got != want || (err == nil) != (want != "") {
			t.Errorf("Resolve(%q) = %q, %v; want %q", host, got, err, want)
		}
	}
}
