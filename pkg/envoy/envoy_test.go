package envoy_test

import (
	"bytes"
	"context"
	"encoding/json"
	"flag"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/encoding/protojson"

	"github.com/extauthz/extauthz/pkg/authz"
	"github.com/extauthz/extauthz/pkg/envoy"
	"github.com/extauthz/extauthz/pkg/session"
	"github.com/extauthz/extauthz/pkg/tenant"
	"github.com/extauthz/extauthz/proto/sessionpb"
)

var update = flag.Bool("update", false, "rewrite the golden files")

type downStore struct{ session.Store }

func (downStore) Get(context.Context, string, time.Duration) ([]byte, error) {
	return nil, context.DeadlineExceeded
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

// testHosts serves app.example.com and loopback names.
func testHosts() *tenant.Resolver {
	r, err := tenant.New(tenant.Options{AllowedHosts: []string{"app.example.com"}})
	if err != nil {
		panic(err)
	}
	return r
}

func newService(t *testing.T, store session.Store) (*envoy.Service, *session.Manager) {
	keys, err := session.NewKeys([]byte(strings.Repeat("k", 64)))
	if err != nil {
		t.Fatal(err)
	}
	m := session.NewManager(store, keys, session.Options{})
	log := slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
	return envoy.NewService(authz.New(m, nil, testHosts(), authz.Options{}, log), nil, log), m
}

func checkRequest(method, path string, headers map[string]string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{
			Method: method, Host: "app.example.com", Path: path, Scheme: "https", Protocol: "HTTP/1.1", Headers: headers,
		},
	}}}
}

// TestCheckGolden compares whole CheckResponses with files in testdata
// (go test ./pkg/envoy -update rewrites them).
func TestCheckGolden(t *testing.T) {
	mem := session.NewMemoryStore(nil)
	svc, m := newService(t, mem)
	_, cookie, err := m.Create(context.Background(), &sessionpb.Session{
		AccessToken: "eyJhbGciOiJSUzI1NiJ9.access.token", AccessTokenExpiry: time.Now().Add(time.Hour).Unix(),
	})
	if err != nil {
		t.Fatal(err)
	}
	down, _ := newService(t, downStore{mem})
	raw := checkRequest("GET", "/app", nil)
	raw.Attributes.Request.Http.HeaderMap = &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
		{Key: "cookie", RawValue: []byte("JSESSIONID=" + cookie)}, {Key: "cookie", RawValue: []byte("lang=de")},
	}}
	tests := []struct {
		name string
		svc  *envoy.Service
		req  *authv3.CheckRequest
	}{
		{"allow_keeps_other_cookies", svc, checkRequest("GET", "/app", map[string]string{"cookie": "a=1; JSESSIONID=" + cookie + "; b=2", "authorization": "Basic forged"})},
		{"allow_removes_cookie_header", svc, checkRequest("POST", "/api/orders", map[string]string{"cookie": "JSESSIONID=" + cookie})},
		{"allow_raw_header_map", svc, raw},
		{"deny_ajax_401", svc, checkRequest("GET", "/api", map[string]string{"x-requested-with": "XMLHttpRequest"})},
		{"deny_post_401", svc, checkRequest("POST", "/api", map[string]string{"cookie": "JSESSIONID=forged"})},
		{"deny_store_down_503", down, checkRequest("GET", "/app", map[string]string{"cookie": "JSESSIONID=" + cookie})},
		{"logout_without_session", svc, checkRequest("GET", "/logout", nil)},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := tt.svc.Check(context.Background(), tt.req)
			if err != nil {
				t.Fatal(err)
			}
			b, _ := protojson.Marshal(resp)
			var out bytes.Buffer
			json.Indent(&out, b, "", "  ") // protojson's spacing is unstable on purpose
			out.WriteByte('\n')
			file := filepath.Join("testdata", tt.name+".json")
			if *update {
				os.WriteFile(file, out.Bytes(), 0o644)
			}
			want, err := os.ReadFile(file)
			if err != nil {
				t.Fatalf("%v (run with -update to create it)", err)
			}
			if !bytes.Equal(out.Bytes(), want) {
				t.Fatalf("response differs from %s:\n%s", file, out.String())
			}
		})
	}
}
