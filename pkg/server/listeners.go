package server

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"runtime/debug"
	"sync"
	"time"

	"golang.org/x/net/netutil"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/status"
)

// Timeouts bound how long a connection to the HTTP or admin listener may
// hold the server without a whole request: nobody keeps a goroutine and its
// buffers by connecting and waiting, or by sending slowly.
type Timeouts struct {
	// ReadHeader: from a request's first byte to its last header
	// (default 5s; a new connection that sends nothing is closed then too).
	ReadHeader time.Duration
	// Read: the whole request, body included, which is read (and
	// discarded) after the check (default 30s). A check still running then
	// is canceled.
	Read time.Duration
	// Idle: a kept-alive connection between requests (default 2m).
	Idle time.Duration
	// ConnectionAge: a gRPC connection gets GOAWAY after this (default 5m,
	// ±10%), and its calls then have Read to finish. Envoy opens a new one
	// at once; a call stalled in the middle of its message cannot hold its
	// memory longer, and connections spread over replicas added since.
	ConnectionAge time.Duration
}

// StreamWorkers is the number of goroutines kept to run gRPC calls. Without
// them each call runs on a new goroutine whose stack grows through the
// gRPC stack on every call (runtime.newstack: 10-17% of the CPU under load);
// a call that finds every worker busy still gets a goroutine of its own.
// BenchmarkGRPCStreamWorkers measures it.
const StreamWorkers = 128

// MaxConcurrentStreams bounds the calls in flight on one gRPC connection
// (each may hold a CheckRequest's buffer); Envoy opens another connection
// when it needs more.
const MaxConcurrentStreams = 256

// DefaultMaxHeaderBytes bounds a request's head on the HTTP listener
// (request line and headers; net/http allows 4 KiB more). Envoy's own
// default, max_request_headers_kb, is 60.
const DefaultMaxHeaderBytes = 60 << 10

func (t Timeouts) withDefaults() Timeouts {
	if t.ReadHeader <= 0 {
		t.ReadHeader = 5 * time.Second
	}
	if t.Read <= 0 {
		t.Read = max(30*time.Second, t.ReadHeader)
	}
	if t.Idle <= 0 {
		t.Idle = 2 * time.Minute
	}
	if t.ConnectionAge <= 0 {
		t.ConnectionAge = 5 * time.Minute
	}
	return t
}

// httpServer is an http.Server with the listeners' bounds.
func httpServer(h http.Handler, t Timeouts, maxHeaderBytes int) *http.Server {
	t = t.withDefaults()
	if maxHeaderBytes <= 0 {
		maxHeaderBytes = DefaultMaxHeaderBytes
	}
	return &http.Server{
		Handler: h, MaxHeaderBytes: maxHeaderBytes,
		ReadHeaderTimeout: t.ReadHeader, ReadTimeout: t.Read, IdleTimeout: t.Idle,
	}
}

// DefaultMaxConnections bounds the open connections of each check
// listener: Envoy and nginx keep a handful each, and every connection costs
// buffers (about 18 KiB on the gRPC listener) that nobody may multiply by
// connecting and waiting.
const DefaultMaxConnections = 4096

// limitListener bounds a listener's open connections; beyond, new ones wait
// in the backlog until one closes (the idle timeouts close idle ones). Once
// half the slots are taken, a source that holds a quarter of them gets no
// more (a new connection from it is closed at once), so that a client that
// can reach the port cannot take every slot from the proxies, which connect
// from their own addresses; a lone proxy (nginx, a sidecar, everything
// through Istio's 127.0.0.6) still gets half. Three sources together can
// still take every slot: the ports are for the proxies only.
func limitListener(l net.Listener, n int) net.Listener {
	if l == nil {
		return nil
	}
	if n <= 0 {
		n = DefaultMaxConnections
	}
	return netutil.LimitListener(&perSource{Listener: l, share: max(1, n/4), busy: max(1, n/2), open: map[netip.Addr]int{}}, n)
}

// perSource closes a new connection whose source already holds share open
// ones while busy or more are open in all.
type perSource struct {
	net.Listener
	share, busy int
	mu          sync.Mutex
	total       int
	open        map[netip.Addr]int // source -> open connections
}

// source is who a connection comes from: its IP address (IPv4-mapped ones
// as IPv4). Not an IPv6 /64: pods of a cluster often share one, the proxy's
// and an attacker's alike.
func source(a net.Addr) netip.Addr {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil {
		return netip.Addr{}
	}
	return ap.Addr().Unmap()
}

func (l *perSource) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		src := source(c.RemoteAddr())
		l.mu.Lock()
		if l.total >= l.busy && l.open[src] >= l.share {
			l.mu.Unlock()
			c.Close()
			continue
		}
		l.open[src]++
		l.total++
		l.mu.Unlock()
		return &sourceConn{Conn: c, release: func() {
			l.mu.Lock()
			l.total--
			if l.open[src]--; l.open[src] <= 0 {
				delete(l.open, src)
			}
			l.mu.Unlock()
		}}, nil
	}
}

type sourceConn struct {
	net.Conn
	once    sync.Once
	release func()
}

func (c *sourceConn) Close() error {
	c.once.Do(c.release)
	return c.Conn.Close()
}

// grpcBounds are the gRPC listener's counterpart of the HTTP timeouts: a
// connection must finish its handshake within ReadHeader, is closed after
// Idle without a call, and after ConnectionAge (plus Read for its calls) in
// any case; it carries at most MaxConcurrentStreams calls at once. A panic
// in a check fails that check (Internal: Envoy applies its status_on_error),
// not the process.
func grpcBounds(t Timeouts, log *slog.Logger) []grpc.ServerOption {
	t = t.withDefaults()
	return []grpc.ServerOption{
		grpc.ConnectionTimeout(t.ReadHeader),
		grpc.MaxConcurrentStreams(MaxConcurrentStreams),
		grpc.NumStreamWorkers(StreamWorkers),
		grpc.KeepaliveParams(keepalive.ServerParameters{MaxConnectionIdle: t.Idle, MaxConnectionAge: t.ConnectionAge, MaxConnectionAgeGrace: t.Read}),
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, info *grpc.UnaryServerInfo, h grpc.UnaryHandler) (resp any, err error) {
			defer func() {
				if p := recover(); p != nil {
					log.ErrorContext(ctx, "panic in a check: the check fails, the process goes on", "method", info.FullMethod, "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
					resp, err = nil, status.Error(codes.Internal, "internal error")
				}
			}()
			return h(ctx, req)
		}),
	}
}

// recoverHTTP answers 500 to a request whose handler panicked and logs it
// once, with the stack, instead of net/http's unstructured trace.
func recoverHTTP(h http.Handler, log *slog.Logger) http.Handler {
	if h == nil {
		return nil
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		defer func() {
			if p := recover(); p != nil {
				if p == http.ErrAbortHandler {
					panic(p)
				}
				log.ErrorContext(r.Context(), "panic in a check: the check fails, the process goes on", "panic", fmt.Sprint(p), "stack", string(debug.Stack()))
				http.Error(w, "internal error", http.StatusInternalServerError)
			}
		}()
		h.ServeHTTP(w, r)
	})
}
