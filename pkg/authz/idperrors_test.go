package authz_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/e2e"
	"github.com/extauthz/extauthz/pkg/authz"
	"github.com/extauthz/extauthz/pkg/idp"
	"github.com/extauthz/extauthz/pkg/session"
	"github.com/extauthz/extauthz/proto/sessionpb"
)

type failingProviders struct{ err error }

func (p failingProviders) Provider(context.Context, string) (idp.Client, error) { return nil, p.err }

// A host naming no tenant of the provider is not served (404), not an
// outage: anyone can send such hosts, and they must set off no IdP alert
// and no warning. A real outage is a 502 whose warning is written at most
// about once a second, with the count of those dropped.
func TestIdPErrors(t *testing.T) {
	keys, err := session.NewKeys([]byte(strings.Repeat("k", 64)))
	if err != nil {
		t.Fatal(err)
	}
	var sessions *session.Manager
	engine := func(err error) (*authz.Engine, *e2e.SyncBuffer) {
		var buf e2e.SyncBuffer
		log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
		sessions = session.NewManager(session.NewMemoryStore(nil), keys, session.Options{})
		return authz.New(sessions, failingProviders{err}, testHosts(t), authz.Options{}, log), &buf
	}
	ctx := context.Background()

	unknown := fmt.Errorf("%w \"x\": %w: https://x.idp.example/.well-known/openid-configuration answered 404 Not Found", idp.ErrUnknownTenant, idp.ErrNoSuchIssuer)
	e, buf := engine(unknown)
	for range 50 {
		if d := e.Check(ctx, get("/orders", "")); d.Allow || d.Status != http.StatusNotFound || d.Reason != authz.ReasonUnknownHost {
			t.Fatalf("an unknown tenant: %d %s, want 404 unknown_host", d.Status, d.Reason)
		}
	}
	// Neither a logout nor a back-channel logout without a session makes it
	// an outage.
	if d := e.Check(ctx, get("/logout", "")); d.Status != http.StatusNotFound || d.Reason != authz.ReasonUnknownHost {
		t.Fatalf("a logout on an unknown tenant: %d %s, want 404 unknown_host", d.Status, d.Reason)
	}
	bc := get("/logout/backchannel", "")
	bc.Method, bc.Body = "POST", []byte("logout_token=x")
	if d := e.Check(ctx, bc); d.Status != http.StatusNotFound || d.Reason != authz.ReasonUnknownHost {
		t.Fatalf("a back-channel logout on an unknown tenant: %d %s, want 404 unknown_host", d.Status, d.Reason)
	}
	if n := strings.Count(buf.String(), "level=WARN"); n != 0 {
		t.Fatalf("%d warnings for an unknown tenant:\n%s", n, buf.String())
	}
	// With a session of the tenant (its token due for a refresh), the
	// tenant exists: a provider that says otherwise is failing (after a
	// restart the replica has proven no tenant yet).
	_, cookie, err := sessions.Create(ctx, &sessionpb.Session{AccessToken: "at", RefreshToken: "rt", AccessTokenExpiry: time.Now().Add(-time.Minute).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	if d := e.Check(ctx, get("/orders", "JSESSIONID="+cookie, "x-requested-with", "XMLHttpRequest")); d.Status != http.StatusBadGateway || d.Reason != authz.ReasonIDPUnavailable {
		t.Fatalf("a session's refresh when its provider answers 404: %d %s, want 502 idp_unavailable", d.Status, d.Reason)
	}
	if !strings.Contains(buf.String(), "identity provider unavailable") {
		t.Fatalf("no warning for a session's provider answering 404:\n%s", buf.String())
	}

	// Too many new tenants at once: not an outage either.
	e, buf = engine(fmt.Errorf("discovery: %w", idp.ErrBusy))
	if d := e.Check(ctx, get("/orders", "")); d.Status != http.StatusServiceUnavailable || d.Reason != authz.ReasonIDPBusy {
		t.Fatalf("fetch slots taken: %d %s, want 503 idp_busy", d.Status, d.Reason)
	}
	// A check whose caller went away meanwhile: nobody reads the answer.
	gone, cancel := context.WithCancel(ctx)
	cancel()
	if d := e.Check(gone, get("/orders", "")); d.Status != 499 || d.Reason != authz.ReasonCanceled {
		t.Fatalf("a canceled check: %d %s, want 499 canceled", d.Status, d.Reason)
	}
	if n := strings.Count(buf.String(), "level=WARN"); n != 0 {
		t.Fatalf("%d warnings for busy fetch slots and a canceled check:\n%s", n, buf.String())
	}

	e, buf = engine(errors.New("dial tcp: connection refused"))
	start := time.Now()
	for range 200 {
		if d := e.Check(ctx, get("/orders", "")); d.Status != http.StatusBadGateway || d.Reason != authz.ReasonIDPUnavailable {
			t.Fatalf("the provider down: %d %s, want 502 idp_unavailable", d.Status, d.Reason)
		}
	}
	if n, max := strings.Count(buf.String(), "identity provider unavailable"), 10+int(time.Since(start).Seconds())+1; n < 1 || n > max {
		t.Fatalf("%d warnings for 200 requests during an outage, want a burst of about 10, at most %d:\n%s", n, max, buf.String())
	}
	time.Sleep(1100 * time.Millisecond)
	e.Check(ctx, get("/orders", ""))
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	if last := lines[len(lines)-1]; !strings.Contains(last, "identity provider unavailable") || !strings.Contains(last, "suppressed=") {
		t.Fatalf("the next warning a second later does not count the dropped ones: %q", last)
	}
}

// A callback whose login state opened is a login extauthz started for this
// tenant: the provider failing now is that tenant's outage, counted under
// its name (what the shipped IdP alert pages on).
func TestCallbackOutageIsTheTenants(t *testing.T) {
	ctx := context.Background()
	f := newFixture(t, authz.Options{})
	d := f.engine.Check(ctx, get("/orders", ""))
	loc, _ := url.Parse(header(d, "location"))
	state, _, _ := strings.Cut(headers(d, "set-cookie")[0], ";")
	f.idp.exchangeErr = errors.New("dial tcp: i/o timeout")
	d = f.engine.Check(ctx, get("/login/callback?"+url.Values{"code": {"c"}, "state": {loc.Query().Get("state")}}.Encode(), state))
	if d.Status != http.StatusBadGateway || d.Reason != authz.ReasonIDPUnavailable || !d.TenantVerified {
		t.Fatalf("the provider down at the callback: %d %s verified=%v, want 502 idp_unavailable, the tenant's", d.Status, d.Reason, d.TenantVerified)
	}
	// A tenant the provider no longer knows is not one: the state proves
	// only that it knew it when the login started.
	f.idp.exchangeErr = fmt.Errorf("%w \"x\": %w", idp.ErrUnknownTenant, idp.ErrNoSuchIssuer)
	d = f.engine.Check(ctx, get("/login/callback?"+url.Values{"code": {"c"}, "state": {loc.Query().Get("state")}}.Encode(), state))
	if d.Status != http.StatusNotFound || d.Reason != authz.ReasonUnknownHost || d.TenantVerified {
		t.Fatalf("a tenant the provider no longer knows, at the callback: %d %s verified=%v, want 404 unknown_host, unverified", d.Status, d.Reason, d.TenantVerified)
	}
}
