package server

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

type slowAuth struct {
	authv3.UnimplementedAuthorizationServer
	started chan struct{}
	delay   time.Duration
}

func (s *slowAuth) Check(ctx context.Context, _ *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	s.started <- struct{}{}
	select {
	case <-time.After(s.delay):
		return &authv3.CheckResponse{Status: &rpcstatus.Status{}}, nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func listen(t *testing.T) net.Listener {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	return l
}

func start(t *testing.T, auth authv3.AuthorizationServer, shutdown time.Duration) (net.Listener, context.CancelFunc, chan error) {
	g := listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{
			GRPC: g, HTTP: listen(t), HTTPHandler: http.NotFoundHandler(), Admin: listen(t), Register: func(r grpc.ServiceRegistrar) { authv3.RegisterAuthorizationServer(r, auth) }, Ready: func(context.Context) error { return nil },
			Metrics: http.NotFoundHandler(), ShutdownTimeout: shutdown, Log: slog.New(slog.NewTextHandler(t.Output(), nil)),
		})
	}()
	return g, cancel, done
}

func TestShutdownDrainsInFlightChecks(t *testing.T) {
	auth := &slowAuth{started: make(chan struct{}, 1), delay: 300 * time.Millisecond}
	g, cancel, done := start(t, auth, 5*time.Second)
	conn, err := grpc.NewClient(g.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	result := make(chan error, 1)
	go func() {
		_, err := authv3.NewAuthorizationClient(conn).Check(context.Background(), &authv3.CheckRequest{})
		result <- err
	}()
	<-auth.started
	cancel() // SIGTERM while a check is in flight
	if err := <-result; err != nil {
		t.Fatalf("the in-flight check failed during shutdown: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
	if _, err := net.DialTimeout("tcp", g.Addr().String(), time.Second); err == nil {
		t.Fatal("still accepting after shutdown")
	}
}

func TestShutdownDeadline(t *testing.T) {
	auth := &slowAuth{started: make(chan struct{}, 1), delay: time.Hour}
	g, cancel, done := start(t, auth, 200*time.Millisecond)
	conn, _ := grpc.NewClient(g.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	defer conn.Close()
	go authv3.NewAuthorizationClient(conn).Check(context.Background(), &authv3.CheckRequest{})
	<-auth.started
	began := time.Now()
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Run = %v", err)
		}
		if took := time.Since(began); took > 3*time.Second {
			t.Fatalf("shutdown took %v with a 200ms deadline", took)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("a stuck check held the shutdown past its deadline")
	}
}

func TestListenerErrorIsReturned(t *testing.T) {
	g := listen(t)
	g.Close() // a broken listener
	err := Run(context.Background(), Options{
		GRPC: g, HTTP: listen(t), HTTPHandler: http.NotFoundHandler(), Admin: listen(t), Register: func(r grpc.ServiceRegistrar) { authv3.RegisterAuthorizationServer(r, &slowAuth{}) }, Ready: func(context.Context) error { return nil },
		Metrics: http.NotFoundHandler(), ShutdownTimeout: time.Second, Log: slog.New(slog.NewTextHandler(t.Output(), nil)),
	})
	if err == nil || !errors.Is(err, net.ErrClosed) {
		t.Fatalf("Run = %v, want the listener's error", err)
	}
}

// TestNginxListener: nginx's listener serves its own handler, apart from the
// Envoy HTTP listener, and drains with the rest.
func TestNginxListener(t *testing.T) {
	h, n := listen(t), listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{
			GRPC: listen(t), HTTP: h, HTTPHandler: http.NotFoundHandler(), Admin: listen(t),
			Nginx: n, NginxHandler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusTeapot) }),
			Register: func(r grpc.ServiceRegistrar) { authv3.RegisterAuthorizationServer(r, &slowAuth{}) }, Ready: func(context.Context) error { return nil },
			Metrics: http.NotFoundHandler(), ShutdownTimeout: time.Second, Log: slog.New(slog.NewTextHandler(t.Output(), nil)),
		})
	}()
	for l, want := range map[net.Listener]int{n: http.StatusTeapot, h: http.StatusNotFound} {
		resp, err := http.Get("http://" + l.Addr().String() + "/")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Fatalf("%s: %d, want %d", l.Addr(), resp.StatusCode, want)
		}
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	if _, err := net.DialTimeout("tcp", n.Addr().String(), time.Second); err == nil {
		t.Fatal("nginx listener still accepting after shutdown")
	}
}
