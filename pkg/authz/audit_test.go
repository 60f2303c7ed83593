package authz_test

import (
	"context"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/extauthz/extauthz/pkg/authz"
	"github.com/extauthz/extauthz/pkg/idp"
	"github.com/extauthz/extauthz/pkg/policy"
	"github.com/extauthz/extauthz/pkg/session"
	"github.com/extauthz/extauthz/pkg/tenant"
	"github.com/extauthz/extauthz/proto/sessionpb"
)

// Every audit event, each with its attributes, and no secret in any line.
func TestAuditTrail(t *testing.T) {
	ctx := context.Background()
	pol, err := policy.Parse([]byte(`{"routes":[
		{"source":"^/admin/","scope":"app.Admin"},
		{"source":"^/","authenticationType":"xsuaa"}]}`), "")
	if err != nil {
		t.Fatal(err)
	}
	f, al := newAuditFixture(t, authz.Options{Policy: pol, XFFTrustedHops: 1})
	secrets := []string{"the-csrf-token", "at-c1", "rt-1", "idt-1"}
	with := func(r *authz.Request) *authz.Request {
		r.Headers["x-request-id"] = "rid-1"
		r.Headers["x-forwarded-for"] = "203.0.113.9, 198.51.100.4"
		return r
	}

	// login
	c := login(t, f, "/")
	secrets = append(secrets, c)
	// login failed: the IdP's error, then a refused code
	for _, q := range []url.Values{{"error": {"access_denied"}, "error_description": {"The user cancelled"}}, {"code": {"c2"}}} {
		d := f.engine.Check(ctx, get("/", ""))
		loc, _ := url.Parse(header(d, "location"))
		q.Set("state", loc.Query().Get("state"))
		stateCookie, _, _ := strings.Cut(headers(d, "set-cookie")[0], ";")
		secrets = append(secrets, loc.Query().Get("state"), strings.SplitN(stateCookie, "=", 2)[1], loc.Query().Get("nonce"))
		f.idp.exchangeErr = fmt.Errorf("%w: code exchange: invalid_grant", idp.ErrRejected)
		f.engine.Check(ctx, with(get("/login/callback?"+q.Encode(), stateCookie)))
		f.idp.exchangeErr = nil
	}
	// scope refused, CSRF refused
	f.engine.Check(ctx, with(get("/admin/x", "JSESSIONID="+c)))
	post := with(get("/orders", "JSESSIONID="+c, "x-csrf-token", "wrong"))
	post.Method = "POST"
	f.engine.Check(ctx, post)
	// forged cookie
	forged := strings.Repeat("A", session.CookieValueLen)
	f.engine.Check(ctx, with(get("/", "JSESSIONID="+forged)))
	// absolute lifetime over
	keys, _ := session.NewKeys([]byte(strings.Repeat("k", 64)))
	old := session.NewManager(f.store, keys, session.Options{Now: func() time.Time { return time.Now().Add(-13 * time.Hour) }, MaxLifetime: 24 * time.Hour})
	_, oc, err := old.Create(ctx, &sessionpb.Session{Subject: "olga", AccessToken: "at-old"})
	if err != nil {
		t.Fatal(err)
	}
	secrets = append(secrets, oc, "at-old")
	f.engine.Check(ctx, with(get("/", "JSESSIONID="+oc)))
	// refresh refused: session ended
	f.idp.refreshErr = fmt.Errorf("%w: invalid_grant", idp.ErrRejected)
	rc := f.newSession(t, &sessionpb.Session{Subject: "rita", AccessToken: "at-rita", RefreshToken: "rt-rita", AccessTokenExpiry: time.Now().Add(-time.Minute).Unix()})
	secrets = append(secrets, rc, "at-rita", "rt-rita")
	f.engine.Check(ctx, with(get("/", "JSESSIONID="+rc)))
	// logout by the user
	f.engine.Check(ctx, with(get("/logout", "JSESSIONID="+c)))
	// another tenant's session
	mt, _ := tenant.New(tenant.Options{Pattern: `^(.*)\.app\.example\.com$`})
	e2 := authz.New(f.sessions, authz.StaticProvider{P: f.idp}, mt, authz.Options{Audit: slog.New(slog.NewJSONHandler(al, nil)).With("audit", true)}, slog.New(slog.DiscardHandler))
	_, tc, _ := f.sessions.Create(ctx, &sessionpb.Session{Tenant: "a", Subject: "tina", AccessToken: "at-tina"})
	secrets = append(secrets, tc, "at-tina")
	r := get("/", "JSESSIONID="+tc)
	r.Host = "b.app.example.com"
	e2.Check(ctx, r)

	want := map[string]map[string]any{
		"login":           {"subject": "alice"},
		"login_failed":    {"idp_error": "access_denied", "idp_error_description": "The user cancelled"},
		"scope_refused":   {"subject": "alice", "client": "198.51.100.4", "request_id": "rid-1"},
		"csrf_refused":    {"subject": "alice"},
		"forged_cookie":   {"client": "198.51.100.4"},
		"session_expired": {"expiry": "absolute"},
		"refresh_failed":  {"subject": "rita"},
		"logout":          {"subject": "alice", "via": "user"},
		"other_tenant":    {"tenant": "b"},
	}
	for ev, attrs := range want {
		lines := al.events(t, ev)
		if len(lines) == 0 {
			t.Errorf("no %s audit line", ev)
			continue
		}
		for k, v := range attrs {
			if lines[0][k] != v {
				t.Errorf("%s: %s = %v, want %v (%v)", ev, k, lines[0][k], v, lines[0])
			}
		}
		if lines[0]["time"] == nil || lines[0]["tenant"] == nil {
			t.Errorf("%s: no time or tenant: %v", ev, lines[0])
		}
	}
	if n := len(al.events(t, "login_failed")); n != 2 {
		t.Errorf("%d login_failed lines, want 2 (the IdP's error, the refused code)", n)
	}
	if l := al.events(t, "login_failed")[1]; !strings.Contains(fmt.Sprint(l["error"]), "invalid_grant") {
		t.Errorf("refused code: %v", l)
	}
	if l := al.events(t, "login")[0]; len(fmt.Sprint(l["session"])) != 16 {
		t.Errorf("login without a session fingerprint: %v", l)
	}
	al.mustNotContain(t, secrets...)
}

// Anyone can send forged cookies: their audit lines are limited, and what
// was dropped is counted into the next line.
func TestAnonymousAuditEventsAreLimited(t *testing.T) {
	f, al := newAuditFixture(t, authz.Options{})
	forged := get("/", "JSESSIONID="+strings.Repeat("A", session.CookieValueLen), "x-requested-with", "XMLHttpRequest")
	start := time.Now()
	for range 5000 {
		f.engine.Check(context.Background(), forged)
	}
	if n, max := len(al.events(t, "forged_cookie")), auditMax(start); n < 50 || n > max {
		t.Fatalf("%d audit lines for 5,000 forged cookies, want about the burst (100), at most %d", n, max)
	}
	time.Sleep(200 * time.Millisecond) // a few tokens come back
	f.engine.Check(context.Background(), forged)
	ev := al.events(t, "forged_cookie")
	if last := ev[len(ev)-1]; last["suppressed"] == nil {
		t.Fatalf("the next line does not say how many were dropped: %v", last)
	}
}

// A signed-in user can set off refusals as often as they like: their audit
// lines are limited too.
func TestSignedInAuditEventsAreLimited(t *testing.T) {
	pol, err := policy.Parse([]byte(`{"routes":[{"source":"^/admin/","scope":"app.Admin"},{"source":"^/"}]}`), "")
	if err != nil {
		t.Fatal(err)
	}
	f, al := newAuditFixture(t, authz.Options{Policy: pol})
	c := f.newSession(t, &sessionpb.Session{AccessToken: "tok", CsrfToken: "csrf"})
	start := time.Now()
	for range 3000 {
		f.engine.Check(context.Background(), get("/admin/x", "JSESSIONID="+c))
	}
	if n, max := len(al.events(t, "scope_refused")), auditMax(start); n < 50 || n > max {
		t.Fatalf("%d audit lines for 3,000 refused scopes, want about the burst (100), at most %d", n, max)
	}
}

// auditMax is the most lines a limited event may write since start: the
// burst (100), then 20 a second (a loaded machine under -race takes seconds).
func auditMax(start time.Time) int { return 100 + int(20*time.Since(start).Seconds()) + 1 }
