package server

import (
	"net/http"
	"time"
)

// Timeouts bound how long a connection to the HTTP or admin listener may
// hold the server without a whole request: nobody keeps a goroutine and its
// buffers by connecting and waiting, or by sending slowly.
type Timeouts struct {
	// ReadHeader: from a request's first byte to its last header
	// (default 5s; a new connection that sends nothing is closed then too).
	ReadHeader time.Duration
	// Read: the whole request, body included, which is read (and
	// discarded) after the check (default 30s). A check still running then
	// is canceled.
	Read time.Duration
	// Idle: a kept-alive connection between requests (default 2m).
	Idle time.Duration
}

// DefaultMaxHeaderBytes bounds a request's head on the HTTP listener
// (request line and headers; net/http allows 4 KiB more). Envoy's own
// default, max_request_headers_kb, is 60.
const DefaultMaxHeaderBytes = 60 << 10

func (t Timeouts) withDefaults() Timeouts {
	if t.ReadHeader <= 0 {
		t.ReadHeader = 5 * time.Second
	}
	if t.Read <= 0 {
		t.Read = max(30*time.Second, t.ReadHeader)
	}
	if t.Idle <= 0 {
		t.Idle = 2 * time.Minute
	}
	return t
}

// httpServer is an http.Server with the listeners' bounds.
func httpServer(h http.Handler, t Timeouts, maxHeaderBytes int) *http.Server {
	t = t.withDefaults()
	if maxHeaderBytes <= 0 {
		maxHeaderBytes = DefaultMaxHeaderBytes
	}
	return &http.Server{
		Handler: h, MaxHeaderBytes: maxHeaderBytes,
		ReadHeaderTimeout: t.ReadHeader, ReadTimeout: t.Read, IdleTimeout: t.Idle,
	}
}
