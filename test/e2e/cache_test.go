package e2e_test

import (
	"context"
	"net/http"
	"slices"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/extauthz/extauthz/internal/e2e"
)

// logout asks a replica about a browser's GET /logout with the cookie and
// returns the status the browser gets (302 to the IdP's logout).
func logout(t *testing.T, x *e2e.Extauthz, cookie string) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := x.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "GET", Host: "app.localhost:8080", Path: "/logout", Scheme: "http",
			Headers: map[string]string{"cookie": "JSESSIONID=" + cookie},
		}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	return int(resp.GetDeniedResponse().GetStatus().GetCode())
}

// Two real replicas with their session caches on one Redis: a logout on
// one, and the other, which had the session cached, refuses the cookie
// within milliseconds (its staleness bound is a minute: only the
// invalidation can have done it).
func TestLogoutReachesTheOtherReplicasCache(t *testing.T) {
	a := replica(t, "a", hydra, client, "EXTAUTHZ_SESSION_CACHE_STALENESS", "1m")
	b := replica(t, "b", hydra, client, "EXTAUTHZ_SESSION_CACHE_STALENESS", "1m")
	cookies := seedSessions(t, redis.Addr, 100)
	for _, x := range []*e2e.Extauthz{a, b, a, b} {
		onlyStatus(t, "before the logouts", allWork(x, cookies), 200)
	}
	time.Sleep(time.Second) // a's and b's entries are older than any race with the seeding
	var took []time.Duration
	for _, c := range cookies {
		start := time.Now()
		if s := logout(t, b, c); s != http.StatusFound {
			t.Fatalf("logout on b: %d, want 302", s)
		}
		for {
			s := check(a, c)
			if s == http.StatusUnauthorized {
				break
			}
			if s != http.StatusOK {
				t.Fatalf("a answered %d while the logout propagated", s)
			}
			if time.Since(start) > 10*time.Second {
				t.Fatal("a still allows a cookie logged out on b 10s ago")
			}
		}
		took = append(took, time.Since(start))
	}
	slices.Sort(took)
	t.Logf("MEASURE logout on replica b (gRPC check of /logout) until replica a refuses the cookie, over %d logouts: p50 %s, p99 %s, max %s",
		len(took), took[len(took)/2], took[len(took)*99/100], took[len(took)-1])
	if p50 := took[len(took)/2]; p50 > 20*time.Millisecond {
		t.Errorf("logout propagation p50 %s, want within milliseconds", p50)
	}
	onlyStatus(t, "every logged-out cookie on a", allWork(a, cookies), 401)
	onlyStatus(t, "every logged-out cookie on b", allWork(b, cookies), 401)
}
