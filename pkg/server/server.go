// Package server runs extauthz's listeners: the ext_authz gRPC service with
// health and reflection, the HTTP ones, and the admin HTTP listener
// (/healthz, /readyz, /metrics). On context cancel readiness fails first,
// a drain delay passes, then they drain within a deadline.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"sync/atomic"
	"time"

	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/reflection"
)

// Options configure Run.
type Options struct {
	GRPC  net.Listener // Envoy's ext_authz gRPC
	HTTP  net.Listener // Envoy's ext_authz HTTP protocol
	Admin net.Listener // /healthz, /readyz, /metrics
	// Nginx, when not nil, is nginx's auth_request listener, served by
	// NginxHandler like the HTTP listener.
	Nginx net.Listener

	// HTTPHandler serves the HTTP listener.
	HTTPHandler  http.Handler
	NginxHandler http.Handler

	// Register registers the gRPC services (Envoy's Authorization);
	// GRPCOptions are the extra server options they need.
	Register    func(grpc.ServiceRegistrar)
	GRPCOptions []grpc.ServerOption
	// Ready reports whether the session store answers.
	Ready func(ctx context.Context) error
	// Metrics serves /metrics on the admin listener.
	Metrics http.Handler
	// AdminAPI, when not nil, serves /admin/ on the admin listener (it
	// checks its own bearer token).
	AdminAPI http.Handler
	// DrainDelay is how long, once ctx is canceled, readiness fails
	// (/readyz 503, gRPC health NOT_SERVING) while checks are still
	// answered, before the listeners close: the time Kubernetes and Envoy
	// take to stop sending (0: none).
	DrainDelay time.Duration
	// ShutdownTimeout bounds the drain of in-flight checks.
	ShutdownTimeout time.Duration
	// Pprof serves /debug/pprof on the admin listener.
	Pprof bool
	Log   *slog.Logger

	// MaxHeaderBytes bounds a request's head on the HTTP listener (0:
	// DefaultMaxHeaderBytes); a larger one gets 431.
	MaxHeaderBytes int
	// Timeouts of the HTTP and admin listeners, and the gRPC listener's
	// handshake and idle limits (zero: defaults).
	Timeouts Timeouts
	// MaxConnections bounds each check listener's open connections
	// (0: DefaultMaxConnections).
	MaxConnections int
}

// readyInterval is how often the gRPC health status follows Ready.
const readyInterval = 2 * time.Second

// authService is the health-checked service name Envoy's grpc_health_check uses.
const authService = "envoy.service.auth.v3.Authorization"

// Run serves until ctx is canceled, then: readiness fails (/readyz 503,
// gRPC health NOT_SERVING) while checks are still answered for DrainDelay;
// then the check listeners stop accepting and in-flight checks finish
// within ShutdownTimeout; then the admin listener closes and Run returns
// nil. A listener failing returns its error (without the drain delay).
func Run(ctx context.Context, o Options) error {
	gs := grpc.NewServer(append([]grpc.ServerOption{
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
	}, append(grpcBounds(o.Timeouts, o.Log), o.GRPCOptions...)...)...)
	o.Register(gs)
	var stopping atomic.Bool // readiness fails from the first moment of the shutdown
	hs := health.NewServer()
	// Known, and not serving, until the first readiness check says so: never
	// "unknown service", nor serving before the store answered.
	hs.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	hs.SetServingStatus(authService, healthpb.HealthCheckResponse_NOT_SERVING)
	healthpb.RegisterHealthServer(gs, hs)
	reflection.Register(gs)

	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("content-type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
		defer cancel()
		w.Header().Set("content-type", "text/plain; charset=utf-8")
		if stopping.Load() {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "not ready: shutting down")
			return
		}
		if err := o.Ready(ctx); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ready: session store: %v\n", err)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.Handle("GET /metrics", o.Metrics)
	if o.AdminAPI != nil {
		mux.Handle("/admin/", o.AdminAPI)
	}
	if o.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	admin := httpServer(mux, o.Timeouts, 0)
	checks := httpServer(recoverHTTP(o.HTTPHandler, o.Log), o.Timeouts, o.MaxHeaderBytes)
	nginx := httpServer(recoverHTTP(o.NginxHandler, o.Log), o.Timeouts, o.MaxHeaderBytes) // nginx's listener: the HTTP listener's limits
	o.GRPC, o.HTTP, o.Nginx = limitListener(o.GRPC, o.MaxConnections), limitListener(o.HTTP, o.MaxConnections), limitListener(o.Nginx, o.MaxConnections)

	runCtx, stop := context.WithCancel(ctx)
	defer stop()
	g, gctx := errgroup.WithContext(runCtx)
	g.Go(func() error {
		if err := gs.Serve(o.GRPC); err != nil {
			return fmt.Errorf("grpc listener %s: %w", o.GRPC.Addr(), err)
		}
		return nil
	})
	g.Go(func() error {
		if err := admin.Serve(o.Admin); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("admin listener %s: %w", o.Admin.Addr(), err)
		}
		return nil
	})
	g.Go(func() error {
		if err := checks.Serve(o.HTTP); err != nil && !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("http listener %s: %w", o.HTTP.Addr(), err)
		}
		return nil
	})
	if o.Nginx != nil {
		g.Go(func() error {
			if err := nginx.Serve(o.Nginx); err != nil && !errors.Is(err, http.ErrServerClosed) {
				return fmt.Errorf("nginx listener %s: %w", o.Nginx.Addr(), err)
			}
			return nil
		})
	}
	g.Go(func() error { followReadiness(gctx, hs, o.Ready, readyInterval); return nil })
	g.Go(func() error {
		<-gctx.Done()
		stopping.Store(true)
		hs.Shutdown() // health NOT_SERVING, and it stays so: Envoy stops sending new checks
		if ctx.Err() != nil && o.DrainDelay > 0 {
			// Asked to stop (SIGTERM): keep answering while Kubernetes takes
			// the pod out of the endpoints and Envoy's health checks see it.
			o.Log.Info("shutting down: not ready; still answering checks for the drain delay", "drain_delay", o.DrainDelay)
			time.Sleep(o.DrainDelay)
		}
		o.Log.Info("shutting down: closing the listeners; draining in-flight checks", "deadline", o.ShutdownTimeout)
		deadline, cancel := context.WithTimeout(context.WithoutCancel(ctx), o.ShutdownTimeout)
		defer cancel()
		drained := make(chan struct{})
		go func() { gs.GracefulStop(); close(drained) }()
		httpDrained := make(chan struct{})
		go func() { _ = checks.Shutdown(deadline); close(httpDrained) }()
		nginxDrained := make(chan struct{})
		go func() { _ = nginx.Shutdown(deadline); close(nginxDrained) }()
		select {
		case <-drained:
		case <-deadline.Done():
			o.Log.Warn("shutdown deadline passed; cancelling the checks still running")
			gs.Stop()
		}
		<-httpDrained
		_ = checks.Close()
		<-nginxDrained
		_ = nginx.Close()
		sctx, cancelAdmin := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
		defer cancelAdmin()
		_ = admin.Shutdown(sctx)
		return nil
	})
	listening := []any{"grpc", o.GRPC.Addr().String(), "http", o.HTTP.Addr().String(), "admin", o.Admin.Addr().String()}
	if o.Nginx != nil {
		listening = append(listening, "nginx", o.Nginx.Addr().String())
	}
	o.Log.Info("serving", listening...)
	return g.Wait()
}

// followReadiness keeps the gRPC health status in step with the store.
func followReadiness(ctx context.Context, hs *health.Server, ready func(context.Context) error, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		cctx, cancel := context.WithTimeout(ctx, every)
		status := healthpb.HealthCheckResponse_SERVING
		if ready(cctx) != nil {
			status = healthpb.HealthCheckResponse_NOT_SERVING
		}
		cancel()
		if ctx.Err() != nil {
			return
		}
		hs.SetServingStatus("", status)
		hs.SetServingStatus(authService, status)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}
