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
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
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
		Metrics: http.NotFoundHandler(), DrainDelay: time.Hour, ShutdownTimeout: time.Second, Log: slog.New(slog.NewTextHandler(t.Output(), nil)),
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

// funcAuth answers checks with f.
type funcAuth struct {
	authv3.UnimplementedAuthorizationServer
	f func(ctx context.Context, r *authv3.CheckRequest) (*authv3.CheckResponse, error)
}

func (a funcAuth) Check(ctx context.Context, r *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return a.f(ctx, r)
}

func checkPath(ctx context.Context, c authv3.AuthorizationClient, path string) error {
	_, err := c.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Path: path}}}})
	return err
}

// TestShutdownForRollingUpdates: on cancel (SIGTERM) readiness fails at once,
// /readyz and gRPC health alike, while the listeners still take new
// connections and answer checks for the drain delay; then they close; a
// check in flight all along still finishes; Run returns nil.
func TestShutdownForRollingUpdates(t *testing.T) {
	const drainDelay = 1500 * time.Millisecond
	inFlight, release := make(chan struct{}), make(chan struct{})
	auth := funcAuth{f: func(ctx context.Context, r *authv3.CheckRequest) (*authv3.CheckResponse, error) {
		if r.GetAttributes().GetRequest().GetHttp().GetPath() == "/slow" {
			close(inFlight)
			select {
			case <-release:
			case <-ctx.Done():
				return nil, ctx.Err()
			}
		}
		return &authv3.CheckResponse{Status: &rpcstatus.Status{}}, nil
	}}
	g, h, a := listen(t), listen(t), listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{
			GRPC: g, HTTP: h, Admin: a,
			HTTPHandler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }),
			Register:    func(r grpc.ServiceRegistrar) { authv3.RegisterAuthorizationServer(r, auth) },
			Ready:       func(context.Context) error { return nil },
			Metrics:     http.NotFoundHandler(), DrainDelay: drainDelay, ShutdownTimeout: 5 * time.Second,
			Log: slog.New(slog.NewTextHandler(t.Output(), nil)),
		})
	}()
	readyz := func() int {
		resp, err := http.Get("http://" + a.Addr().String() + "/readyz")
		if err != nil {
			return 0
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	grpcClient := func() (*grpc.ClientConn, authv3.AuthorizationClient, healthpb.HealthClient) {
		conn, err := grpc.NewClient(g.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { conn.Close() })
		return conn, authv3.NewAuthorizationClient(conn), healthpb.NewHealthClient(conn)
	}
	health := func(hc healthpb.HealthClient) healthpb.HealthCheckResponse_ServingStatus {
		resp, err := hc.Check(context.Background(), &healthpb.HealthCheckRequest{Service: authService})
		if err != nil {
			t.Fatalf("health check: %v", err)
		}
		return resp.GetStatus()
	}
	_, client, hc := grpcClient()
	for deadline := time.Now().Add(5 * time.Second); health(hc) != healthpb.HealthCheckResponse_SERVING || readyz() != http.StatusOK; {
		if time.Now().After(deadline) {
			t.Fatal("not ready after 5s")
		}
		time.Sleep(10 * time.Millisecond)
	}
	slow := make(chan error, 1)
	go func() { slow <- checkPath(context.Background(), client, "/slow") }()
	<-inFlight

	began := time.Now()
	cancel() // SIGTERM, a check in flight
	for readyz() != http.StatusServiceUnavailable {
		if time.Since(began) > drainDelay {
			t.Fatal("/readyz still ready after the drain delay")
		}
		time.Sleep(5 * time.Millisecond)
	}
	flipped := time.Since(began)
	if st := health(hc); st != healthpb.HealthCheckResponse_NOT_SERVING {
		t.Fatalf("gRPC health %v once /readyz fails, want NOT_SERVING", st)
	}
	// Not ready, and still serving: checks on the open connection, on a new
	// connection, and on the HTTP listener are answered.
	if err := checkPath(context.Background(), client, "/"); err != nil {
		t.Fatalf("a check during the drain delay: %v", err)
	}
	_, fresh, _ := grpcClient()
	if err := checkPath(context.Background(), fresh, "/"); err != nil {
		t.Fatalf("a check on a new connection during the drain delay: %v", err)
	}
	resp, err := http.Get("http://" + h.Addr().String() + "/app")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("an HTTP check during the drain delay: %v %v", resp, err)
	}
	resp.Body.Close()
	answered := time.Since(began)

	// Then the listeners close, no earlier than the delay.
	for {
		c, err := net.DialTimeout("tcp", g.Addr().String(), time.Second)
		if err != nil {
			break
		}
		c.Close()
		if time.Since(began) > drainDelay+5*time.Second {
			t.Fatal("the gRPC listener still accepts long after the drain delay")
		}
		time.Sleep(10 * time.Millisecond)
	}
	closed := time.Since(began)
	t.Logf("SIGTERM +%v: not ready; +%v: checks still answered; +%v: listeners closed", flipped.Round(time.Millisecond), answered.Round(time.Millisecond), closed.Round(time.Millisecond))
	if closed < drainDelay {
		t.Fatalf("the gRPC listener closed %v after SIGTERM, before the drain delay %v", closed, drainDelay)
	}
	select {
	case err := <-done:
		t.Fatalf("Run returned %v with a check in flight", err)
	default:
	}
	close(release)
	if err := <-slow; err != nil {
		t.Fatalf("the check in flight since before SIGTERM failed: %v", err)
	}
	if err := <-done; err != nil {
		t.Fatalf("Run = %v, want nil", err)
	}
}
