package authz_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/e2e"
	"github.com/extauthz/extauthz/pkg/authz"
	"github.com/extauthz/extauthz/pkg/idp"
	"github.com/extauthz/extauthz/pkg/session"
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
	engine := func(err error) (*authz.Engine, *e2e.SyncBuffer) {
		var buf e2e.SyncBuffer
		log := slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelInfo}))
		return authz.New(session.NewManager(session.NewMemoryStore(nil), keys, session.Options{}), failingProviders{err}, testHosts(t), authz.Options{}, log), &buf
	}
	ctx := context.Background()

	unknown := fmt.Errorf("%w \"x\": %w: https://x.idp.example/.well-known/openid-configuration answered 404 Not Found", idp.ErrUnknownTenant, idp.ErrNoSuchIssuer)
	e, buf := engine(unknown)
	for range 50 {
		if d := e.Check(ctx, get("/orders", "")); d.Allow || d.Status != http.StatusNotFound || d.Reason != authz.ReasonUnknownHost {
			t.Fatalf("an unknown tenant: %d %s, want 404 unknown_host", d.Status, d.Reason)
		}
	}
	if n := strings.Count(buf.String(), "level=WARN"); n != 0 {
		t.Fatalf("%d warnings for an unknown tenant:\n%s", n, buf.String())
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
