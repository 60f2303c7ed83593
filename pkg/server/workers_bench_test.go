package server_test

import (
	"context"
	"log/slog"
	"net"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/extauthz/extauthz/pkg/authz"
	"github.com/extauthz/extauthz/pkg/envoy"
	"github.com/extauthz/extauthz/pkg/server"
)

// allowAll is the cheapest engine: what remains is the gRPC stack's cost.
// It answers with a token the size of an XSUAA access token.
type allowAll struct{}

var bearer = "Bearer " + strings.Repeat("x", 2600)

func (allowAll) Check(context.Context, *authz.Request) *authz.Decision {
	return &authz.Decision{Allow: true, Status: 200, Reason: "session", Upstream: []authz.Header{{Name: "authorization", Value: bearer}}}
}

// BenchmarkGRPCStreamWorkers compares the gRPC server without
// grpc.NumStreamWorkers (a new goroutine per call, whose stack grows on
// every call: runtime.newstack was 10-17% of the CPU profile under load),
// with GOMAXPROCS workers (busy at once under concurrency, so calls fall
// back to new goroutines), and with server.StreamWorkers, over one
// connection (as Envoy keeps) at several concurrencies: the evidence for
// the option.
func BenchmarkGRPCStreamWorkers(b *testing.B) {
	for _, workers := range []int{0, runtime.GOMAXPROCS(0), server.StreamWorkers} {
		for _, conc := range []int{1, 16, 64} {
			b.Run("workers="+strconv.Itoa(workers)+"/c="+strconv.Itoa(conc), func(b *testing.B) {
				benchGRPC(b, workers, conc)
			})
		}
	}
}

func benchGRPC(b *testing.B, workers, conc int) {
	svc := envoy.NewService(allowAll{}, nil, slog.New(slog.DiscardHandler))
	opts := svc.ServerOptions()
	if workers > 0 {
		opts = append(opts, grpc.NumStreamWorkers(uint32(workers)))
	}
	gs := grpc.NewServer(opts...)
	svc.Register(gs)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go gs.Serve(l)
	defer gs.Stop()
	conn, err := grpc.NewClient(l.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	c := authv3.NewAuthorizationClient(conn)
	req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Host: "app.example.com", Path: "/api/orders", Scheme: "https",
			Headers: map[string]string{"cookie": "JSESSIONID=" + string(make([]byte, 64)), "x-requested-with": "XMLHttpRequest"}},
	}}}
	if _, err := c.Check(context.Background(), req); err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.ResetTimer()
	var n atomic.Int64
	n.Store(int64(b.N))
	done := make(chan struct{})
	for range conc {
		go func() {
			defer func() { done <- struct{}{} }()
			for n.Add(-1) >= 0 {
				if _, err := c.Check(context.Background(), req); err != nil {
					b.Error(err)
					return
				}
			}
		}()
	}
	for range conc {
		<-done
	}
}
