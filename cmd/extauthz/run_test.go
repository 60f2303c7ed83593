package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	reflectionpb "google.golang.org/grpc/reflection/grpc_reflection_v1"

	"github.com/extauthz/extauthz/internal/e2e"
	"github.com/extauthz/extauthz/internal/redistest"
)

func freeAddr(t *testing.T) string {
	t.Helper()
	p, err := redistest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", p)
}

func mapEnv(m map[string]string) func(string) string { return func(k string) string { return m[k] } }

// TestRunServesOverRealConnections starts the whole program in-process on a
// real Redis, configured as approuter's documentation shows, and talks to it
// as Envoy and a monitoring system would.
func TestRunServesOverRealConnections(t *testing.T) {
	redis := redistest.Run(t)
	grpcAddr, httpAddr, adminAddr, nginxAddr := freeAddr(t), freeAddr(t), freeAddr(t), freeAddr(t)
	env := map[string]string{
		"EXT_SESSION_MGT": `{"instanceName":"my-redis","storageType":"redis","sessionSecret":"` + strings.Repeat("x-0123456789abcd", 4) + `"}`,
		"VCAP_SERVICES": fmt.Sprintf(`{"redis-cache":[{"name":"my-redis","label":"redis-cache","tags":["cache"],
			"credentials":{"hostname":"127.0.0.1","port":%d,"password":"","tls":false,"cluster_mode":false}}]}`, redis.Port),
		"EXTAUTHZ_GRPC_ADDR": grpcAddr, "EXTAUTHZ_HTTP_ADDR": httpAddr, "EXTAUTHZ_ADMIN_ADDR": adminAddr, "EXTAUTHZ_LOG_LEVEL": "debug",
		"EXTAUTHZ_NGINX_ADDR": nginxAddr, "EXTAUTHZ_ALLOWED_HOSTS": "app.example.com", "EXTAUTHZ_DRAIN_DELAY": "2s",
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	logs := &e2e.SyncBuffer{}
	done := make(chan error, 1)
	go func() { done <- run(ctx, nil, mapEnv(env), logs) }()

	conn, err := grpc.NewClient(grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()

	// Health: SERVING once the store answered.
	hc := healthpb.NewHealthClient(conn)
	deadline := time.Now().Add(10 * time.Second)
	for {
		resp, err := hc.Check(ctx, &healthpb.HealthCheckRequest{Service: "envoy.service.auth.v3.Authorization"})
		if err == nil && resp.Status == healthpb.HealthCheckResponse_SERVING {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("health never SERVING: %v %v\nlogs:\n%s", resp, err, logs)
		}
		time.Sleep(50 * time.Millisecond)
	}

	// Reflection lists the Authorization service (grpcurl works).
	stream, err := reflectionpb.NewServerReflectionClient(conn).ServerReflectionInfo(ctx)
	if err != nil {
		t.Fatal(err)
	}
	stream.Send(&reflectionpb.ServerReflectionRequest{MessageRequest: &reflectionpb.ServerReflectionRequest_ListServices{}})
	rr, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	var services []string
	for _, s := range rr.GetListServicesResponse().GetService() {
		services = append(services, s.GetName())
	}
	if !strings.Contains(strings.Join(services, " "), "envoy.service.auth.v3.Authorization") {
		t.Fatalf("reflection lists %v", services)
	}

	// A Check from "Envoy": an AJAX request without a session gets 401.
	resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "GET", Host: "app.example.com", Path: "/api?code=should-not-be-logged", Scheme: "https",
			Headers: map[string]string{"x-requested-with": "XMLHttpRequest", "cookie": "JSESSIONID=garbage-cookie-value"},
		}},
	}})
	if err != nil {
		t.Fatal(err)
	}
	if got := resp.GetDeniedResponse().GetStatus().GetCode(); got != 401 {
		t.Fatalf("Check: status %v, want 401", got)
	}

	// The HTTP protocol: the same request, the same answer.
	hreq, _ := http.NewRequest("GET", "http://"+httpAddr+"/api?code=should-not-be-logged", nil)
	hreq.Host = "app.example.com"
	hreq.Header.Set("X-Requested-With", "XMLHttpRequest")
	hreq.Header.Set("Cookie", "JSESSIONID=garbage-cookie-value")
	hresp, err := http.DefaultClient.Do(hreq)
	if err != nil {
		t.Fatal(err)
	}
	hresp.Body.Close()
	if hresp.StatusCode != 401 {
		t.Fatalf("HTTP check: status %d, want 401", hresp.StatusCode)
	}

	// Admin endpoints.
	for path, want := range map[string]string{"/healthz": "ok", "/readyz": "ready", "/metrics": `extauthz_checks_total{decision="deny",reason="invalid_session",status="401",tenant=""} 2`} {
		r, err := http.Get("http://" + adminAddr + path)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(r.Body)
		r.Body.Close()
		if r.StatusCode != 200 || !strings.Contains(string(body), want) {
			t.Errorf("GET %s: %d, body lacks %q:\n%.2000s", path, r.StatusCode, want, body)
		}
	}

	// nginx's listener: its subrequest gets 401 for the denial.
	nreq, _ := http.NewRequest("GET", "http://"+nginxAddr+"/api", nil)
	nreq.Host = "app.example.com"
	nreq.Header.Set("X-Extauthz-Subrequest", "nginx")
	nreq.Header.Set("X-Original-Method", "POST")
	nresp, err := http.DefaultClient.Do(nreq)
	if err != nil {
		t.Fatal(err)
	}
	nresp.Body.Close()
	if nresp.StatusCode != 401 {
		t.Fatalf("nginx subrequest: status %d, want 401", nresp.StatusCode)
	}

	// SIGTERM (ctx cancel): not ready at once, checks still answered for
	// the drain delay, then a clean exit.
	cancel()
	for deadline := time.Now().Add(time.Second); ; time.Sleep(10 * time.Millisecond) {
		r, err := http.Get("http://" + adminAddr + "/readyz")
		if err == nil {
			r.Body.Close()
			if r.StatusCode == http.StatusServiceUnavailable {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz after SIGTERM: %v %v, want 503 at once", r, err)
		}
	}
	if _, err := authv3.NewAuthorizationClient(conn).Check(context.Background(), &authv3.CheckRequest{}); err != nil {
		t.Fatalf("a check during the drain delay: %v", err)
	}
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run returned %v after shutdown, want nil", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("run did not return after shutdown")
	}
	out := logs.String()
	for _, secret := range []string{"garbage-cookie-value", "should-not-be-logged", strings.Repeat("x-0123456789abcd", 4)} {
		if strings.Contains(out, secret) {
			t.Errorf("logs contain %q:\n%s", secret, out)
		}
	}
	if !strings.Contains(out, `"msg":"check"`) {
		t.Errorf("debug logs lack the decision line:\n%s", out)
	}
}

func TestRunRejectsBadConfiguration(t *testing.T) {
	var out bytes.Buffer
	err := run(context.Background(), nil, mapEnv(map[string]string{
		"EXT_SESSION_MGT": `{"instanceName":"my-redis","storageType":"redis","sessionSecret":"too-short"}`,
		"VCAP_SERVICES":   `{"redis-cache":[{"name":"my-redis","credentials":{"hostname":"h","port":1}}]}`,
	}), &out)
	if err == nil || !strings.Contains(err.Error(), "EXT_SESSION_MGT.sessionSecret: must be at least 64 characters") {
		t.Fatalf("err = %v", err)
	}
	if strings.Contains(err.Error(), "too-short") {
		t.Fatal("the error shows the secret")
	}
}

func TestRunHelpAndVersion(t *testing.T) {
	var out bytes.Buffer
	if err := run(context.Background(), []string{"--help"}, mapEnv(nil), &out); err != nil || !strings.Contains(out.String(), "EXTAUTHZ_GRPC_ADDR") {
		t.Fatalf("--help: %v\n%s", err, out.String())
	}
	out.Reset()
	if err := run(context.Background(), []string{"--version"}, mapEnv(nil), &out); err != nil || !strings.HasPrefix(out.String(), "extauthz ") {
		t.Fatalf("--version: %v %q", err, out.String())
	}
}

func TestCgroupMemoryLimit(t *testing.T) {
	dir := t.TempDir()
	write := func(name, v string) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(v), 0o600)
		return p
	}
	for _, tc := range []struct {
		files []string
		want  int64
		ok    bool
	}{
		{[]string{write("v2", "268435456\n")}, 268435456, true},
		{[]string{write("max", "max\n")}, 0, false},
		{[]string{filepath.Join(dir, "none"), write("v1", "134217728")}, 134217728, true},
		{[]string{write("v1-unlimited", "9223372036854771712")}, 0, false},
		{[]string{filepath.Join(dir, "none")}, 0, false},
	} {
		if got, ok := cgroupMemoryLimit(tc.files); got != tc.want || ok != tc.ok {
			t.Errorf("%v: %d %v, want %d %v", tc.files, got, ok, tc.want, tc.ok)
		}
	}
}
