package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"runtime/debug"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/extauthz/extauthz/pkg/authz"
	"github.com/extauthz/extauthz/pkg/envoy"
	"github.com/extauthz/extauthz/pkg/metrics"
	"github.com/extauthz/extauthz/pkg/server"
)

// noopEnv, set to 1 in the environment, makes this binary the no-op
// ext_authz server instead of the bench: the bench starts itself again
// with it, so that the no-op server is a process of its own whose CPU can
// be read from /proc.
const noopEnv = "EXTAUTHZ_BENCH_NOOP"

// noopHeaderEnv, when set to n > 0, makes the no-op server answer with an
// Authorization header of n bytes of token, as a check that forwards a
// session does (-noop-token-bytes).
const noopHeaderEnv = "EXTAUTHZ_BENCH_NOOP_TOKEN_BYTES"

// noopEngine allows every request with one fixed upstream header, without
// looking at it.
type noopEngine struct{ d *authz.Decision }

func (e noopEngine) Check(context.Context, *authz.Request) *authz.Decision { return e.d }

// runNoop serves the no-op engine on extauthz's own stack: server.Run (the
// same grpc-go server options, stream workers, health service and HTTP
// server with its limits and timeouts), envoy's gRPC service (its fast
// CheckRequest decoder) and HTTP handler, the metrics observer, and the
// same GOGC default as cmd/extauthz. Only the engine, the session store and
// Redis are missing: what is left is what any check costs on this machine.
// It listens where the e2e harness says (EXTAUTHZ_GRPC_ADDR, _HTTP_ADDR,
// _ADMIN_ADDR), so e2e.StartExtauthz runs it like the real binary.
func runNoop() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if os.Getenv("GOGC") == "" {
		debug.SetGCPercent(400) // as cmd/extauthz
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	listen := func(env string) (net.Listener, error) {
		addr := os.Getenv(env)
		if addr == "" {
			return nil, fmt.Errorf("%s is not set", env)
		}
		return net.Listen("tcp", addr)
	}
	grpcLis, err := listen("EXTAUTHZ_GRPC_ADDR")
	if err != nil {
		return err
	}
	httpLis, err := listen("EXTAUTHZ_HTTP_ADDR")
	if err != nil {
		return err
	}
	adminLis, err := listen("EXTAUTHZ_ADMIN_ADDR")
	if err != nil {
		return err
	}
	upstream := authz.Header{Name: "x-auth-noop", Value: "ok"}
	if n, _ := strconv.Atoi(os.Getenv(noopHeaderEnv)); n > 0 {
		upstream = authz.Header{Name: "authorization", Value: "Bearer " + strings.Repeat("x", n)}
	}
	engine := noopEngine{&authz.Decision{Allow: true, Status: 200, Reason: authz.ReasonSession, Upstream: []authz.Header{upstream}}}
	m := metrics.New(metrics.Options{})
	svc := envoy.NewService(engine, m, log)
	return server.Run(ctx, server.Options{
		GRPC: grpcLis, HTTP: httpLis, Admin: adminLis,
		HTTPHandler:     envoy.NewHTTPHandler(engine, m, log, ""),
		Register:        svc.Register,
		GRPCOptions:     svc.ServerOptions(),
		Ready:           func(context.Context) error { return nil },
		Metrics:         m.Handler(),
		Pprof:           os.Getenv("EXTAUTHZ_PPROF") == "true",
		ShutdownTimeout: 5 * time.Second,
		Log:             log,
	})
}
