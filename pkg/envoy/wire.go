package envoy

import (
	"bytes"
	"context"
	"errors"
	"unicode/utf8"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
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
	fHTTPBody          = 11 // HttpRequest.body
	fHTTPRawBody       = 12 // HttpRequest.raw_body
	fAttrSource        = 1  // AttributeContext.source
	fPeerAddress       = 1  // AttributeContext.Peer.address
	fAddressSocket     = 1  // Address.socket_address (oneof with 2, 3)
	fSocketAddress     = 2  // SocketAddress.address
)

var (
	errMalformed = errors.New("malformed CheckRequest")
	errTooLarge  = errors.New("headers over the limit")
)

// decodeCheck fills r from an encoded CheckRequest. over reports headers
// whose names and values, summed, exceed maxHeaderBytes; decoding then
// stops and r is incomplete.
//
// A message field that occurs more than once is merged, as protobuf does:
// the HttpRequest read is every http of every request of every attributes,
// in order, read as one message (scalars: the last wins; the headers map:
// the last entry of a key wins; header_map's headers: appended).
func decodeCheck(b []byte, r *authz.Request, maxHeaderBytes int) (over bool, err error) {
	r.Headers = make(map[string]string, 8)
	var one [1][]byte
	https := one[:0]
	err = fields(b, func(num protowire.Number, v []byte) error {
		if num != fCheckAttributes {
			return nil
		}
		return fields(v, func(num protowire.Number, v []byte) error {
			if num == fAttrSource {
				return decodeSource(v, r)
			}
			if num != fAttrRequest {
				return nil
			}
			return fields(v, func(num protowire.Number, v []byte) error {
				if num == fRequestHTTP {
					https = append(https, v)
				}
				return nil
			})
		})
	})
	if err != nil {
		return false, err
	}
	err = decodeHTTP(https, r, maxHeaderBytes)
	if errors.Is(err, errTooLarge) {
		return true, nil
	}
	if err != nil {
		return false, err
	}
	fillFromPseudoHeaders(r)
	return false, nil
}

// decodeSource reads the client's address from a Peer: its
// socket_address's address (the last one set wins; another member of the
// Address oneof clears it, as protobuf's merge does).
func decodeSource(b []byte, r *authz.Request) error {
	return fields(b, func(num protowire.Number, v []byte) error {
		if num != fPeerAddress {
			return nil
		}
		return fields(v, func(num protowire.Number, v []byte) error {
			switch num {
			case fAddressSocket:
				return fields(v, func(num protowire.Number, v []byte) error {
					if num != fSocketAddress {
						return nil
					}
					if !utf8.Valid(v) {
						return errMalformed
					}
					r.ClientAddr = string(v)
					return nil
				})
			case 2, 3: // pipe, envoy_internal_address
				r.ClientAddr = ""
			}
			return nil
		})
	})
}

// requestBody is the body the engine gets: raw_body when set, else body;
// nil when over authz.MaxBodyBytes.
func requestBody(body string, raw []byte) []byte {
	b := raw
	if len(b) == 0 {
		b = []byte(body)
	}
	if len(b) == 0 || len(b) > authz.MaxBodyBytes {
		return nil
	}
	return b
}

// decodeHTTP reads the parts of one HttpRequest. Every header is counted
// against the limit, those the engine does not read too.
func decodeHTTP(parts [][]byte, r *authz.Request, maxHeaderBytes int) error {
	var headerMap [][]byte
	var body, rawBody []byte
	sawHeaders := false
	left := maxHeaderBytes
	for _, b := range parts {
		err := fields(b, func(num protowire.Number, v []byte) error {
			switch num {
			case fHTTPMethod, fHTTPPath, fHTTPHost, fHTTPScheme, fHTTPBody:
				if !utf8.Valid(v) {
					return errMalformed // a proto3 string: the generated decoder refuses the message
				}
			}
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
				if left -= len(k) + len(val); left < 0 {
					return errTooLarge
				}
				if name, ok := wantedName(k); ok && name == string(k) {
					r.Headers[name] = string(val)
				}
			case fHTTPHeaderMap:
				headerMap = append(headerMap, v)
			case fHTTPBody:
				body = v
			case fHTTPRawBody:
				rawBody = v
			}
			return nil
		})
		if err != nil {
			return err
		}
	}
	// encode_raw_headers: values as bytes, repeated headers as entries.
	// Counted even when the headers map wins (both are carried).
	j := joiner{headers: r.Headers}
	for _, hm := range headerMap {
		if err := fields(hm, func(num protowire.Number, v []byte) error {
			if num != fHeaderMapHeaders {
				return nil
			}
			k, val, err := keyValue(v, true)
			if err != nil {
				return err
			}
			if left -= len(k) + len(val); left < 0 {
				return errTooLarge
			}
			if name, ok := wantedName(k); ok && !sawHeaders {
				j.add(name, string(val))
			}
			return nil
		}); err != nil {
			return err
		}
	}
	j.done()
	if b := requestBody(string(body), rawBody); b != nil {
		r.Body = bytes.Clone(b) // the message's buffer is reused once decoded
	}
	return nil
}

// keyValue reads a map entry (key 1, value 2) or, with headerValue, a
// HeaderValue, whose raw_value (3) wins when set; in a map entry field 3 is
// unknown and ignored, as the generated decoder does. Key and value are
// proto3 strings: invalid UTF-8 in them makes the message malformed, as it
// does for the generated decoder (raw_value is bytes).
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
	if err == nil && (!utf8.Valid(k) || !utf8.Valid(v)) {
		return nil, nil, errMalformed
	}
	if headerValue && len(raw) > 0 {
		v = raw
	}
	return k, v, err
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

// checkInput is what the codec reads a CheckRequest into: the request, and
// whether its headers exceed the limit the handler set.
type checkInput struct {
	req            authz.Request
	maxHeaderBytes int
	over           bool
}

// codec is gRPC's proto codec, except that a CheckRequest is read straight
// into a checkInput.
type codec struct{ proto encoding.CodecV2 }

func (c codec) Name() string                           { return "proto" }
func (c codec) Marshal(v any) (mem.BufferSlice, error) { return c.proto.Marshal(v) }
func (c codec) Unmarshal(data mem.BufferSlice, v any) (err error) {
	in, ok := v.(*checkInput)
	if !ok {
		return c.proto.Unmarshal(data, v)
	}
	if len(data) == 1 {
		in.over, err = decodeCheck(data[0].ReadOnlyData(), &in.req, in.maxHeaderBytes)
		return err
	}
	buf := data.MaterializeToBuffer(mem.DefaultBufferPool())
	defer buf.Free()
	in.over, err = decodeCheck(buf.ReadOnlyData(), &in.req, in.maxHeaderBytes)
	return err
}

// ServerOptions are the gRPC server options Register needs: the fast
// decoder, and a message size that fits the header limit.
func (s *Service) ServerOptions() []grpc.ServerOption { return serverOptions(s.maxHeaderBytes) }

func serverOptions(maxHeaderBytes int) []grpc.ServerOption {
	return []grpc.ServerOption{
		grpc.ForceServerCodecV2(codec{proto: encoding.GetCodecV2("proto")}),
		grpc.MaxRecvMsgSize(maxMessageBytes(headerLimit(maxHeaderBytes))),
		grpc.MaxHeaderListSize(maxGRPCHeaderListBytes),
	}
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
	in := &checkInput{maxHeaderBytes: s.maxHeaderBytes}
	if err := dec(in); err != nil {
		return nil, err
	}
	if interceptor == nil {
		return s.checkDecoded(ctx, in), nil
	}
	info := &grpc.UnaryServerInfo{Server: srv, FullMethod: "/envoy.service.auth.v3.Authorization/Check"}
	return interceptor(ctx, in, info, func(ctx context.Context, req any) (any, error) {
		return s.checkDecoded(ctx, req.(*checkInput)), nil
	})
}

func (s *Service) checkDecoded(ctx context.Context, in *checkInput) *authv3.CheckResponse {
	if in.over {
		return s.tooLarge(ctx, &in.req)
	}
	return s.check(ctx, &in.req)
}
