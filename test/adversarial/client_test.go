package adversarial_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc/status"
)

// ---------------------------------------------------------------------------
// Envoy's two protocols

// hreq is a request as the client sent it to the proxy.
type hreq struct {
	Method, Host, Path string
	Scheme             string // default https
	H                  [][2]string
	// Authority, when set, is the gRPC :authority header instead of Host
	// (Host stays the attributes' host).
	Authority string
	// RawHeaders: gRPC header_map with raw_value (Envoy's
	// encode_raw_headers), repeated headers as separate entries.
	RawHeaders bool
}

func (q hreq) with(kv ...string) hreq {
	q.H = slices.Clone(q.H)
	for i := 0; i+1 < len(kv); i += 2 {
		q.H = append(q.H, [2]string{kv[i], kv[i+1]})
	}
	return q
}

// hres is what the proxy would do with the request.
type hres struct {
	Status  int
	Allowed bool
	Header  http.Header // to the client (denied response, or response headers on allow)
	Up      http.Header // set on the upstream request (allow only)
	Body    string
	Err     error // transport error, or the gRPC status
	Took    time.Duration
}

// Bearer is the token granted to the upstream, "" when none.
func (r hres) Bearer() string {
	if r.Up == nil {
		return ""
	}
	tok, ok := strings.CutPrefix(r.Up.Get("authorization"), "Bearer ")
	if !ok {
		return ""
	}
	return tok
}

func (r hres) String() string {
	if r.Err != nil {
		return fmt.Sprintf("error %v", r.Err)
	}
	loc := r.Header.Get("location")
	if len(loc) > 80 {
		loc = loc[:80] + "..."
	}
	s := fmt.Sprintf("%d allowed=%v bearer=%v", r.Status, r.Allowed, r.Bearer() != "")
	if loc != "" {
		s += " location=" + loc
	}
	if b := strings.TrimSpace(r.Body); b != "" && !r.Allowed {
		if len(b) > 100 {
			b = b[:100] + "..."
		}
		s += fmt.Sprintf(" body=%q", b)
	}
	return s
}

type protocol struct {
	name string
	do   func(*instance, hreq) hres
}

var protocols = []protocol{{"grpc", viaGRPC}, {"http", viaHTTP}}

func joinSep(k string) string {
	if k == "cookie" {
		return "; "
	}
	return ","
}

func checkRequest(q hreq) *authv3.CheckRequest {
	scheme := q.Scheme
	if scheme == "" {
		scheme = "https"
	}
	h := &authv3.AttributeContext_HttpRequest{Method: q.Method, Host: q.Host, Path: q.Path, Scheme: scheme, Protocol: "HTTP/1.1"}
	authority := q.Host
	if q.Authority != "" {
		authority = q.Authority
	}
	pseudo := [][2]string{{":authority", authority}, {":method", q.Method}, {":path", q.Path}, {":scheme", scheme}}
	if q.RawHeaders {
		h.HeaderMap = &corev3.HeaderMap{}
		for _, kv := range append(pseudo, q.H...) {
			h.HeaderMap.Headers = append(h.HeaderMap.Headers, &corev3.HeaderValue{Key: strings.ToLower(kv[0]), RawValue: []byte(kv[1])})
		}
	} else {
		// Repeated headers joined as Envoy does (in linear time).
		joined := map[string]*strings.Builder{}
		for _, kv := range append(pseudo, q.H...) {
			k := strings.ToLower(kv[0])
			if b, ok := joined[k]; ok {
				b.WriteString(joinSep(k))
				b.WriteString(kv[1])
			} else {
				b = &strings.Builder{}
				b.WriteString(kv[1])
				joined[k] = b
			}
		}
		h.Headers = make(map[string]string, len(joined))
		for k, b := range joined {
			h.Headers[k] = b.String()
		}
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{Http: h}}}
}

// viaGRPC asks as Envoy's gRPC ext_authz filter does, and applies the
// CheckResponse as Envoy does.
func viaGRPC(x *instance, q hreq) hres {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req := checkRequest(q)
	t0 := time.Now()
	resp, err := x.Check(ctx, req)
	out := fromCheckResponse(resp, err)
	out.Took = time.Since(t0)
	return out
}

func fromCheckResponse(resp *authv3.CheckResponse, err error) hres {
	out := hres{Header: http.Header{}}
	if err != nil {
		// Envoy with failure_mode_allow: false answers 403 (status_on_error).
		out.Status, out.Err = http.StatusForbidden, err
		if st, ok := status.FromError(err); ok {
			out.Err = fmt.Errorf("grpc %s: %s", st.Code(), st.Message())
		}
		return out
	}
	if resp.GetStatus().GetCode() == 0 && resp.GetDeniedResponse() == nil {
		out.Allowed, out.Status, out.Up = true, 200, http.Header{}
		ok := resp.GetOkResponse()
		for _, h := range ok.GetHeaders() {
			out.Up.Set(h.GetHeader().GetKey(), h.GetHeader().GetValue())
		}
		for _, h := range ok.GetResponseHeadersToAdd() {
			out.Header.Add(h.GetHeader().GetKey(), h.GetHeader().GetValue())
		}
		return out
	}
	d := resp.GetDeniedResponse()
	out.Status = int(d.GetStatus().GetCode())
	if out.Status == 0 {
		out.Status = http.StatusForbidden
	}
	for _, h := range d.GetHeaders() {
		out.Header.Add(h.GetHeader().GetKey(), h.GetHeader().GetValue())
	}
	out.Body = d.GetBody()
	return out
}

// viaHTTP asks as Envoy's HTTP ext_authz filter does (and as nginx's
// auth_request would, without its marker): the request's method, path, Host
// and headers, byte for byte on a fresh connection.
func viaHTTP(x *instance, q hreq) hres { return rawHTTP(x.HTTPAddr, q) }

func rawHTTP(addr string, q hreq) hres {
	t0 := time.Now()
	out := hres{Header: http.Header{}}
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		out.Err = err
		return out
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\n", q.Method, q.Path, q.Host)
	for _, kv := range q.H {
		fmt.Fprintf(&b, "%s: %s\r\n", kv[0], kv[1])
	}
	b.WriteString("Connection: close\r\n\r\n")
	if _, err := c.Write(b.Bytes()); err != nil {
		// The server may answer and close before reading everything.
		out.Err = err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: q.Method})
	if err != nil {
		if out.Err == nil {
			out.Err = err
		}
		out.Status = 0
		return out
	}
	out.Err = nil
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	out.Status, out.Header, out.Body, out.Took = resp.StatusCode, resp.Header, string(body), time.Since(t0)
	if resp.StatusCode == 200 {
		out.Allowed, out.Up = true, resp.Header
	}
	return out
}
