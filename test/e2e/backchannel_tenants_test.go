package e2e_test

import (
	"context"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/e2e"
)

// Back-channel logout with one Hydra shared by two tenant hosts
// (TENANT_HOST_PATTERN, EXTAUTHZ_OIDC_ISSUER without {tenant}): frank logs
// in on a's host and on b's within one Hydra session (two replicas), and
// logs out at Hydra. Hydra posts its one logout token to the URI
// registered for the client, on a's host: the sessions on both hosts are
// refused on both replicas. Another browser's session (another Hydra
// session of the same user) on b's host is not.
func TestBackchannelLogoutWithAnIssuerSharedByTenants(t *testing.T) {
	ctx := context.Background()
	appA, appB := "http://a.app.localhost:8080", "http://b.app.localhost:8080"
	envoy := newBackchannelEnvoy(t)
	envoy.host = "a.app.localhost:8080"
	c, err := hydra.CreateClientWith(ctx, e2e.ClientOptions{BackchannelLogoutURI: envoy.srv.URL + "/logout/backchannel"}, appA, appB)
	if err != nil {
		t.Fatal(err)
	}
	var logs e2e.SyncBuffer
	mt := []string{"TENANT_HOST_PATTERN", `^(.*)\.app\.localhost$`}
	x1 := loggedReplica(t, "x1", &logs, c, mt...)
	x2 := loggedReplica(t, "x2", &logs, c, mt...)
	envoy.replicas = []*e2e.Extauthz{x1, x2}

	login := func(b *e2e.Browser, appURL string) string {
		t.Helper()
		resp, hops, err := b.Navigate(ctx, appURL+"/orders")
		if err != nil || resp.Status != 200 || resp.Upstream == nil {
			t.Fatalf("login on %s: %v %v (hops %v)", appURL, resp, err, hops)
		}
		return b.Cookie(appURL, "JSESSIONID")
	}
	br := e2e.NewBrowser("frank@example.com", x1, hydra)
	br.Remember = true
	sa := login(br, appA)
	br.Use(x2)
	sb := login(br, appB) // Hydra remembers the login: the same Hydra session, the same sid
	other := e2e.NewBrowser("frank@example.com", x2, hydra)
	so := login(other, appB)
	if sa == "" || sb == "" || so == "" || sa == sb {
		t.Fatal("want three sessions")
	}
	status := func(x *e2e.Extauthz, appURL, cookie string) int {
		t.Helper()
		probe := e2e.NewBrowser("", x)
		probe.SetCookie(appURL, "JSESSIONID", cookie)
		r, err := probe.Do(ctx, http.MethodGet, appURL+"/api", http.Header{"X-Requested-With": {"XMLHttpRequest"}})
		if err != nil {
			t.Fatal(err)
		}
		return r.Status
	}
	for _, x := range []*e2e.Extauthz{x1, x2} {
		if status(x, appA, sa) != 200 || status(x, appB, sb) != 200 || status(x, appB, so) != 200 {
			t.Fatalf("%s: a fresh session is refused", x.Name)
		}
	}

	// Log out at Hydra, in the first browser.
	_, hops, err := br.NavigateUntil(ctx, hydra.Issuer+"/oauth2/sessions/logout", func(u *url.URL) bool {
		return !strings.HasPrefix(u.String(), hydra.Issuer) && u.Host != e2e.LoginHost
	})
	if err != nil {
		t.Fatalf("Hydra's logout: %v (%v)", err, hops)
	}
	deadline := time.Now().Add(10 * time.Second)
	for status(x1, appA, sa) != 401 {
		if time.Now().After(deadline) {
			tokens, statuses := envoy.seen()
			t.Fatalf("a's session still works 10s after the Hydra logout (%d logout tokens, answers %v)", len(tokens), statuses)
		}
		time.Sleep(50 * time.Millisecond)
	}
	tokens, statuses := envoy.seen()
	if len(tokens) != 1 || len(statuses) != 1 || statuses[0] != 200 {
		t.Fatalf("Hydra sent %d logout tokens, extauthz answered %v; want one, 200", len(tokens), statuses)
	}
	for _, x := range []*e2e.Extauthz{x1, x2} {
		if st := status(x, appB, sb); st != 401 {
			t.Fatalf("%s: the session on b's host of the logged-out Hydra session got %d, want 401", x.Name, st)
		}
		if st := status(x, appA, sa); st != 401 {
			t.Fatalf("%s: the session on a's host got %d, want 401", x.Name, st)
		}
		if st := status(x, appB, so); st != 200 {
			t.Fatalf("%s: the other browser's session got %d after the first browser's logout", x.Name, st)
		}
	}
	l := logs.String()
	if !strings.Contains(l, "msg=\"back-channel logout\" tenant=a") || !strings.Contains(l, "sessions=2") ||
		strings.Count(l, "via=backchannel") != 2 {
		t.Fatalf("want one back-channel logout received by a that ended 2 sessions:\n%s", auditLines(l))
	}
}
