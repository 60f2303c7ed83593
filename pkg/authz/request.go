package authz

// Request is what the engine needs to know about one HTTP request.
type Request struct {
	Method string
	// Scheme of the request as the proxy received it ("http" or "https").
	Scheme string
	// Host is the :authority / Host header, as sent.
	Host string
	// Path is the request target: path and query, as sent. The engine reads
	// it once, into its canonical form (see canonicalPath).
	Path string
	// Headers with lower-case names; repeated headers joined as the proxy does.
	Headers map[string]string
	// Verbatim: the upstream receives the path as sent, not normalised by
	// a proxy (nginx): a path that is not already canonical is refused
	// rather than resolved, since the app may resolve it differently.
	Verbatim bool
	// Body is the request body when the proxy sent it (Envoy's
	// with_request_body, at most MaxBodyBytes): only the back-channel
	// logout endpoint reads it.
	Body []byte
	// ClientAddr is the address of the client as the proxy saw it (Envoy's
	// source address), for the audit log; "" when unknown.
	ClientAddr string
}

// MaxBodyBytes is the most of a request body the adapters hand the engine
// (a logout token is a few KB); a longer body is not handed over.
const MaxBodyBytes = 64 << 10

// RequestHeaders are the request headers the engine reads (lower-case).
// Adapters may drop every other header; Envoy's allowed_headers must let
// these through.
var RequestHeaders = []string{
	":authority", ":method", ":path", ":scheme",
	"cookie", "x-forwarded-proto", "x-forwarded-host", "x-requested-with", "sec-fetch-mode", "sec-fetch-site", "x-csrf-token",
	"x-request-id", "x-forwarded-for", "x-http-method-override", "x-http-method", "x-method-override",
}

// Header is one HTTP header.
type Header struct{ Name, Value string }

// Decision says what to do with a request.
type Decision struct {
	// Allow: forward upstream. Otherwise answer the client with Status.
	Allow  bool
	Status int
	// Reason is why: a fixed label for metrics and logs.
	Reason Reason
	// Upstream headers to set and to remove (Allow only).
	Upstream []Header
	Remove   []string
	// Response headers: added to the upstream's response on Allow, or sent
	// with the denied response. set-cookie may appear more than once.
	Response []Header
	// Body of a denied response.
	Body string
	// Tenant the request was resolved to ("" in single-tenant mode).
	Tenant string
	// TenantVerified: the tenant is proven, not only named by the host: a
	// session of this tenant was opened, or a login on it completed.
	// Anything keyed by tenant (metric labels) keys only verified tenants.
	TenantVerified bool
}
