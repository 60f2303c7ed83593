package envoy

import (
	"context"
	"net/http"
	"strings"

	"github.com/extauthz/extauthz/pkg/authz"
)

// What one check may carry. Envoy refuses requests whose headers exceed
// max_request_headers_kb (60 KiB by default) before asking us, so a check
// over the limit comes from a proxy configured otherwise, or from a client
// that reaches this listener directly. Either way it is answered at once
// with 431, from the headers counted while they are read: the rest of the
// request is not read and the engine is not asked.

// DefaultMaxHeaderBytes is the default limit of the names and values of a
// check's headers, summed: Envoy's own default max_request_headers_kb.
const DefaultMaxHeaderBytes = 60 << 10

const (
	// maxBodyBytes is what a gRPC CheckRequest may carry beyond its
	// headers for a body: the most extauthz reads of one (the back-channel
	// logout's form; the shipped configurations send it with
	// with_request_body max_request_bytes 65536, on that route only). A
	// larger CheckRequest fails with RESOURCE_EXHAUSTED before it is read
	// (Envoy then applies status_on_error): each call in flight may hold a
	// buffer of the size its message declares.
	maxBodyBytes = authz.MaxBodyBytes
	// maxAttributeBytes is the room for the rest of a CheckRequest: peers,
	// certificates, metadata, context extensions.
	maxAttributeBytes = 64 << 10
	// maxGRPCHeaderListBytes bounds the gRPC call's own HTTP/2 headers
	// (Envoy's grpc_service metadata), not the checked request's.
	maxGRPCHeaderListBytes = 64 << 10
)

// maxMessageBytes is the largest CheckRequest accepted with a header limit.
func maxMessageBytes(maxHeaderBytes int) int {
	return maxHeaderBytes + maxBodyBytes + maxAttributeBytes
}

func headerLimit(n int) int {
	if n <= 0 {
		return DefaultMaxHeaderBytes
	}
	return n
}

// headersTooLarge is the answer to a check whose headers exceed the limit.
func headersTooLarge() *authz.Decision {
	return &authz.Decision{
		Status: http.StatusRequestHeaderFieldsTooLarge, Reason: authz.ReasonHeadersTooLarge,
		Body:     "Request header fields too large.\n",
		Response: []authz.Header{{Name: "content-type", Value: "text/plain; charset=utf-8"}, {Name: "cache-control", Value: "no-store"}},
	}
}

// wantedName says whether the engine reads a header, whatever the case of
// its name, and returns the name as the engine spells it (lower case, as
// strings.ToLower would make it).
func wantedName[T string | []byte](name T) (string, bool) {
	ascii := true
	for _, h := range authz.RequestHeaders {
		if len(name) == len(h) && asciiEqualFold(name, h) {
			return h, true
		}
	}
	for i := 0; i < len(name); i++ {
		if name[i] >= 0x80 {
			ascii = false
			break
		}
	}
	if ascii {
		return "", false
	}
	// Unicode case folding can turn a longer name into one the engine
	// reads (U+212A KELVIN SIGN lowers to "k").
	lower := strings.ToLower(string(name))
	for _, h := range authz.RequestHeaders {
		if lower == h {
			return h, true
		}
	}
	return "", false
}

// asciiEqualFold compares a name with a lower-case ASCII one.
func asciiEqualFold[T string | []byte](name T, lower string) bool {
	for i := 0; i < len(lower); i++ {
		c := name[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// joiner builds the headers the engine reads, joining a repeated header as
// Envoy does (cookies with "; ", others with ",") in time linear in the
// request's size: the parts of a repeated header are kept and joined once.
// The common case, no repeated header, allocates nothing more.
type joiner struct {
	headers map[string]string
	parts   map[string][]string // headers seen more than once
}

// add adds the value of a wanted header (name as wantedName returns it).
func (j *joiner) add(name, v string) {
	prev, ok := j.headers[name]
	if !ok {
		j.headers[name] = v
		return
	}
	if j.parts == nil {
		j.parts = make(map[string][]string, 1)
	}
	p, ok := j.parts[name]
	if !ok {
		p = []string{prev}
	}
	j.parts[name] = append(p, v)
}

// done joins the repeated headers.
func (j *joiner) done() {
	for name, p := range j.parts {
		sep := ","
		if name == "cookie" {
			sep = "; "
		}
		j.headers[name] = strings.Join(p, sep)
	}
	j.parts = nil
}

// check asks the engine about a request whose headers are within the
// limit, and answers 431 itself otherwise; traced, it returns the context
// of the check's span (for the decision's log line).
func (h *HTTPHandler) check(hr *http.Request, r *authz.Request, headerBytes int, proto string) (*authz.Decision, context.Context) {
	var hdr func(string) string
	if h.tracer != nil { // a method value costs an allocation: only when tracing
		hdr = hr.Header.Get
	}
	return decide(hr.Context(), h.engine, h.tracer, proto, hdr, r, headerBytes > h.maxHeaderBytes)
}
