package e2e_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/extauthz/extauthz/internal/e2e"
)

// loggedReplica is replica, its log also collected in buf.
func loggedReplica(t *testing.T, name string, buf *e2e.SyncBuffer, c e2e.Client, extra ...string) *e2e.Extauthz {
	t.Helper()
	start := func(name, bin string, env map[string]string, w io.Writer) (*e2e.Extauthz, error) {
		return e2e.StartExtauthz(name, bin, env, io.MultiWriter(w, buf))
	}
	return startReplica(t, name, start, hydra, c, extra...)
}

// backchannelEnvoy plays Envoy in front of the app for the back-channel
// logout route, with with_request_body: Hydra's POST becomes a CheckRequest
// carrying the body, sent to the replicas in turn, and extauthz's denied
// response (200, or 400 with an error) is what Hydra gets. It keeps the
// logout tokens it saw.
type backchannelEnvoy struct {
	srv      *httptest.Server
	host     string // the Host of the POST: "" is app.localhost:8080
	mu       sync.Mutex
	replicas []*e2e.Extauthz
	tokens   []string
	statuses []int
	n        atomic.Int32
}

func newBackchannelEnvoy(t *testing.T) *backchannelEnvoy {
	e := &backchannelEnvoy{}
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		body, _ := io.ReadAll(r.Body)
		status, hdr, out := e.post(t, r.Method, string(body))
		for k, v := range hdr {
			w.Header()[k] = v
		}
		w.WriteHeader(status)
		w.Write([]byte(out))
	}))
	t.Cleanup(e.srv.Close)
	return e
}

// post sends a back-channel logout request to the next replica.
func (e *backchannelEnvoy) post(t *testing.T, method, body string) (int, http.Header, string) {
	e.mu.Lock()
	x := e.replicas[int(e.n.Add(1))%len(e.replicas)]
	host := e.host
	if host == "" {
		host = "app.localhost:8080"
	}
	if q, err := url.ParseQuery(body); err == nil && q.Get("logout_token") != "" {
		e.tokens = append(e.tokens, q.Get("logout_token"))
	}
	e.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	resp, err := x.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: method, Host: host, Path: "/logout/backchannel", Scheme: "http", Body: body,
			Headers: map[string]string{"content-type": "application/x-www-form-urlencoded", "x-request-id": "bcl-req"},
		}},
	}})
	if err != nil {
		t.Errorf("back-channel check: %v", err)
		return http.StatusForbidden, nil, ""
	}
	d := resp.GetDeniedResponse()
	if d == nil {
		t.Errorf("the back-channel logout was allowed upstream: %v", resp)
		return http.StatusForbidden, nil, ""
	}
	h := http.Header{}
	for _, hv := range d.GetHeaders() {
		h.Add(hv.GetHeader().GetKey(), hv.GetHeader().GetValue())
	}
	status := int(d.GetStatus().GetCode())
	e.mu.Lock()
	e.statuses = append(e.statuses, status)
	e.mu.Unlock()
	return status, h, d.GetBody()
}

func (e *backchannelEnvoy) seen() ([]string, []int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]string(nil), e.tokens...), append([]int(nil), e.statuses...)
}

// Back-channel logout with the real Hydra: alice logs in twice in one
// browser (one Hydra session, two extauthz sessions, on two replicas) and
// once in another; she logs out at Hydra in the first browser. Hydra POSTs
// a logout token, which extauthz verifies: both sessions of that Hydra
// session are refused on both replicas, the other browser's is not. A
// replayed token and a forged one are refused and end nothing.
func TestBackchannelLogoutWithHydra(t *testing.T) {
	envoy := newBackchannelEnvoy(t)
	c, err := hydra.CreateClientWith(context.Background(), e2e.ClientOptions{BackchannelLogoutURI: envoy.srv.URL + "/logout/backchannel"}, app)
	if err != nil {
		t.Fatal(err)
	}
	var logA, logB e2e.SyncBuffer
	a := loggedReplica(t, "a", &logA, c)
	b := loggedReplica(t, "b", &logB, c)
	envoy.replicas = []*e2e.Extauthz{a, b}

	br1 := e2e.NewBrowser("erin@example.com", a, hydra)
	br1.Remember = true
	loginAt(t, br1, "/")
	s1 := br1.Cookie(app, "JSESSIONID")
	br1.DeleteCookies(app, "JSESSIONID") // a second login in the same browser: Hydra remembers it
	br1.Use(b)
	loginAt(t, br1, "/")
	s2 := br1.Cookie(app, "JSESSIONID")
	br2 := e2e.NewBrowser("erin@example.com", b, hydra)
	loginAt(t, br2, "/")
	s3 := br2.Cookie(app, "JSESSIONID")
	if s1 == s2 || s1 == "" || s2 == "" || s3 == "" {
		t.Fatal("want three sessions")
	}
	status := func(x *e2e.Extauthz, cookie string) int {
		t.Helper()
		probe := e2e.NewBrowser("", x)
		probe.SetCookie(app, "JSESSIONID", cookie)
		return ajax(t, probe, "/api").Status
	}
	for _, x := range []*e2e.Extauthz{a, b} {
		for _, s := range []string{s1, s2, s3} {
			if st := status(x, s); st != 200 {
				t.Fatalf("%s: a fresh session got %d", x.Name, st)
			}
		}
	}

	// Log out at Hydra (its logout flow, started by Hydra itself: no RP
	// involved), in the first browser.
	_, hops, err := br1.NavigateUntil(context.Background(), hydra.Issuer+"/oauth2/sessions/logout", func(u *url.URL) bool {
		return !strings.HasPrefix(u.String(), hydra.Issuer) && u.Host != e2e.LoginHost
	})
	if err != nil {
		t.Fatalf("Hydra's logout: %v (%v)", err, hops)
	}
	deadline := time.Now().Add(10 * time.Second)
	for status(a, s1) != 401 || status(b, s2) != 401 {
		if time.Now().After(deadline) {
			tokens, statuses := envoy.seen()
			t.Fatalf("the sessions of the Hydra session still work 10s after its logout (%d logout tokens, answers %v)", len(tokens), statuses)
		}
		time.Sleep(50 * time.Millisecond)
	}
	for _, x := range []*e2e.Extauthz{a, b} {
		if status(x, s1) != 401 || status(x, s2) != 401 {
			t.Fatalf("%s: a session of the logged-out Hydra session still works", x.Name)
		}
		if st := status(x, s3); st != 200 {
			t.Fatalf("%s: the other browser's session got %d after the first browser's logout", x.Name, st)
		}
	}
	tokens, statuses := envoy.seen()
	if len(tokens) != 1 || len(statuses) != 1 || statuses[0] != 200 {
		t.Fatalf("Hydra sent %d logout tokens, extauthz answered %v; want one, 200", len(tokens), statuses)
	}

	// A replay of Hydra's token: 400, and the live session stays.
	st, hdr, body := envoy.post(t, "POST", url.Values{"logout_token": {tokens[0]}}.Encode())
	if st != 400 || hdr.Get("cache-control") != "no-store" || !strings.Contains(body, "replayed") {
		t.Fatalf("replayed logout token: %d %v %s", st, hdr, body)
	}
	// A forged one (the token with its signature cut), and one without a token.
	parts := strings.Split(tokens[0], ".")
	for _, forged := range []string{parts[0] + "." + parts[1] + ".", parts[0] + "." + parts[1] + "." + strings.Repeat("A", len(parts[2])), "garbage"} {
		if st, _, body := envoy.post(t, "POST", url.Values{"logout_token": {forged}}.Encode()); st != 400 {
			t.Fatalf("forged logout token: %d %s", st, body)
		}
	}
	if st, _, _ := envoy.post(t, "POST", ""); st != 400 {
		t.Fatalf("no logout token: %d", st)
	}
	if st, _, _ := envoy.post(t, "GET", ""); st != 405 {
		t.Fatalf("GET: %d", st)
	}
	for _, x := range []*e2e.Extauthz{a, b} {
		if st := status(x, s3); st != 200 {
			t.Fatalf("%s: a refused logout token ended a session (%d)", x.Name, st)
		}
	}

	// The audit trail: two back-channel logouts, the refusals, no secret.
	logs := logA.String() + logB.String()
	if n := strings.Count(logs, "audit=true event=logout") - strings.Count(logs, "via=user"); n != 2 || strings.Count(logs, "via=backchannel") != 2 {
		t.Fatalf("audit: %d logout lines, want 2 back-channel ones:\n%s", n, auditLines(logs))
	}
	if n := strings.Count(logs, "event=backchannel_logout_refused"); n != 5 { // the replay, 3 forged, no token (a GET is not audited)
		t.Fatalf("audit: %d refusals, want 5:\n%s", n, auditLines(logs))
	}
	if n := strings.Count(logs, "audit=true event=login "); n != 3 {
		t.Fatalf("audit: %d logins, want 3:\n%s", n, auditLines(logs))
	}
	for _, secret := range []string{s1, s2, s3, parts[2], c.Secret, "ory_at_", "eyJ"} {
		if strings.Contains(logs, secret) {
			t.Fatalf("a log line holds %q", secret)
		}
	}
}

func auditLines(logs string) string {
	var out []string
	for _, l := range strings.Split(logs, "\n") {
		if strings.Contains(l, "audit=true") {
			out = append(out, l)
		}
	}
	return strings.Join(out, "\n")
}

const adminToken = "e2e-admin-token-0123456789-0123456789"

// The admin API on two replicas: without a token or with a wrong one 401;
// with it, a user's sessions are listed (no token, no cookie) and ended on
// every replica.
func TestAdminAPIEndsAUsersSessions(t *testing.T) {
	var logA, logB e2e.SyncBuffer
	a := loggedReplica(t, "a", &logA, client, "EXTAUTHZ_ADMIN_TOKEN", adminToken)
	b := loggedReplica(t, "b", &logB, client, "EXTAUTHZ_ADMIN_TOKEN_FILE", writeTemp(t, adminToken+"\n"))
	noAPI := replica(t, "c", hydra, client)
	var cookies []string
	for i, x := range []*e2e.Extauthz{a, b, a} {
		br := e2e.NewBrowser("frank@example.com", x, hydra)
		loginAt(t, br, "/")
		cookies = append(cookies, br.Cookie(app, "JSESSIONID"))
		_ = i
	}
	other := e2e.NewBrowser("grace@example.com", b, hydra)
	loginAt(t, other, "/")
	call := func(x *e2e.Extauthz, method, query, auth string) (int, string) {
		t.Helper()
		req, _ := http.NewRequest(method, "http://"+x.AdminAddr+"/admin/sessions?"+query, nil)
		if auth != "" {
			req.Header.Set("authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	for _, auth := range []string{"", "Bearer wrong-token", "Bearer " + adminToken[:len(adminToken)-1]} {
		for _, m := range []string{"GET", "DELETE"} {
			if st, _ := call(a, m, "subject=frank@example.com", auth); st != 401 {
				t.Fatalf("%s with %q: %d, want 401", m, auth, st)
			}
		}
	}
	if st, _ := call(noAPI, "GET", "subject=frank@example.com", "Bearer "+adminToken); st != 404 {
		t.Fatalf("without EXTAUTHZ_ADMIN_TOKEN the API answered %d, want 404 (off)", st)
	}
	st, body := call(b, "GET", "subject=frank@example.com", "Bearer "+adminToken)
	var list struct {
		Sessions []struct {
			Fingerprint string    `json:"fingerprint"`
			Created     time.Time `json:"created"`
			LastUsed    time.Time `json:"last_used"`
		} `json:"sessions"`
	}
	if err := json.Unmarshal([]byte(body), &list); st != 200 || err != nil || len(list.Sessions) != 3 {
		t.Fatalf("GET: %d %s", st, body)
	}
	for _, c := range cookies {
		if strings.Contains(body, c) || strings.Contains(body, c[:20]) {
			t.Fatal("the listing holds a cookie")
		}
	}
	// One by fingerprint, then the rest.
	if st, body := call(a, "DELETE", "subject=frank@example.com&session="+list.Sessions[0].Fingerprint, "Bearer "+adminToken); st != 200 || body != "{\"revoked\":1}\n" {
		t.Fatalf("DELETE one: %d %s", st, body)
	}
	if st, body := call(a, "DELETE", "subject=frank@example.com", "Bearer "+adminToken); st != 200 || body != "{\"revoked\":2}\n" {
		t.Fatalf("DELETE all: %d %s", st, body)
	}
	for _, x := range []*e2e.Extauthz{a, b} {
		for _, c := range cookies {
			probe := e2e.NewBrowser("", x)
			probe.SetCookie(app, "JSESSIONID", c)
			if st := ajax(t, probe, "/api").Status; st != 401 {
				t.Fatalf("%s: a revoked session got %d", x.Name, st)
			}
		}
		other.Use(x)
		if st := ajax(t, other, "/api").Status; st != 200 {
			t.Fatalf("%s: another user's session got %d after the revocation", x.Name, st)
		}
	}
	logs := logA.String() + logB.String()
	if n := strings.Count(logs, "via=admin"); n != 3 {
		t.Fatalf("audit: %d admin logouts, want 3:\n%s", n, auditLines(logs))
	}
	if n := strings.Count(logs, "event=admin_unauthorized"); n != 6 {
		t.Fatalf("audit: %d unauthorized admin calls, want 6:\n%s", n, auditLines(logs))
	}
	if strings.Contains(logs, adminToken) {
		t.Fatal("the admin token is in a log")
	}
}

func writeTemp(t *testing.T, content string) string {
	t.Helper()
	f, err := os.CreateTemp(t.TempDir(), "token")
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString(content)
	f.Close()
	return f.Name()
}
