package tenant

import (
	"errors"
	"strings"
	"testing"
)

func TestResolve(t *testing.T) {
	r, err := New(`^([^.]+)\.(?:cert\.)?app\.example\.com$`, false)
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
		got, err := r.Resolve(host, "")
		if want == "" {
			if !errors.Is(err, ErrNoTenant) {
				t.Errorf("Resolve(%q) = %q, %v; want ErrNoTenant", host, got, err)
			}
			continue
		}
		if err != nil || got != want {
			t.Errorf("Resolve(%q) = %q, %v; want %q", host, got, err, want)
		}
	}
}

func TestForwardedHostOnlyWhenTrusted(t *testing.T) {
	untrusted, _ := New(`^(.*)\.app\.example\.com$`, false)
	if got, _ := untrusted.Resolve("a.app.example.com", "b.app.example.com"); got != "a" {
		t.Fatalf("untrusted x-forwarded-host was used: %q", got)
	}
	trusted, _ := New(`^(.*)\.app\.example\.com$`, true)
	if got, _ := trusted.Resolve("internal:8080", "b.app.example.com, proxy"); got != "b" {
		t.Fatalf("trusted x-forwarded-host: %q, want b", got)
	}
}

func TestNewErrors(t *testing.T) {
	if _, err := New(`^.*\.app$`, false); err == nil || !strings.Contains(err.Error(), "capture group") {
		t.Fatalf("pattern without a group: %v", err)
	}
	if _, err := New(`^(.*\.app$`, false); err == nil {
		t.Fatal("a broken regex compiled")
	}
	r, err := New("", false)
	if err != nil || r.MultiTenant() {
		t.Fatal("empty pattern must be single-tenant")
	}
	if got, err := r.Resolve("anything", ""); err != nil || got != "" {
		t.Fatalf("single-tenant Resolve = %q, %v", got, err)
	}
}

func FuzzResolve(f *testing.F) {
	r, _ := New(`^(.*)\.app\.example\.com$`, true)
	f.Add("acme.app.example.com", "")
	f.Add("x", "y.app.example.com")
	f.Fuzz(func(t *testing.T, host, fwd string) {
		tn, err := r.Resolve(host, fwd)
		if err == nil && (tn == "" || strings.ContainsAny(tn, "/:@ \\")) {
			t.Fatalf("tenant %q from %q/%q", tn, host, fwd)
		}
	})
}

func TestValidHost(t *testing.T) {
	for host, want := range map[string]string{
		"App.Example.com":       "app.example.com",
		"app.example.com:8443":  "app.example.com:8443",
		"localhost:8080":        "localhost:8080",
		"[::1]:8080":            "[::1]:8080",
		"[::1]":                 "[::1]",
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
		got, ok := ValidHost(host)
		if got != want || ok != (want != "") {
			t.Errorf("ValidHost(%q) = %q, %v; want %q", host, got, ok, want)
		}
	}
}
