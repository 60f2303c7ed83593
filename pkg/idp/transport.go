package idp

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"golang.org/x/time/rate"
)

// DefaultRetryAfter is how long a failed discovery or key fetch is
// remembered: a provider that is down, or a tenant it does not know, is not
// asked again by every request meanwhile, and a provider back up is used
// again within seconds (a user retrying a login barely notices).
const DefaultRetryAfter = 10 * time.Second

// go-oidc fetches the key set again on every signature it cannot verify, so
// anyone posting forged logout tokens (no session needed) would make one key
// fetch each. Fetches of a URL that answered are limited: refetchBurst at
// once (a key rotation is still seen at once), then one every refetchEvery;
// in between the last answer is reused.
const (
	refetchEvery = 5 * time.Second
	refetchBurst = 3
)

// maxResponseBytes bounds what is read of any answer of a provider
// (discovery documents, key sets and token responses are a few KiB).
const maxResponseBytes = 1 << 20

// ErrNoSuchIssuer: the issuer's host does not resolve, or its discovery
// document is not found (404, 410): a tenant the provider does not know,
// not a provider that is down.
var ErrNoSuchIssuer = errors.New("no such issuer")

// discoveryPath ends the URL of an issuer's discovery document.
const discoveryPath = "/.well-known/openid-configuration"

// guardTransport is a provider's HTTP transport. A GET (discovery, keys)
// that failed — no answer, or an answer other than 200 — fails again from
// memory for retryAfter, without a request; token requests (POST) are
// never answered from memory. Answers are read up to maxResponseBytes.
type guardTransport struct {
	next       http.RoundTripper
	retryAfter time.Duration
	now        func() time.Time

	mu     sync.Mutex
	failed map[string]failedGet // URL -> failure; a provider GETs two or three URLs
	fresh  map[string]freshGet  // URL -> a successful answer younger than minRefetch
}

type freshGet struct {
	header http.Header
	body   []byte
	lim    *rate.Limiter
}

type failedGet struct {
	err error
	at  time.Time
}

// maxFailedGets bounds the failures remembered by one transport.
const maxFailedGets = 16

// guardClient returns a copy of c whose transport is guarded.
func guardClient(c *http.Client, retryAfter time.Duration, now func() time.Time) *http.Client {
	next := c.Transport
	if next == nil {
		next = http.DefaultTransport
	}
	if _, ok := next.(*guardTransport); ok {
		return c
	}
	if retryAfter <= 0 {
		retryAfter = DefaultRetryAfter
	}
	g := *c
	g.Transport = &guardTransport{next: next, retryAfter: retryAfter, now: now, failed: map[string]failedGet{}, fresh: map[string]freshGet{}}
	return &g
}

func (t *guardTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	get := req.Method == http.MethodGet
	key := req.URL.String()
	if get {
		t.mu.Lock()
		f, failed := t.failed[key]
		ok, fresh := t.fresh[key]
		t.mu.Unlock()
		if failed && t.now().Sub(f.at) < t.retryAfter {
			return nil, fmt.Errorf("%s failed %v ago, not asked again before %v: %w",
				req.URL.Redacted(), t.now().Sub(f.at).Round(time.Millisecond), t.retryAfter, f.err)
		}
		if fresh && !ok.lim.AllowN(t.now(), 1) {
			return &http.Response{Status: "200 OK", StatusCode: http.StatusOK, Proto: "HTTP/1.1", ProtoMajor: 1, ProtoMinor: 1,
				Header: ok.header.Clone(), Body: io.NopCloser(bytes.NewReader(ok.body)), ContentLength: int64(len(ok.body)), Request: req}, nil
		}
	}
	resp, err := t.next.RoundTrip(req)
	if get && strings.HasSuffix(req.URL.Path, discoveryPath) {
		// An issuer that does not exist: its host is unknown, or it has no
		// discovery document (a tenant its provider does not know).
		var dns *net.DNSError
		switch {
		case err != nil && errors.As(err, &dns) && dns.IsNotFound:
			err = fmt.Errorf("%w: %w", ErrNoSuchIssuer, err)
		case err == nil && (resp.StatusCode == http.StatusNotFound || resp.StatusCode == http.StatusGone):
			resp.Body.Close()
			resp, err = nil, fmt.Errorf("%w: %s answered %s", ErrNoSuchIssuer, req.URL.Redacted(), resp.Status)
		}
	}
	if get {
		switch {
		case err != nil:
			t.remember(key, err)
		case resp.StatusCode != http.StatusOK:
			t.remember(key, fmt.Errorf("answered %s", resp.Status))
		default:
			t.forget(key)
			body, rerr := io.ReadAll(&limitedBody{r: io.LimitReader(resp.Body, maxResponseBytes+1), c: resp.Body})
			resp.Body.Close()
			if rerr != nil {
				return nil, rerr
			}
			t.keep(key, resp.Header, body)
			resp.Body = io.NopCloser(bytes.NewReader(body))
			return resp, nil
		}
	}
	if err != nil {
		return nil, err
	}
	resp.Body = &limitedBody{r: io.LimitReader(resp.Body, maxResponseBytes+1), c: resp.Body}
	return resp, nil
}

func (t *guardTransport) keep(key string, h http.Header, body []byte) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.fresh) >= maxFailedGets {
		clear(t.fresh)
	}
	lim := rate.NewLimiter(rate.Every(refetchEvery), refetchBurst)
	if f, ok := t.fresh[key]; ok {
		lim = f.lim
	}
	t.fresh[key] = freshGet{header: h.Clone(), body: body, lim: lim}
}

func (t *guardTransport) remember(key string, err error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(t.failed) >= maxFailedGets {
		clear(t.failed)
	}
	t.failed[key] = failedGet{err: err, at: t.now()}
}

func (t *guardTransport) forget(key string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	delete(t.failed, key)
}

var errResponseTooLarge = errors.New("identity provider answer over 1 MiB")

// limitedBody fails a read past maxResponseBytes.
type limitedBody struct {
	r io.Reader
	c io.Closer
	n int64
}

func (b *limitedBody) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	b.n += int64(n)
	if b.n > maxResponseBytes {
		return 0, errResponseTooLarge
	}
	return n, err
}

func (b *limitedBody) Close() error { return b.c.Close() }
