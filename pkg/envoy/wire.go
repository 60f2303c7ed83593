package envoy

import (
	"context"
	"errors"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/encoding"
	_ "google.golang.org/grpc/encoding/proto" // registers the "proto" codec this one wraps
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"

	"github.com/extauthz/extauthz/pkg/authz"
)

// The hot path reads an encoded CheckRequest straight into an authz.Request:
// only the fields the engine uses, and only the headers it reads
// (authz.RequestHeaders), without building the generated message tree (the
// peers' addresses, metadata, every header of the request). The result is
// the same as proto.Unmarshal followed by requestFromCheck; a test and a
// fuzz target hold them equal.

// Field numbers from envoy/service/auth/v3/{external_auth,attribute_context}.proto
// and envoy/config/core/v3/base.proto.
const (
	fCheckAttributes   = 1  // CheckRequest.attributes
	fAttrRequest       = 4  // AttributeContext.request
	fRequestHTTP       = 2  // AttributeContext.Request.http
	fHTTPMethod        = 2  // HttpRequest.method
	fHTTPHeaders       = 3  // HttpRequest.headers (map<string,string>)
	fHTTPPath          = 4  // HttpRequest.path
	fHTTPHost          = 5  // HttpRequest.host
	fHTTPScheme        = 6  // HttpRequest.scheme
	fHTTPHeaderMap     = 13 // HttpRequest.header_map
	fHeaderMapHeaders  = 1  // HeaderMap.headers
	fHeaderValueKey    = 1  // HeaderValue.key, and a map entry's key
	fHeaderValueValue  = 2  // HeaderValue.value, and a map entry's value
	fHeaderValueRawVal = 3  // HeaderValue.raw_value
)

var errMalformed = errors.New("malformed CheckRequest")

// decodeCheck fills r from an encoded CheckRequest.
func decodeCheck(b []byte, r *authz.Request) error {
	r.Headers = make(map[string]string, 8)
	err := fields(b, func(num protowire.Number, v []byte) error {
		if num != fCheckAttributes {
			return nil
		}
		return fields(v, func(num protowire.Number, v []byte) error {
			if num != fAttrRequest {
				return nil
			}
			return fields(v, func(num protowire.Number, v []byte) error {
				if num != fRequestHTTP {
					return nil
				}
				return decodeHTTP(v, r)
			})
		})
	})
	if err != nil {
		return err
	}
	fillFromPseudoHeaders(r)
	return nil
}

func decodeHTTP(b []byte, r *authz.Request) error {
	var headerMap [][]byte
	sawHeaders := false
	err := fields(b, func(num protowire.Number, v []byte) error {
		switch num {
		case fHTTPMethod:
			r.Method = string(v)
		case fHTTPPath:
			r.Path = string(v)
		case fHTTPHost:
			r.Host = string(v)
		case fHTTPScheme:
			r.Scheme = string(v)
		case fHTTPHeaders:
			sawHeaders = true
			k, val, err := keyValue(v, false)
			if err != nil {
				return err
			}
			if wanted(k) {
				r.Headers[string(k)] = string(val)
			}
		case fHTTPHeaderMap:
			headerMap = append(headerMap, v)
		}
		return nil
	})
	if err != nil || sawHeaders {
		return err
	}
	// encode_raw_headers: values as bytes, repeated headers as entries.
	for _, hm := range headerMap {
		if err := fields(hm, func(num protowire.Number, v []byte) error {
			if num != fHeaderMapHeaders {
				return nil
			}
			k, val, err := keyValue(v, true)
			if err != nil {
				return err
			}
			addHeader(r.Headers, strings.ToLower(string(k)), string(val))
			return nil
		}); err != nil {
			return err
		}
	}
	return nil
}

// keyValue reads a map entry (key 1, value 2) or, with headerValue, a
// HeaderValue, whose raw_value (3) wins when set; in a map entry field 3 is
// unknown and ignored, as the generated decoder does.
func keyValue(b []byte, headerValue bool) (k, v []byte, err error) {
	var raw []byte
	err = fields(b, func(num protowire.Number, f []byte) error {
		switch num {
		case fHeaderValueKey:
			k = f
		case fHeaderValueValue:
			v = f
		case fHeaderValueRawVal:
			raw = f
		}
		return nil
	})
	if headerValue && len(raw) > 0 {
		v = raw
	}
	return k, v, err
}

// wanted says whether the engine reads a header (names arrive lower-case).
func wanted(name []byte) bool {
	for _, h := range authz.RequestHeaders {
		if string(name) == h {
			return true
		}
	}
	return false
}

// fields calls f for every length-delimited field of a message and skips the
// others; it fails on malformed input.
func fields(b []byte, f func(protowire.Number, []byte) error) error {
	for len(b) > 0 {
		num, typ, n := protowire.ConsumeTag(b)
		if n < 0 {
			return errMalformed
		}
		b = b[n:]
		if typ == protowire.BytesType {
			v, n := protowire.ConsumeBytes(b)
			if n < 0 {
				return errMalformed
			}
			b = b[n:]
			if err := f(num, v); err != nil {
				return err
			}
			continue
		}
		n = protowire.ConsumeFieldValue(num, typ, b)
		if n < 0 {
			return errMalformed
		}
		b = b[n:]
	}
	return nil
}

// codec is gRPC's proto codec, except that a CheckRequest is read straight
// into an *authz.Request.
type codec struct{ proto encoding.CodecV2 }

func (c codec) Name() string                           { return "proto" }
func (c codec) Marshal(v any) (mem.BufferSlice, error) { return c.proto.Marshal(v) }
func (c codec) Unmarshal(data mem.BufferSlice, v any) error {
	r, ok := v.(*authz.Request)
	if !ok {
		return c.proto.Unmarshal(data, v)
	}
	if len(data) == 1 {
		return decodeCheck(data[0].ReadOnlyData(), r)
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	return decodeCheck(buf.ReadOnlyData(), r)
}

// ServerOptions are the gRPC server options Register needs.
func ServerOptions() []grpc.ServerOption {
	return []grpc.ServerOption{grpc.ForceServerCodecV2(codec{proto: encoding.GetCodecV2("proto")})}
}

// Register registers the Authorization service with the fast decoder; the
// server must have been built with ServerOptions.
func (s *Service) Register(r grpc.ServiceRegistrar) {
	r.RegisterService(&grpc.ServiceDesc{
		ServiceName: "envoy.service.auth.v3.Authorization",
		HandlerType: (*any)(nil),
		Methods:     []grpc.MethodDesc{{MethodName: "Check", Handler: checkHandler}},
		Metadata:    "envoy/service/auth/v3/external_auth.proto",
	}, s)
}

func checkHandler(srv any, ctx context.Context, dec func(any) error, interceptor grpc.UnaryServerInterceptor) (any, error) {
	s := srv.(*Service)
	r := &authz.Request{}
	if err := dec(r); err != nil {
		return nil, err
	}
	if interceptor == nil {
		return s.check(ctx, r), nil
	}
	info := &grpc.UnaryServerInfo{Server: srv, FullMethod: "/envoy.service.auth.v3.Authorization/Check"}
	return interceptor(ctx, r, info, func(ctx context.Context, req any) (any, error) {
		return s.check(ctx, req.(*authz.Request)), nil
	})
}
