package envoy_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/extauthz/extauthz/pkg/authz"
	"github.com/extauthz/extauthz/pkg/envoy"
	"github.com/extauthz/extauthz/pkg/policy"
	"github.com/extauthz/extauthz/pkg/session"
	"github.com/extauthz/extauthz/proto/sessionpb"
)

// outcome is a decision as the browser and the upstream see it, whatever
// the protocol.
type outcome struct {
	Allow    bool
	Status   int
	Upstream []string // "name: value" set on the upstream request, sorted
	Removed  []string
	Client   []string // "name: value" sent to the client, sorted
	Body     string
}

func fromGRPC(r *authv3.CheckResponse) outcome {
	var o outcome
	if ok := r.GetOkResponse(); r.GetDeniedResponse() == nil {
		o.Allow, o.Status = true, 200
		for _, h := range ok.GetHeaders() {
			o.Upstream = append(o.Upstream, h.GetHeader().GetKey()+": "+h.GetHeader().GetValue())
		}
		o.Removed = ok.GetHeadersToRemove()
		for _, h := range ok.GetResponseHeadersToAdd() {
			o.Client = append(o.Client, h.GetHeader().GetKey()+": "+h.GetHeader().GetValue())
		}
	} else {
		d := r.GetDeniedResponse()
		o.Status, o.Body = int(d.GetStatus().GetCode()), d.GetBody()
		for _, h := range d.GetHeaders() {
			o.Client = append(o.Client, h.GetHeader().GetKey()+": "+h.GetHeader().GetValue())
		}
	}
	slices.Sort(o.Upstream)
	slices.Sort(o.Client)
	return o
}

// fromHTTP reads the HTTP protocol's answer the way Envoy configured with
// allowed_upstream_headers [authorization, cookie] does.
func fromHTTP(resp *http.Response) outcome {
	o := outcome{Allow: resp.StatusCode == 200, Status: resp.StatusCode}
	body, _ := io.ReadAll(resp.Body)
	for k, vs := range resp.Header {
		k = strings.ToLower(k)
		for _, v := range vs {
			switch {
			case k == "date" || k == "content-length" || (o.Allow && k == "content-type"):
			case k == "x-envoy-auth-headers-to-remove":
				o.Removed = strings.Split(v, ",")
			case o.Allow && (k == "authorization" || k == "cookie"):
				o.Upstream = append(o.Upstream, k+": "+v)
			default:
				o.Client = append(o.Client, k+": "+v)
			}
		}
	}
	if !o.Allow {
		o.Body = string(body)
	}
	slices.Sort(o.Upstream)
	slices.Sort(o.Client)
	return o
}

func TestSameDecisionOverGRPCAndHTTP(t *testing.T) {
	mem := session.NewMemoryStore(nil)
	svc, m := newService(t, mem)
	_, cookie, err := m.Create(context.Background(), &sessionpb.Session{
		AccessToken: "access-token-1", AccessTokenExpiry: time.Now().Add(time.Hour).Unix(),
	})
	if err != nil {
		t.Fatal(err)
	}
	down, _ := newService(t, downStore{mem})
	handler := func(store session.Store) http.Handler {
		keys, _ := session.NewKeys([]byte(strings.Repeat("k", 64)))
		eng := authz.New(session.NewManager(store, keys, session.Options{}), nil, testHosts(), authz.Options{}, discard())
		return envoy.NewHTTPHandler(eng, nil, discard(), "/authz")
	}
	up, dn := handler(mem), handler(downStore{mem})
	tests := []struct {
		name    string
		method  string
		path    string
		headers map[string]string
		isDown  bool
	}{
		{"session, other cookies kept", "GET", "/app?x=1", map[string]string{"cookie": "a=1; JSESSIONID=" + cookie + "; b=2"}, false},
		{"session only cookie", "POST", "/api", map[string]string{"cookie": "JSESSIONID=" + cookie}, false},
		{"no session, AJAX", "GET", "/api", map[string]string{"x-requested-with": "XMLHttpRequest"}, false},
		{"no session, navigation without IdP", "GET", "/", nil, false},
		{"forged cookie", "DELETE", "/api/1", map[string]string{"cookie": "JSESSIONID=forged"}, false},
		{"logout", "GET", "/logout", map[string]string{"cookie": "JSESSIONID=" + cookie + "x"}, false},
		{"store down", "GET", "/app", map[string]string{"cookie": "JSESSIONID=" + cookie}, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g, h := svc, up
			if tt.isDown {
				g, h = down, dn
			}
			resp, err := g.Check(context.Background(), checkRequest(tt.method, tt.path, tt.headers))
			if err != nil {
				t.Fatal(err)
			}
			viaGRPC := fromGRPC(resp)
			req := originForm(httptest.NewRequest(tt.method, "http://app.example.com/authz"+tt.path, nil))
			req.Header.Set("X-Forwarded-Proto", "https")
			for k, v := range tt.headers {
				req.Header.Set(k, v)
			}
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, req)
			viaHTTP := fromHTTP(rec.Result())
			if fmt.Sprintf("%+v", viaGRPC) != fmt.Sprintf("%+v", viaHTTP) {
				t.Fatalf("different decisions:\n grpc %+v\n http %+v", viaGRPC, viaHTTP)
			}
		})
	}
}

// recorder is an engine that remembers the request it was asked about and
// answers with d.
type recorder struct {
	d   authz.Decision
	got *authz.Request
}

func (e *recorder) Check(_ context.Context, r *authz.Request) *authz.Decision {
	e.got = r
	d := e.d
	return &d
}

var allowWithToken = authz.Decision{
	Allow: true, Status: 200,
	Upstream: []authz.Header{{Name: "authorization", Value: "Bearer tok"}, {Name: "cookie", Value: "a=1"}},
	Remove:   []string{"cookie"},
	Response: []authz.Header{{Name: "set-cookie", Value: "JSESSIONID=x; Path=/"}},
}

// upstreamOnly are the response headers of an allow meant for the upstream
// request, never for the browser.
var upstreamOnly = []string{"Authorization", "Cookie", "X-Envoy-Auth-Headers-To-Remove"}

// csrfEngine has a session ("tok") and xs-app.json's default CSRF
// protection on every route.
func csrfEngine(t *testing.T) (envoy.Engine, string) {
	t.Helper()
	pol, err := policy.Parse([]byte(`{"routes":[{"source":"^/","authenticationType":"xsuaa"}]}`), "app")
	if err != nil {
		t.Fatal(err)
	}
	keys, _ := session.NewKeys([]byte(strings.Repeat("k", 64)))
	m := session.NewManager(session.NewMemoryStore(nil), keys, session.Options{})
	_, cookie, err := m.Create(context.Background(), &sessionpb.Session{AccessToken: "tok", AccessTokenExpiry: time.Now().Add(time.Hour).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	return authz.New(m, nil, testHosts(), authz.Options{Policy: pol}, discard()), cookie
}

// TestHTTPIgnoresNginxMarker: on Envoy's HTTP protocol the nginx headers are
// just headers; a client sending them changes nothing.
func TestHTTPIgnoresNginxMarker(t *testing.T) {
	rec := &recorder{d: authz.Decision{Status: 403}}
	h := envoy.NewHTTPHandler(rec, nil, discard(), "")
	for _, marker := range []string{"nginx", "NGINX", "1"} {
		req := originForm(httptest.NewRequest("POST", "http://app.example.com/api/orders", nil))
		req.Header.Set("X-Extauthz-Subrequest", marker)
		req.Header.Set("X-Original-Method", "GET")
		h.ServeHTTP(httptest.NewRecorder(), req)
		if rec.got.Method != "POST" {
			t.Fatalf("marker %q: the engine decided on %s, want the request's POST", marker, rec.got.Method)
		}
	}
	// A denial other than 403 keeps its status (no nginx 401 mapping).
	rec.d = authz.Decision{Status: 503, Body: "down"}
	req := originForm(httptest.NewRequest("GET", "http://app.example.com/", nil))
	req.Header.Set("X-Extauthz-Subrequest", "nginx")
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code != 503 || w.Body.String() != "down" {
		t.Fatalf("marked request on the Envoy protocol: %d %q, want the decision's 503", w.Code, w.Body)
	}

	// With the real engine: a CSRF-protected POST stays refused.
	eng, cookie := csrfEngine(t)
	h = envoy.NewHTTPHandler(eng, nil, discard(), "")
	req = originForm(httptest.NewRequest("POST", "http://app.example.com/api/orders", nil))
	req.Header.Set("Cookie", "JSESSIONID="+cookie)
	req.Header.Set("X-Extauthz-Subrequest", "nginx")
	req.Header.Set("X-Original-Method", "GET")
	w = httptest.NewRecorder()
	h.ServeHTTP(w, req)
	if w.Code != 403 || w.Header().Get("Authorization") != "" {
		t.Fatalf("POST without CSRF token but with the nginx marker: %d %v, want 403 without a token", w.Code, w.Header())
	}
}

func TestNginxSubrequest(t *testing.T) {
	mem := session.NewMemoryStore(nil)
	keys, _ := session.NewKeys([]byte(strings.Repeat("k", 64)))
	m := session.NewManager(mem, keys, session.Options{})
	_, cookie, _ := m.Create(context.Background(), &sessionpb.Session{AccessToken: "tok"})
	h := envoy.NewNginxHandler(authz.New(m, nil, testHosts(), authz.Options{}, discard()), nil, discard())
	down := envoy.NewNginxHandler(authz.New(session.NewManager(downStore{mem}, keys, session.Options{}), nil, testHosts(), authz.Options{}, discard()), nil, discard())
	do := func(h http.Handler, method string, headers map[string]string) *http.Response {
		req := originForm(httptest.NewRequest("GET", "http://app.example.com/x", nil))
		req.Header.Set("X-Extauthz-Subrequest", "nginx")
		req.Header.Set("X-Original-Method", method)
		for k, v := range headers {
			req.Header.Set(k, v)
		}
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Result()
	}
	if r := do(h, "POST", map[string]string{"Cookie": "JSESSIONID=" + cookie}); r.StatusCode != 200 || r.Header.Get("Authorization") != "Bearer tok" {
		t.Fatalf("allowed subrequest: %d %v", r.StatusCode, r.Header)
	}
	if r := do(down, "GET", map[string]string{"Cookie": "JSESSIONID=" + cookie}); r.StatusCode != 401 {
		t.Fatalf("store down in a subrequest: %d, want 401 (nginx then asks directly)", r.StatusCode)
	}
	if r := do(h, "POST", nil); r.StatusCode != 401 {
		t.Fatalf("POST without session: %d", r.StatusCode)
	}
	// The subrequest decides on the original method: a CSRF-protected POST
	// is refused (403, which nginx returns as it is).
	eng, cookie2 := csrfEngine(t)
	if r := do(envoy.NewNginxHandler(eng, nil, discard()), "POST", map[string]string{"Cookie": "JSESSIONID=" + cookie2}); r.StatusCode != 403 {
		t.Fatalf("subrequest for a POST without CSRF token: %d, want 403", r.StatusCode)
	}
	// A marked subrequest without the original method is a broken nginx
	// configuration: refused, not decided as the subrequest's GET.
	rec := &recorder{d: allowWithToken}
	req := originForm(httptest.NewRequest("GET", "http://app.example.com/x", nil))
	req.Header.Set("X-Extauthz-Subrequest", "nginx")
	w := httptest.NewRecorder()
	envoy.NewNginxHandler(rec, nil, discard()).ServeHTTP(w, req)
	if w.Code != 500 || rec.got != nil || w.Header().Get("Authorization") != "" {
		t.Fatalf("subrequest without X-Original-Method: %d %v", w.Code, w.Header())
	}
}

// TestNginxUnmarked: on the nginx listener, a request without the marker
// (error_page's fallback, the callback, logout) is answered for the
// browser: its own method, the decision in full, and never the headers
// meant for the upstream, even when the engine allows.
func TestNginxUnmarked(t *testing.T) {
	rec := &recorder{d: allowWithToken}
	h := envoy.NewNginxHandler(rec, nil, discard())
	for _, tt := range []struct{ target, location string }{
		{"/orders?id=1", "/orders?id=1"},
		{"//evil.example/x", "/evil.example/x"},
		{"/%2F/evil.example", "/%2F/evil.example"},
	} {
		for _, method := range []string{"GET", "POST", "DELETE"} {
			req := originForm(httptest.NewRequest(method, "http://app.example.com"+tt.target, nil))
			req.Header.Set("X-Original-Method", "GET")           // a client's, ignored
			req.Header.Set("X-Extauthz-Subrequest", "nginx-ish") // not the marker
			w := httptest.NewRecorder()
			h.ServeHTTP(w, req)
			if rec.got.Method != method {
				t.Fatalf("%s %s: the engine decided on %s", method, tt.target, rec.got.Method)
			}
			for _, k := range upstreamOnly {
				if v := w.Header().Get(k); v != "" {
					t.Fatalf("%s %s: the browser would get %s: %s", method, tt.target, k, v)
				}
			}
			if w.Code != http.StatusTemporaryRedirect || w.Header().Get("Location") != tt.location ||
				w.Header().Get("Set-Cookie") != "JSESSIONID=x; Path=/" || w.Body.Len() != 0 {
				t.Fatalf("%s %s allowed: %d %v %q, want 307 to %s with the browser's headers only", method, tt.target, w.Code, w.Header(), w.Body, tt.location)
			}
		}
	}
	// Denials are the full answer, as on Envoy's protocol.
	rec.d = authz.Decision{Status: 302, Response: []authz.Header{{Name: "location", Value: "https://idp.example/auth"}}}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, originForm(httptest.NewRequest("GET", "http://app.example.com/", nil)))
	if w.Code != 302 || w.Header().Get("Location") != "https://idp.example/auth" {
		t.Fatalf("denied fallback: %d %v", w.Code, w.Header())
	}
}

// originForm makes a test request look as a server reads Envoy's or nginx's
// check: an origin-form target ("/path?query"), the host in Host.
func originForm(r *http.Request) *http.Request {
	r.RequestURI = r.URL.RequestURI()
	return r
}

// The HTTP protocols decide on the request target as sent: an encoded slash
// that net/http would re-escape into a real one (when the raw path holds a
// byte it does not keep raw) is still seen, and refused; on the nginx
// listener, whose app gets the raw target, anything not already canonical is
// refused too.
func TestHTTPDecidesOnTheRawTarget(t *testing.T) {
	mem := session.NewMemoryStore(nil)
	keys, _ := session.NewKeys([]byte(strings.Repeat("k", 64)))
	pol, err := policy.Parse([]byte(`{"routes":[{"source":"^/public/","authenticationType":"none"},{"source":"^/"}]}`), "")
	if err != nil {
		t.Fatal(err)
	}
	eng := authz.New(session.NewManager(mem, keys, session.Options{}), nil, testHosts(), authz.Options{Policy: pol}, discard())
	for name, h := range map[string]http.Handler{
		"envoy": envoy.NewHTTPHandler(eng, nil, discard(), ""),
		"nginx": envoy.NewNginxHandler(eng, nil, discard()),
	} {
		srv := httptest.NewServer(h)
		raw := func(target string) string {
			c, err := net.Dial("tcp", srv.Listener.Addr().String())
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			fmt.Fprintf(c, "GET %s HTTP/1.1\r\nHost: app.example.com\r\nConnection: close\r\n\r\n", target)
			resp, err := http.ReadResponse(bufio.NewReader(c), nil)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			return resp.Status
		}
		for _, target := range []string{
			"/admin/foo%2F..%2F..%2Fpublic/y|", "/admin/foo%2F..%2F..%2Fpublic/y%22", "/x%2F..%2Fpublic/y{", "http://app.example.com/public/x",
		} {
			if got := raw(target); !strings.HasPrefix(got, "400") {
				t.Errorf("%s %q: %s, want 400", name, target, got)
			}
		}
		if got := raw("/public/x|"); strings.HasPrefix(got, "400") {
			t.Errorf("%s: a plain public path: %s", name, got) // nginx: 307 (an unmarked allow), Envoy: 200
		}
		for _, target := range []string{"/admin/../public/x", "/admin/%2e%2e/public/x", "//public/x", "/%70ublic/x", "/public/./x", "/public;x/y"} {
			got := raw(target)
			if name == "nginx" && !strings.HasPrefix(got, "400") {
				t.Errorf("nginx %q: %s, want 400 (the app gets it as sent)", target, got)
			}
			if name == "envoy" && !strings.HasPrefix(got, "200") {
				t.Errorf("envoy %q: %s, want 200 (resolved to /public/…; Envoy normalises for the app)", target, got)
			}
		}
		srv.Close()
	}
}

func TestHTTPHandsTheBodyToTheEngine(t *testing.T) {
	for _, nginx := range []bool{false, true} {
		rec := &recorder{d: authz.Decision{Status: 200, Response: []authz.Header{{Name: "cache-control", Value: "no-store"}}}}
		h := envoy.NewHTTPHandler(rec, nil, slog.New(slog.DiscardHandler), "")
		if nginx {
			h = envoy.NewNginxHandler(rec, nil, slog.New(slog.DiscardHandler))
		}
		body := "logout_token=a.b.c"
		req := httptest.NewRequest("POST", "http://app.example.com/logout/backchannel", strings.NewReader(body))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if string(rec.got.Body) != body || w.Code != 200 || w.Header().Get("cache-control") != "no-store" {
			t.Fatalf("nginx %v: body %q, answer %d %v", nginx, rec.got.Body, w.Code, w.Header())
		}
		big := httptest.NewRequest("POST", "http://app.example.com/logout/backchannel", strings.NewReader(strings.Repeat("x", authz.MaxBodyBytes+1)))
		h.ServeHTTP(httptest.NewRecorder(), big)
		if rec.got.Body != nil {
			t.Fatalf("a body over the limit was handed over (%d bytes)", len(rec.got.Body))
		}
	}
}
