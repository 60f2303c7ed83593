// Package server runs extauthz's listeners: the ext_authz gRPC service with
// health and reflection, and the admin HTTP listener (/healthz, /readyz,
// /metrics). Both drain on context cancel, within a deadline.
package server

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
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
	Ready   func(ctx context.Context) error
	Metrics *Metrics
	// ShutdownTimeout bounds the drain of in-flight checks.
	ShutdownTimeout time.Duration
	// ReadyInterval is how often the gRPC health status follows Ready (default 2s).
	ReadyInterval time.Duration
	// Pprof serves /debug/pprof on the admin listener.
	Pprof bool
	Log   *slog.Logger

	// MaxHeaderBytes bounds a request's head on the HTTP listener (0:
	// DefaultMaxHeaderBytes); a larger one gets 431.
	MaxHeaderBytes int
	// Timeouts of the HTTP and admin listeners (zero: defaults).
	Timeouts Timeouts
}

// authService is the health-checked service name Envoy's grpc_health_check uses.
const authService = "envoy.service.auth.v3.Authorization"

// Run serves until ctx is canceled, then stops accepting, lets in-flight
// checks finish within ShutdownTimeout, and returns nil. A listener failing
// returns its error.
func Run(ctx context.Context, o Options) error {
	if o.ReadyInterval <= 0 {
		o.ReadyInterval = 2 * time.Second
	}
	gs := grpc.NewServer(append([]grpc.ServerOption{
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		// No grpc.NumStreamWorkers: BenchmarkGRPCStreamWorkers finds no gain
		// at concurrency 1, 16 or 64 over one connection, and the same allocations.
	}, o.GRPCOptions...)...)
	o.Register(gs)
	hs := health.NewServer()
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
		if err := o.Ready(ctx); err != nil {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "not ready: session store: %v\n", err)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.Handle("GET /metrics", promhttp.HandlerFor(o.Metrics.Registry, promhttp.HandlerOpts{}))
	if o.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	admin := httpServer(mux, o.Timeouts, 0)
	checks := httpServer(o.HTTPHandler, o.Timeouts, o.MaxHeaderBytes)
	nginx := httpServer(o.NginxHandler, o.Timeouts, o.MaxHeaderBytes) // nginx's listener: the HTTP listener's limits

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
	g.Go(func() error { followReadiness(gctx, hs, o.Ready, o.ReadyInterval); return nil })
	g.Go(func() error {
		<-gctx.Done()
		o.Log.Info("shutting down: draining in-flight checks", "deadline", o.ShutdownTimeout)
		hs.Shutdown() // health NOT_SERVING: Envoy stops sending new checks
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
