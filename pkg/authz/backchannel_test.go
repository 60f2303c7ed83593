package authz_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/extauthz/extauthz/pkg/authz"
	"github.com/extauthz/extauthz/pkg/session"
	"github.com/extauthz/extauthz/proto/sessionpb"
)

// auditLog collects audit lines (JSON) for a test.
type auditLog struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (a *auditLog) Write(p []byte) (int, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.buf.Write(p)
}

func (a *auditLog) lines(t *testing.T) []map[string]any {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(a.buf.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("audit line %q: %v", l, err)
		}
		if m["audit"] != true {
			t.Fatalf("audit line without audit=true: %s", l)
		}
		out = append(out, m)
	}
	return out
}

// events are the audit lines of one event.
func (a *auditLog) events(t *testing.T, ev string) []map[string]any {
	var out []map[string]any
	for _, m := range a.lines(t) {
		if m["event"] == ev {
			out = append(out, m)
		}
	}
	return out
}

// mustNotContain fails when any audit line holds one of the secrets.
func (a *auditLog) mustNotContain(t *testing.T, secrets ...string) {
	t.Helper()
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, s := range secrets {
		if s != "" && strings.Contains(a.buf.String(), s) {
			t.Fatalf("an audit line contains the secret %q", s)
		}
	}
}

func newAuditFixture(t *testing.T, opt authz.Options) (*fixture, *auditLog) {
	al := &auditLog{}
	opt.Audit = slog.New(slog.NewJSONHandler(al, nil)).With("audit", true)
	return newFixture(t, opt), al
}

func backchannel(token string) *authz.Request {
	r := get("/logout/backchannel", "", "x-request-id", "req-42")
	r.Method = "POST"
	r.ClientAddr = "192.0.2.7:5555"
	if token != "" {
		r.Body = []byte(url.Values{"logout_token": {token}}.Encode())
	}
	return r
}

func logoutToken(sid, sub, jti string) string {
	b, _ := json.Marshal(map[string]string{"SID": sid, "Sub": sub, "JTI": jti})
	return "ok:" + string(b)
}

func TestBackchannelLogoutEndsTheSessionsItNames(t *testing.T) {
	f, al := newAuditFixture(t, authz.Options{})
	ctx := context.Background()
	x1 := f.newSession(t, &sessionpb.Session{Issuer: f.idp.iss(), Subject: "alice", Sid: "sid-x", AccessToken: "at-x1"})
	x2 := f.newSession(t, &sessionpb.Session{Issuer: f.idp.iss(), Subject: "alice", Sid: "sid-x", AccessToken: "at-x2"})
	y := f.newSession(t, &sessionpb.Session{Issuer: f.idp.iss(), Subject: "alice", Sid: "sid-y", AccessToken: "at-y"})
	bob := f.newSession(t, &sessionpb.Session{Issuer: f.idp.iss(), Subject: "bob", Sid: "sid-b", AccessToken: "at-b"})
	allowed := func(c string) bool { return f.engine.Check(ctx, get("/", "JSESSIONID="+c)).Allow }
	for _, c := range []string{x1, x2, y, bob} {
		if !allowed(c) {
			t.Fatal("a fresh session is refused")
		}
	}

	d := f.engine.Check(ctx, backchannel(logoutToken("sid-x", "", "j1")))
	if d.Allow || d.Status != 200 || d.Reason != authz.ReasonBackchannelLogout || header(d, "cache-control") != "no-store" {
		t.Fatalf("back-channel logout = %+v", d)
	}
	if allowed(x1) || allowed(x2) {
		t.Fatal("a session of the logged-out sid is still allowed")
	}
	if !allowed(y) || !allowed(bob) {
		t.Fatal("a session of another sid or user was ended")
	}
	if ev := al.events(t, "logout"); len(ev) != 2 || ev[0]["via"] != "backchannel" || ev[0]["sid"] != "sid-x" ||
		ev[0]["client"] != "192.0.2.7" || ev[0]["request_id"] != "req-42" || len(ev[0]["session"].(string)) != 16 {
		t.Fatalf("audit logout lines = %v", ev)
	}

	// Replayed: refused, and nothing else happens.
	x3 := f.newSession(t, &sessionpb.Session{Issuer: f.idp.iss(), Subject: "alice", Sid: "sid-x", AccessToken: "at-x3"})
	d = f.engine.Check(ctx, backchannel(logoutToken("sid-x", "", "j1")))
	if d.Status != 400 || d.Reason != authz.ReasonBackchannelInvalid || !strings.Contains(d.Body, `"error":"invalid_request"`) ||
		header(d, "cache-control") != "no-store" || header(d, "content-type") != "application/json" {
		t.Fatalf("replayed = %+v", d)
	}
	if !allowed(x3) {
		t.Fatal("a replayed logout token ended a session")
	}

	// Only sub: every session of the user in the tenant.
	d = f.engine.Check(ctx, backchannel(logoutToken("", "alice", "j2")))
	if d.Status != 200 {
		t.Fatalf("sub logout = %+v", d)
	}
	if allowed(y) || allowed(x3) || !allowed(bob) {
		t.Fatal("a sub-only logout token must end all of alice's sessions and no one else's")
	}
	if n := len(al.events(t, "backchannel_logout_refused")); n != 1 {
		t.Fatalf("%d refusals audited, want 1 (the replay)", n)
	}
	al.mustNotContain(t, x1, x2, y, bob, x3, "at-x1", "at-y", "ok:")
}

func TestBackchannelLogoutRefusals(t *testing.T) {
	f, al := newAuditFixture(t, authz.Options{BackchannelLogoutPath: "/bcl"})
	ctx := context.Background()
	c := f.newSession(t, &sessionpb.Session{Issuer: f.idp.iss(), Subject: "alice", Sid: "sid-x", AccessToken: "at"})
	bcl := func(token string) *authz.Request { r := backchannel(token); r.Path = "/bcl"; return r }
	for name, r := range map[string]*authz.Request{
		"forged":  bcl("forged-token"),
		"no body": bcl(""),
		"no logout_token": func() *authz.Request {
			r := bcl("")
			r.Body = []byte("x=1")
			return r
		}(),
		"bad form": func() *authz.Request {
			r := bcl("")
			r.Body = []byte("logout_token=%zz")
			return r
		}(),
	} {
		d := f.engine.Check(ctx, r)
		if d.Allow || d.Status != 400 || d.Reason != authz.ReasonBackchannelInvalid || header(d, "cache-control") != "no-store" {
			t.Errorf("%s: %+v", name, d)
		}
	}
	get := bcl(logoutToken("sid-x", "", "j"))
	get.Method = "GET"
	if d := f.engine.Check(ctx, get); d.Status != 405 || header(d, "allow") != "POST" {
		t.Errorf("GET: %+v", d)
	}
	if d := f.engine.Check(ctx, backchannel(logoutToken("sid-x", "", "j"))); d.Reason == authz.ReasonBackchannelLogout {
		t.Error("the default path is served although another was configured")
	}
	if !f.engine.Check(ctx, getReq("/", c)).Allow {
		t.Fatal("a refused logout token ended a session")
	}
	if n := len(al.events(t, "backchannel_logout_refused")); n != 4 {
		t.Fatalf("%d refusals audited, want 4", n)
	}
}

func getReq(path, cookie string) *authz.Request { return get(path, "JSESSIONID="+cookie) }

// A delivery that fails while the sessions are being ended (503) is retried
// by the provider with the same token: the retry is accepted, not refused as
// a replay, and ends the sessions.
func TestBackchannelRetryAfterAFailure(t *testing.T) {
	f, _ := newAuditFixture(t, authz.Options{})
	ctx := context.Background()
	c := f.newSession(t, &sessionpb.Session{Issuer: f.idp.iss(), Subject: "alice", Sid: "sid-x", AccessToken: "at"})
	flaky := &deleteFailsOnce{Store: f.store.Store}
	f.store.Store = flaky
	if d := f.engine.Check(ctx, backchannel(logoutToken("sid-x", "", "j9"))); d.Status != 503 {
		t.Fatalf("first delivery with the store failing: %d %s", d.Status, d.Reason)
	}
	if d := f.engine.Check(ctx, backchannel(logoutToken("sid-x", "", "j9"))); d.Status != 200 {
		t.Fatalf("the provider's retry: %d %s %s, want 200", d.Status, d.Reason, d.Body)
	}
	if f.engine.Check(ctx, get("/", "JSESSIONID="+c)).Allow {
		t.Fatal("the session survived the retried back-channel logout")
	}
	if d := f.engine.Check(ctx, backchannel(logoutToken("sid-x", "", "j9"))); d.Status != 400 {
		t.Fatalf("a third delivery, after success: %d, want 400 (replayed)", d.Status)
	}
}

type deleteFailsOnce struct {
	session.Store
	failed atomic.Bool
}

func (d *deleteFailsOnce) Delete(ctx context.Context, key string) error {
	if d.failed.CompareAndSwap(false, true) {
		return errors.New("i/o timeout")
	}
	return d.Store.Delete(ctx, key)
}

// A login whose provider session was ended by a back-channel logout while
// the browser was on its way to the callback creates no session.
func TestLoginAfterItsProviderSessionEndedIsRefused(t *testing.T) {
	f, _ := newAuditFixture(t, authz.Options{})
	ctx := context.Background()
	f.idp.mu.Lock()
	f.idp.sid = "sid-late"
	f.idp.mu.Unlock()
	d := f.engine.Check(ctx, get("/", ""))
	loc, _ := url.Parse(header(d, "location"))
	stateCookie, _, _ := strings.Cut(headers(d, "set-cookie")[0], ";")
	if d := f.engine.Check(ctx, backchannel(logoutToken("sid-late", "", "j-late"))); d.Status != 200 {
		t.Fatalf("back-channel logout: %d %s", d.Status, d.Body)
	}
	cb := get("/login/callback?"+url.Values{"code": {"c"}, "state": {loc.Query().Get("state")}}.Encode(), stateCookie)
	d = f.engine.Check(ctx, cb)
	if d.Status != 403 || !strings.Contains(d.Body, "has ended") {
		t.Fatalf("callback after the provider session ended: %d %q", d.Status, d.Body)
	}
	for _, sc := range headers(d, "set-cookie") {
		if strings.HasPrefix(sc, "JSESSIONID=") {
			t.Fatalf("a session cookie was set: %s", sc)
		}
	}
}
