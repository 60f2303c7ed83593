package envoy_test

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"

	"github.com/extauthz/extauthz/pkg/authz"
	"github.com/extauthz/extauthz/pkg/envoy"
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
			req := httptest.NewRequest(tt.method, "http://app.example.com/authz"+tt.path, nil)
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

func TestNginxSubrequest(t *testing.T) {
	mem := session.NewMemoryStore(nil)
	keys, _ := session.NewKeys([]byte(strings.Repeat("k", 64)))
	m := session.NewManager(mem, keys, session.Options{})
	_, cookie, _ := m.Create(context.Background(), &sessionpb.Session{AccessToken: "tok"})
	h := envoy.NewHTTPHandler(authz.New(m, nil, testHosts(), authz.Options{}, discard()), nil, discard(), "")
	down := envoy.NewHTTPHandler(authz.New(session.NewManager(downStore{mem}, keys, session.Options{}), nil, testHosts(), authz.Options{}, discard()), nil, discard(), "")
	do := func(h http.Handler, method string, headers map[string]string) *http.Response {
		req := httptest.NewRequest("GET", "http://app.example.com/x", nil)
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
}
