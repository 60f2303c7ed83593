package envoy

import (
	"reflect"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/protobuf/proto"

	"github.com/extauthz/extauthz/pkg/authz"
)

func wireSamples() []*authv3.CheckRequest {
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
	pseudoOnly := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Headers: map[string]string{":method": "GET", ":path": "/p", ":authority": "h:1", ":scheme": "http"}},
	}}}
	raw := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Path: "/", HeaderMap: &corev3.HeaderMap{Headers: []*corev3.HeaderValue{
			{Key: "Cookie", RawValue: []byte("a=1")}, {Key: "cookie", Value: "b=2"}, {Key: "X-Forwarded-Proto", RawValue: []byte("https")},
			{Key: "accept", RawValue: []byte("dropped")},
		}}},
	}}}
	return []*authv3.CheckRequest{full, pseudoOnly, raw, {}}
}

// TestFastDecodeMatchesGenerated: the hot path's decoder and the generated
// types give the engine the same request.
func TestFastDecodeMatchesGenerated(t *testing.T) {
	for i, req := range wireSamples() {
		b, err := proto.Marshal(req)
		if err != nil {
			t.Fatal(err)
		}
		var fast authz.Request
		if err := decodeCheck(b, &fast); err != nil {
			t.Fatalf("sample %d: %v", i, err)
		}
		if want := requestFromCheck(req); !reflect.DeepEqual(&fast, want) {
			t.Fatalf("sample %d:\nfast %+v\nwant %+v", i, &fast, want)
		}
	}
	if got := requestFromCheck(wireSamples()[0]).Headers["user-agent"]; got != "" {
		t.Fatal("a header the engine does not read was kept")
	}
}

func FuzzFastDecode(f *testing.F) {
	for _, req := range wireSamples() {
		b, _ := proto.Marshal(req)
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		var fast authz.Request
		fastErr := decodeCheck(b, &fast)
		var req authv3.CheckRequest
		if err := proto.Unmarshal(b, &req); err != nil {
			return // the generated decoder is stricter (UTF-8, wire types); nothing to compare
		}
		if fastErr != nil {
			t.Fatalf("generated decoder accepts, fast decoder fails: %v", fastErr)
		}
		if want := requestFromCheck(&req); !reflect.DeepEqual(&fast, want) {
			t.Fatalf("fast %+v\nwant %+v", &fast, want)
		}
	})
}
