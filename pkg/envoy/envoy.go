// Package envoy adapts Envoy's ext_authz protocols to the decision engine.
package envoy

import (
	"context"
	"log/slog"
	"net/http"
	"strconv"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"go.opentelemetry.io/otel/trace"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"

	"github.com/extauthz/extauthz/pkg/authz"
)

// Engine decides about requests (authz.Engine).
type Engine interface {
	Check(ctx context.Context, r *authz.Request) *authz.Decision
}

// Observer records each decision (metrics).
type Observer interface {
	ObserveCheck(d *authz.Decision, took time.Duration)
}

// Tracer traces checks (pkg/tracing). StartCheck starts a check's span,
// the child of the one the proxy's headers carry (headers reads the check
// request's gRPC metadata or HTTP headers by lower-case name); the function
// it returns ends the span with the decision.
type Tracer interface {
	StartCheck(ctx context.Context, protocol string, headers func(string) string) (context.Context, func(*authz.Request, *authz.Decision))
}

// Service is Envoy's envoy.service.auth.v3.Authorization over gRPC.
type Service struct {
	authv3.UnimplementedAuthorizationServer
	engine Engine
	obs    Observer
	log    *slog.Logger
	tracer Tracer // nil: off

	maxHeaderBytes int
}

// NewService returns the gRPC service, with DefaultMaxHeaderBytes. obs may
// be nil.
func NewService(engine Engine, obs Observer, log *slog.Logger) *Service {
	return &Service{engine: engine, obs: obs, log: log, maxHeaderBytes: DefaultMaxHeaderBytes}
}

// LimitHeaderBytes sets the most bytes of header names and values one check
// may carry (0: DefaultMaxHeaderBytes); a check over it gets 431. Call it
// before ServerOptions and serving.
func (s *Service) LimitHeaderBytes(n int) *Service {
	s.maxHeaderBytes = headerLimit(n)
	return s
}

// Trace traces every check with t (nil: off).
func (s *Service) Trace(t Tracer) *Service {
	s.tracer = t
	return s
}

// Check implements the Authorization service on the generated types (the
// server uses Register's faster decoding; both give the same answer).
func (s *Service) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	r, size := requestFromCheck(req)
	if size > s.maxHeaderBytes {
		return s.tooLarge(ctx, r), nil
	}
	return s.check(ctx, r), nil
}

// tooLarge answers a check whose headers exceed the limit, without asking
// the engine.
func (s *Service) tooLarge(ctx context.Context, r *authz.Request) *authv3.CheckResponse {
	return s.respond(ctx, r, true)
}

func (s *Service) check(ctx context.Context, r *authz.Request) *authv3.CheckResponse {
	return s.respond(ctx, r, false)
}

func (s *Service) respond(ctx context.Context, r *authz.Request, tooLarge bool) *authv3.CheckResponse {
	start := time.Now()
	var hdr func(string) string
	if s.tracer != nil {
		hdr = grpcHeaders(ctx)
	}
	d, ctx := decide(ctx, s.engine, s.tracer, "grpc", hdr, r, tooLarge)
	observe(ctx, s.obs, s.log, "grpc", r, d, start)
	return CheckResponse(d)
}

// decide asks the engine — or answers 431 for a check over the header
// limit, without it — inside the check's span when tracing is on (hdr reads
// the trace context Envoy sent). It returns the context the span lives in.
func decide(ctx context.Context, engine Engine, tracer Tracer, proto string, hdr func(string) string, r *authz.Request, tooLarge bool) (*authz.Decision, context.Context) {
	var end func(*authz.Request, *authz.Decision)
	if tracer != nil {
		ctx, end = tracer.StartCheck(ctx, proto, hdr)
	}
	var d *authz.Decision
	if tooLarge {
		d = headersTooLarge()
	} else {
		d = engine.Check(ctx, r)
	}
	if end != nil {
		end(r, d)
	}
	return d, ctx
}

// grpcHeaders reads the check call's gRPC metadata, where Envoy puts the
// context of its ext_authz span.
func grpcHeaders(ctx context.Context) func(string) string {
	md, _ := metadata.FromIncomingContext(ctx)
	return func(name string) string {
		if v := md.Get(name); len(v) > 0 {
			return v[0]
		}
		return ""
	}
}

// observe records metrics and the debug line of one decision. The line never
// holds the query string (it can carry codes and states), a cookie or a token.
func observe(ctx context.Context, obs Observer, log *slog.Logger, proto string, r *authz.Request, d *authz.Decision, start time.Time) {
	took := time.Since(start)
	if obs != nil {
		obs.ObserveCheck(d, took)
	}
	if log.Enabled(ctx, slog.LevelDebug) {
		path, _, _ := strings.Cut(r.Path, "?")
		attrs := []slog.Attr{
			slog.String("protocol", proto), slog.String("method", clip(r.Method, 32)), slog.String("host", clip(r.Host, 256)),
			slog.String("path", clip(path, 512)), slog.Bool("allow", d.Allow), slog.Int("status", d.Status),
			slog.String("reason", string(d.Reason)), slog.String("tenant", d.Tenant), slog.Duration("took", took),
		}
		if sc := trace.SpanContextFromContext(ctx); sc.IsValid() {
			attrs = append(attrs, slog.String("trace_id", sc.TraceID().String()), slog.String("span_id", sc.SpanID().String()))
		}
		log.LogAttrs(ctx, slog.LevelDebug, "check", attrs...)
	}
}

// clip shortens what a client sent to n bytes for a log line, saying how
// long it was.
func clip(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n] + "…(" + strconv.Itoa(len(s)) + " bytes)"
}

// requestFromCheck reads what the engine needs from a CheckRequest, and
// counts the bytes of its headers' names and values (all of them).
func requestFromCheck(req *authv3.CheckRequest) (*authz.Request, int) {
	h := req.GetAttributes().GetRequest().GetHttp()
	r := &authz.Request{
		Method: h.GetMethod(), Scheme: h.GetScheme(), Host: h.GetHost(), Path: h.GetPath(),
		Headers:    make(map[string]string, 8),
		Body:       requestBody(h.GetBody(), h.GetRawBody()),
		ClientAddr: req.GetAttributes().GetSource().GetAddress().GetSocketAddress().GetAddress(),
	}
	size := 0
	for k, v := range h.GetHeaders() {
		size += len(k) + len(v)
		if name, ok := wantedName(k); ok && name == k {
			r.Headers[k] = v
		}
	}
	// encode_raw_headers: values as bytes, repeated headers as entries.
	j := joiner{headers: r.Headers}
	for _, hv := range h.GetHeaderMap().GetHeaders() {
		v := hv.GetValue()
		if len(hv.GetRawValue()) > 0 {
			v = string(hv.GetRawValue())
		}
		size += len(hv.GetKey()) + len(v)
		if name, ok := wantedName(hv.GetKey()); ok && len(h.GetHeaders()) == 0 {
			j.add(name, v)
		}
	}
	j.done()
	fillFromPseudoHeaders(r)
	return r, size
}

// fillFromPseudoHeaders takes method, host, path and scheme from the
// pseudo-headers when the attributes lack them.
func fillFromPseudoHeaders(r *authz.Request) {
	if r.Method == "" {
		r.Method = r.Headers[":method"]
	}
	if r.Host == "" {
		r.Host = r.Headers[":authority"]
	}
	if r.Path == "" {
		r.Path = r.Headers[":path"]
	}
	if r.Scheme == "" {
		r.Scheme = r.Headers[":scheme"]
	}
}

// CheckResponse renders a decision as Envoy's CheckResponse.
func CheckResponse(d *authz.Decision) *authv3.CheckResponse {
	if d.Allow {
		ok := &authv3.OkHttpResponse{HeadersToRemove: d.Remove}
		for _, h := range d.Upstream {
			ok.Headers = append(ok.Headers, headerOption(h))
		}
		for _, h := range d.Response {
			ok.ResponseHeadersToAdd = append(ok.ResponseHeadersToAdd, headerOption(h))
		}
		return &authv3.CheckResponse{
			Status:       &rpcstatus.Status{Code: int32(codes.OK)},
			HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: ok},
		}
	}
	denied := &authv3.DeniedHttpResponse{Status: &typev3.HttpStatus{Code: typev3.StatusCode(d.Status)}, Body: d.Body}
	for _, h := range d.Response {
		denied.Headers = append(denied.Headers, headerOption(h))
	}
	code := codes.PermissionDenied
	switch d.Status {
	case http.StatusUnauthorized:
		code = codes.Unauthenticated
	case http.StatusServiceUnavailable, http.StatusBadGateway:
		code = codes.Unavailable
	}
	return &authv3.CheckResponse{
		Status:       &rpcstatus.Status{Code: int32(code), Message: string(d.Reason)},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: denied},
	}
}

// headerOption: set-cookie is appended (there may be several); every other
// header replaces what the request or response had.
func headerOption(h authz.Header) *corev3.HeaderValueOption {
	action := corev3.HeaderValueOption_OVERWRITE_IF_EXISTS_OR_ADD
	if h.Name == "set-cookie" {
		action = corev3.HeaderValueOption_APPEND_IF_EXISTS_OR_ADD
	}
	return &corev3.HeaderValueOption{Header: &corev3.HeaderValue{Key: h.Name, Value: h.Value}, AppendAction: action}
}
