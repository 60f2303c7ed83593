package envoy

import (
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/extauthz/extauthz/pkg/authz"
)

// HTTPHandler serves Envoy's HTTP ext_authz protocol (http_service; Istio's
// envoyExtAuthzHttp, the kind Kyma's Istio offers) and nginx's auth_request.
//
// Every request is a check of the request it describes: method, Host, path
// and headers. Allowed: 200, with the headers for the upstream request
// (authorization, cookie) as response headers, and
// x-envoy-auth-headers-to-remove naming the headers Envoy must drop. Denied:
// the decision's status, headers and body, which the proxy returns to the
// browser.
//
// nginx: auth_request sends a GET subrequest and understands only 2xx, 401
// and 403. The nginx configuration marks its subrequest with
// "X-Extauthz-Subrequest: nginx" and passes the original method in
// X-Original-Method; such a subrequest gets 401 for every denial but 403, and
// nginx's error_page 401 then proxies the original request to this listener
// directly, which answers it in full (the redirect to the login, 503, ...).
type HTTPHandler struct {
	engine     Engine
	obs        Observer
	log        *slog.Logger
	pathPrefix string

	maxHeaderBytes int
}

// NewHTTPHandler returns the handler. pathPrefix (Envoy's path_prefix) is
// cut from request paths; obs may be nil.
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

const subrequestHeader = "X-Extauthz-Subrequest"

func (h *HTTPHandler) ServeHTTP(w http.ResponseWriter, hr *http.Request) {
	start := time.Now()
	r, size := h.request(hr)
	if size > h.maxHeaderBytes {
		h.refuse(w, hr, r, headersTooLarge(), start)
		return
	}
	nginx := hr.Header.Get(subrequestHeader) == "nginx"
	if nginx {
		if m := hr.Header.Get("X-Original-Method"); m != "" {
			r.Method = m
		}
	}
	d := h.engine.Check(hr.Context(), r)
	observe(hr.Context(), h.obs, h.log, "http", r, d, start)
	out := w.Header()
	if d.Allow {
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
		return
	}
	if nginx && d.Status != http.StatusForbidden {
		// nginx turns anything but 401/403 into 500; its error_page 401
		// asks again without the subrequest marker and gets the full answer.
		w.WriteHeader(http.StatusUnauthorized)
		return
	}
	for _, hd := range d.Response {
		out.Add(hd.Name, hd.Value)
	}
	w.WriteHeader(d.Status)
	_, _ = w.Write([]byte(d.Body))
}

// request reads what the engine needs from the check request, and counts
// the bytes of its headers as Envoy does (pseudo-headers included).
func (h *HTTPHandler) request(hr *http.Request) (*authz.Request, int) {
	path := hr.URL.RequestURI()
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
	return r, size
}
