package envoy

import (
	"bytes"
	"context"
	"log/slog"
	"reflect"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"

	"github.com/extauthz/extauthz/pkg/authz"
	"github.com/extauthz/extauthz/pkg/session"
	"github.com/extauthz/extauthz/pkg/tenant"
	"github.com/extauthz/extauthz/proto/sessionpb"
)

func httpRequest(h *authv3.AttributeContext_HttpRequest) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{Http: h}}}
}

func marshal(msgs ...proto.Message) []byte {
	var b []byte
	for _, m := range msgs {
		mb, err := proto.Marshal(m)
		if err != nil {
			panic(err)
		}
		b = append(b, mb...)
	}
	return b
}

// field wraps an encoded message as field num of its parent.
func field(num int, msg []byte) []byte {
	b := []byte{byte(num<<3 | 2)}
	for n := uint64(len(msg)); ; n >>= 7 {
		if n < 0x80 {
			b = append(b, byte(n))
			break
		}
		b = append(b, byte(n)|0x80)
	}
	return append(b, msg...)
}

// wireSamples are encoded CheckRequests; the merge cases are concatenations,
// which protobuf reads as one message with its message fields merged.
func wireSamples() map[string][]byte {
	full := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{Address: &corev3.Address_SocketAddress{
			SocketAddress: &corev3.SocketAddress{Address: "10.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 5000}}}}},
		ContextExtensions: map[string]string{"a": "b"},
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Id: "1", Method: "POST", Host: "app.example.com", Path: "/x?y=1", Scheme: "https", Protocol: "HTTP/2", Size: 12,
			Headers: map[string]string{":authority": "app.example.com", "cookie": "a=1; JSESSIONID=x", "x-requested-with": "XMLHttpRequest",
				"user-agent": "dropped", "sec-fetch-mode": "cors", "x-forwarded-proto": "https"},
		}},
	}}
	pseudoOnly := httpRequest(&authv3.AttributeContext_HttpRequest{Headers: map[string]string{":method": "GET", ":path": "/p", ":authority": "h:1", ":scheme": "http"}})
	raw := httpRequest(&authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/", HeaderMap: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
		{Key: "Cookie", RawValue: []byte("a=1")}, {Key: "cookie", Value: "b=2"}, {Key: "X-Forwarded-Proto", RawValue: []byte("https")},
		{Key: "accept", RawValue: []byte("dropped")}, {Key: "X-CSRF-TO\u212aEN", Value: "kelvin"},
	}}})
	withRawCookie := httpRequest(&authv3.AttributeContext_HttpRequest{Method: "GET", Host: "app.example.com", Path: "/app", HeaderMap: &corev3.HeaderMap{
		Headers: []*corev3.HeaderValue{{Key: "cookie", RawValue: []byte("JSESSIONID=from-header-map")}}}})
	withMap := httpRequest(&authv3.AttributeContext_HttpRequest{Method: "POST", Path: "/admin", Headers: map[string]string{"x-requested-with": "XMLHttpRequest", "cookie": "JSESSIONID=second"}})
	mapNoCookie := httpRequest(&authv3.AttributeContext_HttpRequest{Headers: map[string]string{"accept": "*/*"}})
	httpOnly := func(h *authv3.AttributeContext_HttpRequest) []byte { b, _ := proto.Marshal(h); return b }
	withBody := httpRequest(&authv3.AttributeContext_HttpRequest{Method: "POST", Path: "/logout/backchannel", Body: "logout_token=a.b.c"})
	withRawBody := httpRequest(&authv3.AttributeContext_HttpRequest{Method: "POST", Path: "/logout/backchannel", Body: "ignored", RawBody: []byte("logout_token=raw")})
	bigBody := httpRequest(&authv3.AttributeContext_HttpRequest{Method: "POST", Path: "/logout/backchannel", RawBody: bytes.Repeat([]byte("x"), authz.MaxBodyBytes+1)})
	pipe := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Source: &authv3.AttributeContext_Peer{Address: &corev3.Address{
		Address: &corev3.Address_Pipe{Pipe: &corev3.Pipe{Path: "/tmp/s"}}}}}}
	return map[string][]byte{
		"body":                marshal(withBody),
		"raw body":            marshal(withRawBody),
		"body over the limit": marshal(bigBody),
		"body then no body":   marshal(withBody, withMap),
		"source then pipe":    marshal(full, pipe),
		"full":                marshal(full),
		"pseudo only":         marshal(pseudoOnly),
		"raw":                 marshal(raw),
		"empty":               nil,
		// A repeated CheckRequest.attributes: its request and http merge.
		"attributes twice, header_map then map": marshal(withRawCookie, mapNoCookie),
		"attributes twice, map then header_map": marshal(mapNoCookie, withRawCookie),
		"attributes twice, scalars last wins":   marshal(full, withMap),
		"attributes twice, header_maps append":  marshal(raw, withRawCookie),
		// A repeated AttributeContext.request inside one attributes.
		"request twice": field(1, append(field(4, field(2, httpOnly(withRawCookie.Attributes.Request.Http))),
			field(4, field(2, httpOnly(withMap.Attributes.Request.Http)))...)),
		// A repeated AttributeContext.Request.http inside one request.
		"http twice": field(1, field(4, append(field(2, httpOnly(withRawCookie.Attributes.Request.Http)),
			field(2, httpOnly(mapNoCookie.Attributes.Request.Http))...))),
		// A map entry of the same key in two parts: the last wins.
		"map key twice": marshal(withMap, httpRequest(&authv3.AttributeContext_HttpRequest{Headers: map[string]string{"cookie": "JSESSIONID=third"}})),
	}
}

// generated decodes as the server did before the fast decoder: the
// generated types, then requestFromCheck.
func generated(t testing.TB, b []byte) (*authz.Request, int, bool) {
	var req authv3.CheckRequest
	if err := proto.Unmarshal(b, &req); err != nil {
		return nil, 0, false
	}
	r, size := requestFromCheck(&req)
	return r, size, true
}

// TestFastDecodeMatchesGenerated: the hot path's decoder and the generated
// types give the engine the same request, repeated messages merged alike.
func TestFastDecodeMatchesGenerated(t *testing.T) {
	for name, b := range wireSamples() {
		var fast authz.Request
		over, err := decodeCheck(b, &fast, DefaultMaxHeaderBytes)
		if err != nil || over {
			t.Fatalf("%s: over %v, %v", name, over, err)
		}
		want, _, ok := generated(t, b)
		if !ok {
			t.Fatalf("%s: the generated decoder refuses the sample", name)
		}
		if !reflect.DeepEqual(&fast, want) {
			t.Fatalf("%s:\nfast %+v\nwant %+v", name, &fast, want)
		}
	}
	if r, _, _ := generated(t, wireSamples()["full"]); r.Headers["user-agent"] != "" {
		t.Fatal("a header the engine does not read was kept")
	}
	if r, _, _ := generated(t, wireSamples()["attributes twice, header_map then map"]); r.Headers["cookie"] != "" {
		t.Fatal("merged: the headers map must win over header_map, as requestFromCheck reads the merged message")
	}
}

// decider is a fixed engine with one session, whose cookie is in the
// samples as JSESSIONID=from-header-map's stand-in.
func decider(t testing.TB) (func(*authz.Request) *authv3.CheckResponse, string) {
	keys, err := session.NewKeys([]byte(strings.Repeat("k", 64)))
	if err != nil {
		t.Fatal(err)
	}
	m := session.NewManager(session.NewMemoryStore(nil), keys, session.Options{})
	_, cookie, err := m.Create(context.Background(), &sessionpb.Session{AccessToken: "token"})
	if err != nil {
		t.Fatal(err)
	}
	hosts, err := tenant.New(tenant.Options{AllowedHosts: []string{"app.example.com"}})
	if err != nil {
		t.Fatal(err)
	}
	e := authz.New(m, nil, hosts, authz.Options{}, slog.New(slog.DiscardHandler))
	return func(r *authz.Request) *authv3.CheckResponse {
		r.Headers["cookie"] = strings.ReplaceAll(r.Headers["cookie"], "from-header-map", cookie)
		return CheckResponse(e.Check(context.Background(), r))
	}, cookie
}

// TestMergedRequestDecidesAsGenerated: a CheckRequest whose http comes in
// two parts, the first with the session cookie in header_map, the second
// with a headers map, is one request without a cookie for protobuf (the
// map wins): denied. The fast decoder once read each part alone and
// allowed it.
func TestMergedRequestDecidesAsGenerated(t *testing.T) {
	decide, _ := decider(t)
	for _, name := range []string{"attributes twice, header_map then map", "request twice", "http twice"} {
		b := wireSamples()[name]
		var fast authz.Request
		if _, err := decodeCheck(b, &fast, DefaultMaxHeaderBytes); err != nil {
			t.Fatal(err)
		}
		want, _, _ := generated(t, b)
		got, gen := decide(&fast), decide(want)
		if !proto.Equal(got, gen) {
			t.Fatalf("%s: fast %v\ngenerated %v", name, got, gen)
		}
		if got.GetOkResponse() != nil && got.GetDeniedResponse() == nil {
			t.Fatalf("%s: allowed", name)
		}
	}
	// The cookie alone (one part) is a session: the test's cookie works.
	var alone authz.Request
	decodeCheck(marshal(httpRequest(&authv3.AttributeContext_HttpRequest{Method: "GET", Host: "app.example.com", Path: "/app", HeaderMap: &corev3.HeaderMap{
		Headers: []*corev3.HeaderValue{{Key: "cookie", RawValue: []byte("JSESSIONID=from-header-map")}}}})), &alone, DefaultMaxHeaderBytes)
	if d := decide(&alone); d.GetDeniedResponse() != nil {
		t.Fatalf("the session cookie alone is denied: %v", d)
	}
}

func FuzzFastDecode(f *testing.F) {
	for _, b := range wireSamples() {
		f.Add(b, uint16(0))
		f.Add(b, uint16(40))
	}
	decide, _ := decider(f)
	f.Fuzz(func(t *testing.T, b []byte, limit uint16) {
		max := int(limit)
		if max == 0 {
			max = DefaultMaxHeaderBytes
		}
		var fast authz.Request
		over, fastErr := decodeCheck(b, &fast, max)
		want, size, ok := generated(t, b)
		if !ok {
			return // the generated decoder is stricter (UTF-8, wire types); nothing to compare
		}
		if fastErr != nil {
			t.Fatalf("generated decoder accepts, fast decoder fails: %v", fastErr)
		}
		// The fast decoder counts every header entry carried, a map key
		// sent twice too; the generated map keeps one: the fast count is
		// never lower, so it never lets through what the other refuses.
		if size > max && !over {
			t.Fatalf("generated counts %d header bytes > %d; the fast decoder lets it through", size, max)
		}
		if over {
			return // both answer 431 without the engine
		}
		if !reflect.DeepEqual(&fast, want) {
			t.Fatalf("fast %+v\nwant %+v", &fast, want)
		}
		if got, gen := decide(&fast), decide(want); !proto.Equal(got, gen) {
			t.Fatalf("decisions differ:\nfast %v\ngenerated %v", got, gen)
		}
	})
}

// Invalid UTF-8 in a string field the fast decoder reads makes the message
// malformed, as it does for the generated decoder: a key "cookie\xff" next
// to a valid cookie does not leave the valid one to be decided on.
func TestFastDecodeRefusesInvalidUTF8(t *testing.T) {
	// proto.Marshal refuses invalid UTF-8: marshal a placeholder byte, then
	// put 0xff in its place.
	for name, req := range map[string]*authv3.CheckRequest{
		"header key":   checkWithHeaders(map[string]string{"cookieQQQ": "x", "cookie": "JSESSIONID=abc"}),
		"header value": checkWithHeaders(map[string]string{"cookie": "JSESSIONID=QQQ"}),
		"path":         {Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/QQQ"}}}},
	} {
		b, err := proto.MarshalOptions{}.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		var r authz.Request
		if _, err := decodeCheck(b, &r, DefaultMaxHeaderBytes); err != nil {
			t.Fatalf("%s: the placeholder message: %v", name, err)
		}
		b = bytes.ReplaceAll(b, []byte("QQQ"), []byte{0xff, 0xfe, 0xff})
		if err := proto.Unmarshal(b, &authv3.CheckRequest{}); err == nil {
			t.Fatalf("%s: the generated decoder accepts it; the test is wrong", name)
		}
		if _, err := decodeCheck(b, &r, DefaultMaxHeaderBytes); err == nil {
			t.Errorf("%s: the fast decoder accepted invalid UTF-8: %+v", name, r)
		}
	}
}

func checkWithHeaders(h map[string]string) *authv3.CheckRequest {
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Host: "app.example.com", Path: "/", Headers: h}}}}
}
