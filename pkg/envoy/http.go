package envoy

import (
	"cmp"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/extauthz/extauthz/pkg/authz"
)

// HTTPHandler serves Envoy's HTTP ext_authz protocol (http_service; Istio's
// envoyExtAuthzHttp, the kind Kyma's Istio offers), or, built with
// NewNginxHandler, nginx's auth_request on a listener of its own.
//
// Every request is a check of the request it describes: method, Host, path
// and headers. Allowed: 200, with the headers for the upstream request
// (authorization, cookie) as response headers, and
// x-envoy-auth-headers-to-remove naming the headers Envoy must drop. Denied:
// the decision's status, headers and body, which the proxy returns to the
// browser.
//
// The Envoy protocol reads no header of its own: X-Extauthz-Subrequest and
// X-Original-Method are headers like any other there, so a client cannot
// change the method the engine decides on.
type HTTPHandler struct {
	engine     Engine
	obs        Observer
	log        *slog.Logger
	pathPrefix string
	nginx      bool
	tracer     Tracer // nil: off

	maxHeaderBytes int
}

// NewHTTPHandler returns the handler of Envoy's HTTP protocol. pathPrefix
// (Envoy's path_prefix) is cut from request paths; obs may be nil.
func NewHTTPHandler(engine Engine, obs Observer, log *slog.Logger, pathPrefix string) *HTTPHandler {
	return &HTTPHandler{engine: engine, obs: obs, log: log, pathPrefix: strings.TrimSuffix(pathPrefix, "/"), maxHeaderBytes: DefaultMaxHeaderBytes}
}

// LimitHeaderBytes sets the most bytes of header names and values one check
// may carry (0: DefaultMaxHeaderBytes); a check over it gets 431. The
// http.Server's MaxHeaderBytes should be the same, so that larger requests
// are refused (431 too) before they are read whole.
func (h *HTTPHandler) LimitHeaderBytes(n int) *HTTPHandler {
	h.maxHeaderBytes = headerLimit(n)
	return h
}

// Trace traces every check with t (nil: off).
func (h *HTTPHandler) Trace(t Tracer) *HTTPHandler {
	h.tracer = t
	return h
}

// NewNginxHandler returns the handler of nginx's auth_request protocol. It
// belongs on a listener that only nginx reaches (--nginx-addr), because it
// trusts two headers that nginx's configuration sets on every request it
// sends, overriding what the client sent:
//
//   - "X-Extauthz-Subrequest: nginx" marks auth_request's subrequest, a GET
//     that stands for the original request: X-Original-Method carries the
//     original method. nginx understands only 2xx, 401 and 403 there, so
//     every denial but 403 becomes 401; nginx's error_page 401 then proxies
//     the original request to this listener unmarked.
//   - An unmarked request (that error_page fallback, the login callback,
//     logout) gets the full answer — the redirect to the login, 401, 503 —
//     which nginx returns to the browser as it is. So it never carries the
//     headers meant for the upstream (see retryAllowed).
func NewNginxHandler(engine Engine, obs Observer, log *slog.Logger) *HTTPHandler {
	return &HTTPHandler{engine: engine, obs: obs, log: log, nginx: true, maxHeaderBytes: DefaultMaxHeaderBytes}
}

const (
	subrequestHeader     = "X-Extauthz-Subrequest"
	originalMethodHeader = "X-Original-Method"
)

func (h *HTTPHandler) ServeHTTP(w http.ResponseWriter, hr *http.Request) {
	if h.nginx {
		h.serveNginx(w, hr)
		return
	}
	start := time.Now()
	r, size := h.request(hr)
	d, ctx := h.check(hr, r, size, "http")
	observe(ctx, h.obs, h.log, "http", r, d, start)
	if d.Allow {
		writeAllowed(w, d)
		return
	}
	writeDenied(w, d)
}

func (h *HTTPHandler) serveNginx(w http.ResponseWriter, hr *http.Request) {
	start := time.Now()
	r, size := h.request(hr)
	// nginx hands the app the request target as the browser sent it: no
	// proxy normalised it, so only a target already in canonical form is
	// decided on (the app may not resolve "..", "//" or escapes as the
	// engine does).
	r.Verbatim = true
	sub := hr.Header.Get(subrequestHeader) == "nginx"
	if sub {
		m := hr.Header.Get(originalMethodHeader)
		if m == "" {
			// Not nginx as deploy/nginx configures it: refuse rather than
			// decide on the subrequest's own GET. nginx answers 500.
			h.log.Error("nginx subrequest without " + originalMethodHeader + ": set it in the nginx configuration (proxy_set_header " + originalMethodHeader + " $request_method)")
			w.WriteHeader(http.StatusInternalServerError)
			return
		}
		r.Method = m
	}
	d, ctx := h.check(hr, r, size, "nginx")
	observe(ctx, h.obs, h.log, "nginx", r, d, start)
	switch {
	case sub && d.Allow:
		// auth_request keeps the subrequest's answer from the browser; the
		// configuration copies authorization and cookie to the upstream.
		writeAllowed(w, d)
	case sub && d.Status != http.StatusForbidden:
		// nginx turns anything but 401/403 into 500; its error_page 401
		// asks again without the marker and gets the full answer.
		w.WriteHeader(http.StatusUnauthorized)
	case d.Allow:
		retryAllowed(w, hr, d)
	default:
		writeDenied(w, d)
	}
}

// retryAllowed answers an unmarked request that the engine allows. nginx
// returns this answer to the browser, so the allow's upstream headers
// (authorization with the access token, cookie, x-envoy-auth-headers-to-remove)
// must not be in it, and a 200 would show the browser an empty page instead
// of the app. This happens when the state changed between the subrequest's
// denial and the fallback (a login in another tab finished, the store came
// back, a refresh completed): a 307 to the same target makes the browser send
// the request again — same method and body — through auth_request, which
// now lets it through. Only the headers meant for the browser (set-cookie,
// x-csrf-token) go along.
func retryAllowed(w http.ResponseWriter, hr *http.Request, d *authz.Decision) {
	out := w.Header()
	for _, hd := range d.Response {
		out.Add(hd.Name, hd.Value)
	}
	// A relative reference that cannot name another host: "//evil.example/"
	// or "/\evil.example/" would, as Location, send the browser away.
	out.Set("Location", "/"+strings.TrimLeft(cmp.Or(hr.RequestURI, hr.URL.RequestURI()), "/\\"))
	out.Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusTemporaryRedirect)
}

// writeAllowed writes an allow as the HTTP protocol's 200: the upstream's
// headers, the headers to remove, and the browser's headers.
func writeAllowed(w http.ResponseWriter, d *authz.Decision) {
	out := w.Header()
	for _, hd := range d.Upstream {
		out.Set(hd.Name, hd.Value)
	}
	if len(d.Remove) > 0 {
		out.Set("x-envoy-auth-headers-to-remove", strings.Join(d.Remove, ","))
	}
	for _, hd := range d.Response {
		out.Add(hd.Name, hd.Value)
	}
	w.WriteHeader(http.StatusOK)
}

// writeDenied writes a denial as the browser is to see it.
func writeDenied(w http.ResponseWriter, d *authz.Decision) {
	out := w.Header()
	for _, hd := range d.Response {
		out.Add(hd.Name, hd.Value)
	}
	w.WriteHeader(d.Status)
	_, _ = w.Write([]byte(d.Body))
}

// request reads what the engine needs from the check request, and counts
// the bytes of its headers as Envoy does (pseudo-headers included).
func (h *HTTPHandler) request(hr *http.Request) (*authz.Request, int) {
	// The request target exactly as sent: net/http's URL.RequestURI()
	// re-escapes the decoded path when the raw one holds a byte it does not
	// keep raw, and "%2F" would come back as "/" (the engine refuses an
	// encoded slash; it must see it).
	path := hr.RequestURI
	if path == "" { // a request not read by a server (tests)
		path = hr.URL.RequestURI()
	}
	if h.pathPrefix != "" {
		if p, ok := strings.CutPrefix(path, h.pathPrefix); ok && (p == "" || p[0] == '/' || p[0] == '?') {
			path = p
		}
		if path == "" || path[0] == '?' {
			path = "/" + path
		}
	}
	r := &authz.Request{Method: hr.Method, Host: hr.Host, Path: path, Scheme: "http", Headers: make(map[string]string, 8)}
	if hr.TLS != nil {
		r.Scheme = "https"
	}
	size := len(":method") + len(hr.Method) + len(":path") + len(hr.RequestURI) + len(":authority") + len(hr.Host)
	j := joiner{headers: r.Headers}
	for k, vs := range hr.Header {
		name, ok := wantedName(k)
		for _, v := range vs {
			size += len(k) + len(v)
			if ok {
				j.add(name, v)
			}
		}
	}
	j.done()
	r.Body = readBody(hr)
	return r, size
}

// readBody reads a request's body, when it has one of at most
// authz.MaxBodyBytes (Envoy's with_request_body on the HTTP protocol, or the
// back-channel logout routed straight here); nil otherwise.
func readBody(hr *http.Request) []byte {
	if hr.Body == nil || hr.ContentLength == 0 || hr.ContentLength > authz.MaxBodyBytes {
		return nil
	}
	b, err := io.ReadAll(io.LimitReader(hr.Body, authz.MaxBodyBytes+1))
	if err != nil || len(b) == 0 || len(b) > authz.MaxBodyBytes {
		return nil
	}
	return b
}
