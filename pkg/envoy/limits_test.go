package envoy_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/extauthz/extauthz/pkg/authz"
	"github.com/extauthz/extauthz/pkg/envoy"
	"github.com/extauthz/extauthz/pkg/session"
	"github.com/extauthz/extauthz/proto/sessionpb"
)

// floodEntries repeated cookie headers make a CheckRequest of about 975 KB
// (each entry: "cookie" + a 10-byte value, plus its protobuf framing).
const floodEntries = 45_000

func flood(cookie string, entries int) *authv3.CheckRequest {
	req := checkRequest("GET", "/app", nil)
	hm := &corev3.HeaderMap{Headers: make([]*corev3.HeaderValue, 0, entries+1)}
	for i := range entries {
		hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: "cookie", RawValue: fmt.Appendf(nil, "c=%08d", i)})
	}
	hm.Headers = append(hm.Headers, &corev3.HeaderValue{Key: "cookie", RawValue: []byte("JSESSIONID=" + cookie)})
	req.Attributes.Request.Http.HeaderMap = hm
	return req
}

// serveGRPC runs the service as the server does: the fast decoder, the
// message size limit, a real listener.
func serveGRPC(t *testing.T, svc *envoy.Service) authv3.AuthorizationClient {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	gs := grpc.NewServer(svc.ServerOptions()...)
	svc.Register(gs)
	go gs.Serve(l)
	t.Cleanup(gs.Stop)
	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(64<<20)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return authv3.NewAuthorizationClient(conn)
}

// measure runs f and returns how long it took and how many bytes the
// process allocated meanwhile (client and server: both run here).
func measure(f func()) (time.Duration, uint64) {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	start := time.Now()
	f()
	took := time.Since(start)
	runtime.ReadMemStats(&after)
	return took, after.TotalAlloc - before.TotalAlloc
}

// TestHeaderFloodOverGRPC: a CheckRequest of ~975 KB of repeated headers
// (once 15 s and 640 MB) is answered at once: 431 over the header limit,
// and, with the limit raised above it, decided with the headers joined in
// linear time.
func TestHeaderFloodOverGRPC(t *testing.T) {
	mem := session.NewMemoryStore(nil)
	svc, m := newService(t, mem)
	_, cookie, err := m.Create(context.Background(), &sessionpb.Session{AccessToken: "tok", AccessTokenExpiry: time.Now().Add(time.Hour).Unix()})
	if err != nil {
		t.Fatal(err)
	}
	client := serveGRPC(t, svc)
	// Over the header limit, within the message limit: 431, decided on the
	// headers counted while they are read.
	over := flood(cookie, floodEntries/8)
	var resp *authv3.CheckResponse
	took, alloc := measure(func() { resp, err = client.Check(context.Background(), over) })
	if err != nil {
		t.Fatal(err)
	}
	if d := resp.GetDeniedResponse(); d.GetStatus().GetCode() != 431 || resp.GetStatus().GetMessage() != "headers_too_large" {
		t.Fatalf("flood over the limit: %v", resp)
	}
	t.Logf("%d-byte flood over the limit: 431 in %v, %d KB allocated", proto.Size(over), took, alloc>>10)
	if took > 2*time.Second || alloc > 16<<20 {
		t.Fatalf("flood over the limit took %v and %d MB", took, alloc>>20)
	}
	// Over the message limit: refused before it is read.
	req := flood(cookie, floodEntries)
	size := proto.Size(req)
	if size < 900_000 || size > 1_000_000 {
		t.Fatalf("the flood is %d bytes, want ~975 KB", size)
	}
	took, _ = measure(func() { _, err = client.Check(context.Background(), req) })
	if status.Code(err) != codes.ResourceExhausted || took > 2*time.Second {
		t.Fatalf("a %d-byte flood: %v after %v, want RESOURCE_EXHAUSTED at once", size, err, took)
	}

	raised, _ := newService(t, mem)
	raised.LimitHeaderBytes(4 << 20)
	client = serveGRPC(t, raised)
	took, alloc = measure(func() { resp, err = client.Check(context.Background(), req) })
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetOkResponse() == nil || resp.GetDeniedResponse() != nil {
		t.Fatalf("flood under a raised limit, with the session cookie last: %v", resp.GetStatus())
	}
	t.Logf("%d-byte flood under a raised limit: decided in %v, %d KB allocated", size, took, alloc>>10)
	if took > 2*time.Second || alloc > 64<<20 {
		t.Fatalf("flood under a raised limit took %v and %d MB", took, alloc>>20)
	}
}

// TestGRPCMessageLimit: a CheckRequest beyond the headers' limit plus a
// body's allowance fails at once with RESOURCE_EXHAUSTED.
func TestGRPCMessageLimit(t *testing.T) {
	svc, _ := newService(t, session.NewMemoryStore(nil))
	client := serveGRPC(t, svc)
	req := checkRequest("POST", "/upload", nil)
	req.Attributes.Request.Http.Body = strings.Repeat("x", 200<<10)
	_, err := client.Check(context.Background(), req)
	if status.Code(err) != codes.ResourceExhausted {
		t.Fatalf("a CheckRequest with a 200 KiB body: %v, want RESOURCE_EXHAUSTED", err)
	}
	req.Attributes.Request.Http.Body = strings.Repeat("x", authz.MaxBodyBytes) // what the shipped configurations buffer at most
	if resp, err := client.Check(context.Background(), req); err != nil || resp.GetDeniedResponse().GetStatus().GetCode() != 401 {
		t.Fatalf("a %d-byte body: %v %v", authz.MaxBodyBytes, resp, err)
	}
}

// TestHeaderLimitCountsEveryHeader: headers the engine does not read count
// too, in both encodings and both decoders.
func TestHeaderLimitCountsEveryHeader(t *testing.T) {
	svc, _ := newService(t, session.NewMemoryStore(nil))
	svc.LimitHeaderBytes(1000)
	client := serveGRPC(t, svc)
	under := checkRequest("GET", "/api", map[string]string{"user-agent": strings.Repeat("u", 900)})
	over := checkRequest("GET", "/api", map[string]string{"user-agent": strings.Repeat("u", 1000)})
	overRaw := checkRequest("GET", "/api", nil)
	overRaw.Attributes.Request.Http.HeaderMap = &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
		{Key: "accept", RawValue: []byte(strings.Repeat("a", 600))}, {Key: "accept", Value: strings.Repeat("a", 600)}}}
	for name, tc := range map[string]struct {
		req    *authv3.CheckRequest
		status int32
	}{"under": {under, 401}, "over": {over, 431}, "over, header_map": {overRaw, 431}} {
		for via, check := range map[string]func(context.Context, *authv3.CheckRequest) (*authv3.CheckResponse, error){
			"fast decoder": func(ctx context.Context, r *authv3.CheckRequest) (*authv3.CheckResponse, error) {
				return client.Check(ctx, r)
			},
			"generated types": svc.Check,
		} {
			resp, err := check(context.Background(), tc.req)
			if err != nil || int32(resp.GetDeniedResponse().GetStatus().GetCode()) != tc.status {
				t.Errorf("%s via %s: %v %v, want %d", name, via, resp, err, tc.status)
			}
		}
	}
}

// serveHTTP runs the HTTP protocol as the server does, with the
// http.Server's own header limit.
func serveHTTP(t *testing.T, h http.Handler, maxHeaderBytes int) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h, MaxHeaderBytes: maxHeaderBytes, ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(l)
	t.Cleanup(func() { srv.Close() })
	return l.Addr().String()
}

// rawRequest writes a request with n repeated Cookie lines and reads the
// answer; the write runs apart, as the server may answer before it ends.
func rawRequest(t *testing.T, addr string, n int, last string) *http.Response {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	go func() {
		w := bufio.NewWriterSize(c, 64<<10)
		fmt.Fprintf(w, "GET /app HTTP/1.1\r\nHost: app.example.com\r\n")
		for i := range n {
			fmt.Fprintf(w, "Cookie: c=%08d\r\n", i)
		}
		fmt.Fprintf(w, "Cookie: %s\r\n\r\n", last)
		w.Flush()
	}()
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

// TestHeaderFloodOverHTTP: ~975 KB of repeated Cookie headers get 431 at
// once from the server's own limit; a request over the check limit but
// within the server's slack gets the check's 431; with both limits raised
// the flood is decided, joined in linear time.
func TestHeaderFloodOverHTTP(t *testing.T) {
	mem := session.NewMemoryStore(nil)
	keys, _ := session.NewKeys([]byte(strings.Repeat("k", 64)))
	m := session.NewManager(mem, keys, session.Options{})
	_, cookie, _ := m.Create(context.Background(), &sessionpb.Session{AccessToken: "tok", AccessTokenExpiry: time.Now().Add(time.Hour).Unix()})
	eng := authz.New(m, nil, testHosts(), authz.Options{}, discard())
	const floodLines = 975 << 10 / len("Cookie: c=01234567\r\n")

	addr := serveHTTP(t, envoy.NewHTTPHandler(eng, nil, discard(), ""), envoy.DefaultMaxHeaderBytes)
	var resp *http.Response
	took, alloc := measure(func() { resp = rawRequest(t, addr, floodLines, "JSESSIONID="+cookie) })
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("flood: %d", resp.StatusCode)
	}
	t.Logf("975 KB flood over HTTP: 431 in %v, %d KB allocated", took, alloc>>10)
	if took > 2*time.Second || alloc > 32<<20 {
		t.Fatalf("flood took %v and %d MB", took, alloc>>20)
	}

	// 62 KiB in one header: over the check limit, within the server's
	// read slack (4 KiB in net/http).
	big, _ := http.NewRequest("GET", "http://"+addr+"/app", nil)
	big.Header.Set("X-Big", strings.Repeat("b", 62<<10))
	resp, err := http.DefaultClient.Do(big)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge || string(body) != "Request header fields too large.\n" {
		t.Fatalf("62 KiB of headers: %d %q", resp.StatusCode, body)
	}

	addr = serveHTTP(t, envoy.NewHTTPHandler(eng, nil, discard(), "").LimitHeaderBytes(2<<20), 2<<20)
	took, alloc = measure(func() { resp = rawRequest(t, addr, floodLines, "JSESSIONID="+cookie) })
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Authorization") != "Bearer tok" {
		t.Fatalf("flood under raised limits, the session cookie last: %d", resp.StatusCode)
	}
	t.Logf("975 KB flood over HTTP under raised limits: decided in %v, %d KB allocated", took, alloc>>10)
	if took > 2*time.Second || alloc > 64<<20 {
		t.Fatalf("flood under raised limits took %v and %d MB", took, alloc>>20)
	}
}

// TestNginxHeaderLimit: on nginx's listener, a subrequest over the limit
// gets 401 (nginx understands no 431 there), and nginx's unmarked fallback
// the full 431.
func TestNginxHeaderLimit(t *testing.T) {
	mem := session.NewMemoryStore(nil)
	keys, _ := session.NewKeys([]byte(strings.Repeat("k", 64)))
	m := session.NewManager(mem, keys, session.Options{})
	_, cookie, _ := m.Create(context.Background(), &sessionpb.Session{AccessToken: "tok"})
	h := envoy.NewNginxHandler(authz.New(m, nil, testHosts(), authz.Options{}, discard()), nil, discard()).LimitHeaderBytes(2000)
	do := func(sub bool, big int) *http.Response {
		req := originForm(httptest.NewRequest("GET", "http://app.example.com/x", nil))
		if sub {
			req.Header.Set("X-Extauthz-Subrequest", "nginx")
			req.Header.Set("X-Original-Method", "GET")
		}
		req.Header.Set("Cookie", "JSESSIONID="+cookie)
		req.Header.Set("X-Big", strings.Repeat("b", big))
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Result()
	}
	if r := do(true, 100); r.StatusCode != 200 {
		t.Fatalf("a subrequest within the limit: %d", r.StatusCode)
	}
	if r := do(true, 2000); r.StatusCode != 401 || r.Header.Get("Authorization") != "" {
		t.Fatalf("a subrequest over the limit: %d, want 401", r.StatusCode)
	}
	if r := do(false, 2000); r.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("the fallback over the limit: %d, want 431", r.StatusCode)
	}
}
