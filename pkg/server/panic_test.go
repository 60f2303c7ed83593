package server

import (
	"context"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"log/slog"
)

// panicky panics on a check for the host "boom".
type panicky struct {
	authv3.UnimplementedAuthorizationServer
}

func (panicky) Check(_ context.Context, r *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	if r.GetAttributes().GetRequest().GetHttp().GetHost() == "boom" {
		panic("a bug in a check")
	}
	return &authv3.CheckResponse{Status: &rpcstatus.Status{}}, nil
}

// A check that panics fails alone: the caller gets Internal (Envoy applies
// its status_on_error) and the process keeps serving.
func TestPanicInACheckFailsThatCheckOnly(t *testing.T) {
	g, cancel, done := start(t, panicky{}, time.Second)
	defer func() { cancel(); <-done }()
	conn, err := grpc.NewClient(g.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	c := authv3.NewAuthorizationClient(conn)
	check := func(host string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, err := c.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
			Http: &authv3.AttributeContext_HttpRequest{Host: host}}}})
		return err
	}
	if err := check("boom"); status.Code(err) != codes.Internal {
		t.Fatalf("panicking check: %v, want Internal", err)
	}
	for i := range 3 {
		if err := check("fine"); err != nil {
			t.Fatalf("check %d after the panic: %v", i, err)
		}
	}
	select {
	case err := <-done:
		t.Fatalf("the server stopped: %v", err)
	default:
	}
}

func TestRecoverHTTP(t *testing.T) {
	var logs strings.Builder
	h := recoverHTTP(http.HandlerFunc(func(http.ResponseWriter, *http.Request) { panic("bug") }), slog.New(slog.NewTextHandler(&logs, nil)))
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	if rec.Code != http.StatusInternalServerError || !strings.Contains(logs.String(), "panic in a check") {
		t.Fatalf("%d %q", rec.Code, logs.String())
	}
}
