package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// op is one operation of the load: a check, or a Redis GET.
type op func(ctx context.Context, worker, i int) error

func rawGet(rdb *redis.Client) op {
	return func(ctx context.Context, _, _ int) error { return rdb.Get(ctx, "bench:floor").Err() }
}

func dialConns(addr string, c int) ([]*grpc.ClientConn, error) {
	n := max(1, c/16) // Envoy keeps a few HTTP/2 connections per upstream
	var conns []*grpc.ClientConn
	for range n {
		cc, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return nil, err
		}
		conns = append(conns, cc)
	}
	return conns, nil
}

// checkRequest is the CheckRequest Envoy sends for a browser's API call
// with cookie as the session cookie.
func checkRequest(cookie, path string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "10.0.3.17", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 52144}}}}},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: "13471385738472", Method: "GET", Host: benchHost, Path: path, Scheme: "https", Protocol: "HTTP/1.1",
			Headers: map[string]string{
				":authority": benchHost, ":method": "GET", ":path": path, ":scheme": "https",
				"accept": "application/json", "accept-language": "en-US,en;q=0.9", "accept-encoding": "gzip, deflate, br",
				"user-agent":        "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36",
				"cookie":            "theme=dark; JSESSIONID=" + cookie + "; lang=en",
				"x-forwarded-proto": "https", "x-forwarded-for": "203.0.113.9", "x-request-id": "0d4a6c1e-2b7f-4c39-9a51-6a3e2f1b8c77",
				"sec-fetch-mode": "cors", "referer": "https://" + benchHost + "/orders",
			},
		}},
	}}
}

// encodeChecks pre-encodes one CheckRequest per cookie (Envoy encodes them
// on its own cores, in C++; the load generator should not be what is
// measured).
func encodeChecks(cookies []string) [][]byte {
	reqs := make([][]byte, len(cookies))
	for i, c := range cookies {
		b, err := proto.Marshal(checkRequest(c, "/api/orders?top=10"))
		if err != nil {
			panic(err)
		}
		reqs[i] = b
	}
	return reqs
}

// check sends pre-encoded CheckRequests and reads only whether the answer
// is an OkResponse.
func check(conns []*grpc.ClientConn, reqs [][]byte) op {
	return func(ctx context.Context, worker, i int) error {
		var resp rawMessage
		req := rawMessage(reqs[(worker*7919+i)%len(reqs)])
		if err := conns[worker%len(conns)].Invoke(ctx, "/envoy.service.auth.v3.Authorization/Check", &req, &resp, grpc.ForceCodec(rawCodec{})); err != nil {
			return err
		}
		if !isOK(resp) {
			return errors.New("denied")
		}
		return nil
	}
}

// httpTarget is an HTTP authorizer: where to ask, which cookie carries the
// session, and which status means allowed.
type httpTarget struct {
	url    string // the whole URL of a check
	cookie string // the session cookie's name
	ok     int    // the status of an allowed request
}

// httpCheck asks an HTTP authorizer, as Envoy's http_service does: the
// original request's method, path, Host and headers. The returned func
// closes the client's idle connections.
func httpCheck(t httpTarget, c int, cookies []string) (op, func()) {
	tr := &http.Transport{MaxIdleConnsPerHost: c, MaxIdleConns: c}
	client := &http.Client{Transport: tr}
	return func(ctx context.Context, worker, i int) error {
		req, _ := http.NewRequestWithContext(ctx, "GET", t.url, nil)
		req.Host = benchHost
		req.Header.Set("Cookie", "theme=dark; "+t.cookie+"="+cookies[(worker*7919+i)%len(cookies)]+"; lang=en")
		req.Header.Set("Accept", "application/json")
		req.Header.Set("User-Agent", "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0 Safari/537.36")
		req.Header.Set("X-Forwarded-Proto", "https")
		req.Header.Set("X-Forwarded-For", "203.0.113.9")
		req.Header.Set("X-Request-Id", "0d4a6c1e-2b7f-4c39-9a51-6a3e2f1b8c77")
		req.Header.Set("Sec-Fetch-Mode", "cors")
		resp, err := client.Do(req)
		if err != nil {
			return err
		}
		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != t.ok {
			return fmt.Errorf("denied: %d", resp.StatusCode)
		}
		return nil
	}, tr.CloseIdleConnections
}

type rawMessage []byte

// rawCodec passes pre-encoded messages through.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }
func (rawCodec) Marshal(v any) ([]byte, error) {
	return *v.(*rawMessage), nil
}
func (rawCodec) Unmarshal(b []byte, v any) error {
	*v.(*rawMessage) = append((*v.(*rawMessage))[:0], b...)
	return nil
}

// isOK says whether a CheckResponse holds an ok_response (field 3).
func isOK(b []byte) bool {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return false
		}
		b = b[n:]
		if num == 3 && typ == protowire.BytesType {
			return true
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return false
		}
		b = b[n:]
	}
	return false
}

// sample is what one stretch of load measured; samples of the same row
// taken in several rounds add up (merge).
type sample struct {
	lat      []time.Duration // of the calls that succeeded
	errs     int64
	firstErr string
	elapsed  time.Duration
}

func (s *sample) merge(o sample) {
	s.lat = append(s.lat, o.lat...)
	s.errs += o.errs
	if s.firstErr == "" {
		s.firstErr = o.firstErr
	}
	s.elapsed += o.elapsed
}

// result is the sample's throughput and latency percentiles.
func (s *sample) result() Result {
	slices.Sort(s.lat)
	pct := func(p float64) float64 { return float64(pick(s.lat, p).Nanoseconds()) / 1000 }
	r := Result{Ops: int64(len(s.lat)), Errors: s.errs, FirstError: s.firstErr, P50us: pct(.50), P90us: pct(.90), P99us: pct(.99)}
	if s.elapsed > 0 {
		r.PerSecond = float64(len(s.lat)) / s.elapsed.Seconds()
	}
	return r
}

// load runs f from c workers for d (or until ctx ends) and measures
// throughput and latency.
func load(ctx context.Context, c int, d time.Duration, f op) Result {
	s := run(ctx, c, d, f)
	return s.result()
}

// run runs f from c workers for d (or until ctx ends).
func run(ctx context.Context, c int, d time.Duration, f op) sample {
	// Calls run under ctx, not under a deadline: a call cut by the end of the
	// measurement is not an error, it is simply not counted.
	var stop atomic.Bool
	timer := time.AfterFunc(d, func() { stop.Store(true) })
	defer timer.Stop()
	lat := make([][]time.Duration, c)
	var errs atomic.Int64
	var firstErr atomic.Value
	var wg sync.WaitGroup
	start := time.Now()
	for w := range c {
		wg.Go(func() {
			l := make([]time.Duration, 0, 1<<12)
			for i := 0; !stop.Load() && ctx.Err() == nil; i++ {
				t0 := time.Now()
				err := f(ctx, w, i)
				if err != nil {
					if ctx.Err() != nil {
						break
					}
					if errs.Add(1) == 1 {
						firstErr.Store(err.Error())
					}
					continue
				}
				l = append(l, time.Since(t0))
			}
			lat[w] = l
		})
	}
	wg.Wait()
	s := sample{elapsed: time.Since(start), errs: errs.Load()}
	for _, l := range lat {
		s.lat = append(s.lat, l...)
	}
	s.firstErr, _ = firstErr.Load().(string)
	return s
}

// each runs f once for every index below n, from c workers.
func each(ctx context.Context, c, n int, f func(ctx context.Context, i int) error) error {
	var next atomic.Int64
	var mu sync.Mutex
	var first error
	var wg sync.WaitGroup
	for range c {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				if err := f(ctx, i); err != nil {
					mu.Lock()
					if first == nil {
						first = err
					}
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	if first == nil {
		first = ctx.Err()
	}
	return first
}
