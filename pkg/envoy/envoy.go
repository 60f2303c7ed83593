// Package envoy adapts Envoy's ext_authz protocols to the decision engine.
package envoy

import (
	"context"
	"log/slog"
	"net/http"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"

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

// Service is Envoy's envoy.service.auth.v3.Authorization over gRPC.
type Service struct {
	authv3.UnimplementedAuthorizationServer
	engine Engine
	obs    Observer
	log    *slog.Logger
}

// NewService returns the gRPC service. obs may be nil.
func NewService(engine Engine, obs Observer, log *slog.Logger) *Service {
	return &Service{engine: engine, obs: obs, log: log}
}

// Check implements the Authorization service on the generated types (the
// server uses Register's faster decoding; both give the same answer).
func (s *Service) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return s.check(ctx, requestFromCheck(req)), nil
}

func (s *Service) check(ctx context.Context, r *authz.Request) *authv3.CheckResponse {
	start := time.Now()
	d := s.engine.Check(ctx, r)
	observe(ctx, s.obs, s.log, "grpc", r, d, start)
	return CheckResponse(d)
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
		log.LogAttrs(ctx, slog.LevelDebug, "check",
			slog.String("protocol", proto), slog.String("method", r.Method), slog.String("host", r.Host),
			slog.String("path", path), slog.Bool("allow", d.Allow), slog.Int("status", d.Status),
			slog.String("reason", d.Reason), slog.String("tenant", d.Tenant), slog.Duration("took", took))
	}
}

// requestFromCheck reads what the engine needs from a CheckRequest.
func requestFromCheck(req *authv3.CheckRequest) *authz.Request {
	h := req.GetAttributes().GetRequest().GetHttp()
	r := &authz.Request{
		Method: h.GetMethod(), Scheme: h.GetScheme(), Host: h.GetHost(), Path: h.GetPath(),
		Headers: make(map[string]string, 8),
	}
	if len(h.GetHeaders()) > 0 {
		for k, v := range h.GetHeaders() {
			if wanted([]byte(k)) {
				r.Headers[k] = v
			}
		}
	} else {
		// encode_raw_headers: values as bytes, repeated headers as entries.
		for _, hv := range h.GetHeaderMap().GetHeaders() {
			v := hv.GetValue()
			if len(hv.GetRawValue()) > 0 {
				v = string(hv.GetRawValue())
			}
			addHeader(r.Headers, strings.ToLower(hv.GetKey()), v)
		}
	}
	fillFromPseudoHeaders(r)
	return r
}

// addHeader adds a repeated header as Envoy joins them: cookies with "; ",
// others with ",". Headers the engine does not read are dropped.
func addHeader(headers map[string]string, k, v string) {
	if !wanted([]byte(k)) {
		return
	}
	if prev, ok := headers[k]; ok {
		sep := ","
		if k == "cookie" {
			sep = "; "
		}
		v = prev + sep + v
	}
	headers[k] = v
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
		Status:       &rpcstatus.Status{Code: int32(code), Message: d.Reason},
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
