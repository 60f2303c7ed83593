package authz_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"testing"

	"github.com/extauthz/extauthz/pkg/authz"
	"github.com/extauthz/extauthz/pkg/idp"
	"github.com/extauthz/extauthz/pkg/tenant"
)

// tenantProviders gives each tenant its own fake identity provider.
type tenantProviders map[string]*fakeIDP

func (p tenantProviders) Provider(_ context.Context, tn string) (idp.Client, error) {
	if f, ok := p[tn]; ok {
		return f, nil
	}
	return nil, fmt.Errorf("no provider for tenant %q", tn)
}

// multiTenant is the fixture's engine serving <tenant>.app.example.com.
func multiTenant(t *testing.T, f *fixture, providers authz.Providers) {
	t.Helper()
	mt, err := tenant.New(tenant.Options{Pattern: `^(.*)\.app\.example\.com$`})
	if err != nil {
		t.Fatal(err)
	}
	f.engine = authz.New(f.sessions, providers, mt, authz.Options{}, slog.New(slog.DiscardHandler))
}

func on(host string, r *authz.Request) *authz.Request { r.Host = host; return r }

// startLogin begins a login on host: the callback request it leads to.
func startLogin(t *testing.T, f *fixture, host string) *authz.Request {
	t.Helper()
	d := f.engine.Check(context.Background(), on(host, get("/", "")))
	loc, err := url.Parse(header(d, "location"))
	if err != nil || d.Status != 302 {
		t.Fatalf("login on %s: %d %v", host, d.Status, err)
	}
	stateCookie, _, _ := strings.Cut(headers(d, "set-cookie")[0], ";")
	return on(host, get("/login/callback?"+url.Values{"code": {"c"}, "state": {loc.Query().Get("state")}}.Encode(), stateCookie))
}

// loginOn logs alice in on host (the provider's ID token has sid) and
// returns the session cookie.
func loginOn(t *testing.T, f *fixture, p *fakeIDP, host, sid string) string {
	t.Helper()
	p.mu.Lock()
	p.sid = sid
	p.mu.Unlock()
	d := f.engine.Check(context.Background(), startLogin(t, f, host))
	for _, sc := range headers(d, "set-cookie") {
		if v, ok := strings.CutPrefix(sc, "JSESSIONID="); ok {
			v, _, _ = strings.Cut(v, ";")
			return v
		}
	}
	t.Fatalf("login on %s: %d %s, no session", host, d.Status, d.Body)
	return ""
}

func allowedOn(f *fixture, host, cookie string) bool {
	return f.engine.Check(context.Background(), on(host, get("/", "JSESSIONID="+cookie))).Allow
}

func backchannelOn(t *testing.T, f *fixture, host, token string) {
	t.Helper()
	if d := f.engine.Check(context.Background(), on(host, backchannel(token))); d.Status != 200 {
		t.Fatalf("back-channel logout on %s: %d %s", host, d.Status, d.Body)
	}
}

// One issuer for every tenant host (EXTAUTHZ_OIDC_ISSUER without
// {tenant}): a user logged in on a's and b's hosts within one session at
// the provider is logged out of both by the one logout token the provider
// posts to a's host, whether it names the sid or only the sub.
func TestBackchannelLogoutWithASharedIssuerEndsEveryTenantsSessions(t *testing.T) {
	f := newFixture(t, authz.Options{})
	multiTenant(t, f, authz.StaticProvider{P: f.idp})
	const a, b = "a.app.example.com", "b.app.example.com"
	ax := loginOn(t, f, f.idp, a, "sid-x")
	bx := loginOn(t, f, f.idp, b, "sid-x")
	by := loginOn(t, f, f.idp, b, "sid-y")
	for _, c := range []struct{ host, cookie string }{{a, ax}, {b, bx}, {b, by}} {
		if !allowedOn(f, c.host, c.cookie) {
			t.Fatalf("a fresh session on %s is refused", c.host)
		}
	}
	backchannelOn(t, f, a, logoutToken("sid-x", "alice", "j1"))
	if allowedOn(f, a, ax) || allowedOn(f, b, bx) {
		t.Fatal("a session of the ended provider session still works (on the other tenant's host?)")
	}
	if !allowedOn(f, b, by) {
		t.Fatal("a session of another provider session was ended")
	}
	// The token replayed to b's host: refused as well.
	if d := f.engine.Check(context.Background(), on(b, backchannel(logoutToken("sid-x", "alice", "j1")))); d.Status != 400 || !strings.Contains(d.Body, "replayed") {
		t.Fatalf("the token replayed to another tenant's host: %d %s", d.Status, d.Body)
	}

	// Only sub: every session of alice at the issuer, on every host.
	az := loginOn(t, f, f.idp, a, "sid-z")
	backchannelOn(t, f, a, logoutToken("", "alice", "j2"))
	if allowedOn(f, b, by) || allowedOn(f, a, az) {
		t.Fatal("a sub-only logout token left a session of the subject alive")
	}
}

// An issuer per tenant: a logout token of a's issuer ends nothing of b's,
// even for the same sub and sid values.
func TestBackchannelLogoutWithIssuersPerTenantStaysInItsTenant(t *testing.T) {
	f := newFixture(t, authz.Options{})
	pa, pb := &fakeIDP{issuer: "https://a.idp.test"}, &fakeIDP{issuer: "https://b.idp.test"}
	multiTenant(t, f, tenantProviders{"a": pa, "b": pb})
	const a, b = "a.app.example.com", "b.app.example.com"
	a1 := loginOn(t, f, pa, a, "sid-1")
	b1 := loginOn(t, f, pb, b, "sid-1")
	backchannelOn(t, f, a, logoutToken("sid-1", "alice", "j1"))
	if allowedOn(f, a, a1) {
		t.Fatal("a's session survived its provider's logout")
	}
	if !allowedOn(f, b, b1) {
		t.Fatal("a logout token of a's issuer ended b's session (same sid value)")
	}
	a2 := loginOn(t, f, pa, a, "sid-2")
	backchannelOn(t, f, a, logoutToken("", "alice", "j2"))
	if allowedOn(f, a, a2) {
		t.Fatal("a's session survived a sub-only logout")
	}
	if !allowedOn(f, b, b1) {
		t.Fatal("a sub-only logout token of a's issuer ended b's session of the same sub")
	}
	// b's login with the sid a's provider ended is not refused.
	if b2 := loginOn(t, f, pb, b, "sid-1"); !allowedOn(f, b, b2) {
		t.Fatal("b's login refused")
	}
}

// A login on b's host whose provider session (shared issuer) was ended by
// a logout token posted to a's host, while the browser was on its way to
// the callback, creates no session.
func TestLoginOnAnotherTenantAfterItsProviderSessionEndedIsRefused(t *testing.T) {
	f := newFixture(t, authz.Options{})
	multiTenant(t, f, authz.StaticProvider{P: f.idp})
	f.idp.mu.Lock()
	f.idp.sid = "sid-late"
	f.idp.mu.Unlock()
	cb := startLogin(t, f, "b.app.example.com")
	backchannelOn(t, f, "a.app.example.com", logoutToken("sid-late", "", "j-late"))
	d := f.engine.Check(context.Background(), cb)
	if d.Status != 403 || !strings.Contains(d.Body, "has ended") {
		t.Fatalf("callback on b after the provider session ended on a: %d %q", d.Status, d.Body)
	}
	for _, sc := range headers(d, "set-cookie") {
		if strings.HasPrefix(sc, "JSESSIONID=") {
			t.Fatalf("a session cookie was set: %s", sc)
		}
	}
}
