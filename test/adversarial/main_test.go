// Package adversarial_test attacks the real extauthz binary as an attacker
// would: over Envoy's gRPC and HTTP ext_authz protocols, and through the
// real nginx with the shipped configuration. Each class of issue 11 has a
// table of many spellings; each test asserts what an attacker would check
// (status, headers, whether a Bearer token was granted, Redis DBSIZE,
// /metrics series, outbound fetches, RSS).
//
// It uses a real redis-server, a real Ory Hydra (bin/hydra, built by the
// harness) and nginx. Without them it skips locally, and fails when CI is set.
package adversarial_test

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	goredis "github.com/redis/go-redis/v9"
	"google.golang.org/grpc/status"

	"github.com/extauthz/extauthz/internal/e2e"
	"github.com/extauthz/extauthz/internal/redistest"
)

// app is the app's origin in most tests: a loopback host, which a
// single-tenant extauthz with no configured host serves.
const app = "https://localhost:8443"

// tenantApp is the known tenant's origin in multitenant mode.
const tenantApp = "https://tenant-a.app.localhost:8443"

// secret is the session secret of every instance (not a placeholder).
const secret = "adversarial-7f3c1e9a2b4d6f8e0a1c3e5f7b9d2f4a6c8e0b1d3f5a7c9e2b4d6f8a0c1e3f5b7d9"

var (
	extauthzBin string
	hydraBin    string
	workDir     string
	redisA      *redistest.Server // sessions of the shared instances
	redisB      *redistest.Server // measured: anonymous traffic must add nothing here
	hydra       *e2e.Hydra
	client      e2e.Client
	idpRouter   *countingRouter
	nginxPort   int
	xsAppFile   string
)

func TestMain(m *testing.M) { os.Exit(setup(m)) }

func ciRequired() bool { return os.Getenv("CI") != "" }

func setup(m *testing.M) int {
	if _, err := redistest.Binary(); err != nil {
		if ciRequired() {
			fmt.Fprintln(os.Stderr, "adversarial:", err, "(CI is set: a real Redis is required)")
			return 1
		}
		fmt.Fprintln(os.Stderr, "adversarial: skipped:", err)
		return 0
	}
	dir, err := os.MkdirTemp("", "extauthz-adv-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	workDir = dir
	fail := func(err error) int { fmt.Fprintln(os.Stderr, "adversarial setup:", err); return 1 }

	root, err := e2e.ModuleRoot()
	if err != nil {
		return fail(err)
	}
	if extauthzBin, err = e2e.BuildExtauthz(root, dir); err != nil {
		return fail(err)
	}
	hydraBin, err = e2e.BuildHydra(root, os.Stderr)
	if err != nil {
		return fail(err)
	}
	if redisA, err = redistest.Start(dir); err != nil {
		return fail(err)
	}
	defer redisA.Stop()
	if redisB, err = redistest.Start(dir); err != nil {
		return fail(err)
	}
	defer redisB.Stop()

	// One Hydra serves every test. It sits behind a router as the identity
	// zone of tenant "tenant-a" (router/tenant-a); every other path of the
	// router is an unknown tenant's zone: counted, and 404.
	if idpRouter, err = startCountingRouter(); err != nil {
		return fail(err)
	}
	defer idpRouter.Close()
	if hydra, err = e2e.StartHydra(hydraBin, dir, e2e.HydraOptions{Issuer: idpRouter.URL + "/tenant-a"}); err != nil {
		return fail(err)
	}
	defer hydra.Close()
	idpRouter.setHydra(hydra.ProxyURL)

	if nginxPort, err = redistest.FreePort(); err != nil {
		return fail(err)
	}
	if client, err = hydra.CreateClient(context.Background(),
		app, tenantApp, fmt.Sprintf("http://localhost:%d", nginxPort)); err != nil {
		return fail(err)
	}
	xsAppFile = filepath.Join(dir, "xs-app.json")
	if err := os.WriteFile(xsAppFile, []byte(xsApp), 0o644); err != nil {
		return fail(err)
	}
	return m.Run()
}

// xsApp: a public prefix, an admin prefix whose scope nobody has, a prefix
// whose scope Hydra grants (offline_access), scope objects with and without
// "default", a CSRF-protected API, and a default route.
const xsApp = `{
  "authenticationMethod": "route",
  "routes": [
    { "source": "^/public/", "authenticationType": "none", "destination": "backend" },
    { "source": "^/admin/", "scope": "Admin", "destination": "backend" },
    { "source": "^/offline/", "scope": "offline_access", "destination": "backend" },
    { "source": "^/getonly/", "scope": { "GET": "offline_access" }, "csrfProtection": false, "destination": "backend" },
    { "source": "^/viewer/", "scope": { "GET": "Viewer" }, "destination": "backend" },
    { "source": "^/withdefault/", "scope": { "GET": "Viewer", "default": "offline_access" }, "csrfProtection": false, "destination": "backend" },
    { "source": "^/api/", "csrfProtection": true, "destination": "backend" },
    { "source": "^/", "destination": "backend" }
  ]
}`

// countingRouter is the identity providers' host: /tenant-a/ is Hydra,
// every other /<tenant>/... is counted and answered 404.
type countingRouter struct {
	URL string
	srv *http.Server

	mu       sync.Mutex
	hydra    http.Handler
	byTenant map[string]int
	total    int
}

func startCountingRouter() (*countingRouter, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	r := &countingRouter{URL: "http://" + l.Addr().String(), byTenant: map[string]int{}}
	r.srv = &http.Server{Handler: r, ReadHeaderTimeout: 5 * time.Second}
	go r.srv.Serve(l)
	return r, nil
}

func (r *countingRouter) setHydra(proxyURL string) {
	target, _ := url.Parse(proxyURL)
	r.mu.Lock()
	r.hydra = http.StripPrefix("/tenant-a", httputil.NewSingleHostReverseProxy(target))
	r.mu.Unlock()
}

func (r *countingRouter) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	tn, _, _ := strings.Cut(strings.TrimPrefix(req.URL.Path, "/"), "/")
	r.mu.Lock()
	h := r.hydra
	if tn != "tenant-a" {
		r.byTenant[tn]++
		r.total++
	}
	r.mu.Unlock()
	if tn == "tenant-a" && h != nil {
		h.ServeHTTP(w, req)
		return
	}
	http.NotFound(w, req)
}

// fetches returns the outbound fetches for unknown tenants: in all, and for one.
func (r *countingRouter) fetches(tenant string) (total, one int) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.total, r.byTenant[tenant]
}

func (r *countingRouter) Close() { _ = r.srv.Close() }

// ---------------------------------------------------------------------------
// extauthz instances

type instance struct {
	*e2e.Extauthz
	logPath string
	env     map[string]string
}

// baseEnv is the environment of an instance: Redis A, Hydra as the single
// tenant's issuer, the test xs-app.json not included.
func baseEnv(prefix string) map[string]string {
	return map[string]string{
		"EXTAUTHZ_REDIS_URL":          "redis://" + redisA.Addr,
		"EXTAUTHZ_SESSION_KEY_PREFIX": prefix,
		"EXTAUTHZ_SESSION_SECRETS":    secret,
		"EXTAUTHZ_OIDC_ISSUER":        hydra.Issuer,
		"EXTAUTHZ_OIDC_CLIENT_ID":     client.ID,
		"EXTAUTHZ_OIDC_CLIENT_SECRET": client.Secret,
		"EXTAUTHZ_OIDC_SCOPES":        "openid offline_access",
		"EXTAUTHZ_LOG_LEVEL":          "debug",
		"EXTAUTHZ_LOG_FORMAT":         "text",
	}
}

// start runs an instance with baseEnv(prefix "adv-"+name) plus extra
// (key, value pairs; an empty value deletes the key). At the test's end it
// is killed and its log checked: no panic, no secret.
func start(t *testing.T, name string, extra ...string) *instance {
	t.Helper()
	env := baseEnv("adv-" + name)
	for i := 0; i+1 < len(extra); i += 2 {
		if extra[i+1] == "" {
			delete(env, extra[i])
		} else {
			env[extra[i]] = extra[i+1]
		}
	}
	logPath := filepath.Join(t.TempDir(), name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	x, err := e2e.StartExtauthz(name, extauthzBin, env, f)
	if err != nil {
		f.Close()
		t.Fatalf("%v\n%s", err, readFile(logPath))
	}
	in := &instance{Extauthz: x, logPath: logPath, env: env}
	t.Cleanup(func() {
		alive := in.alive()
		x.Close()
		f.Close()
		log := readFile(logPath)
		if !alive {
			t.Errorf("%s: the process died during the test", name)
		}
		for _, bad := range []string{"panic", "fatal error", "DATA RACE"} {
			if strings.Contains(log, bad) {
				t.Errorf("%s's log contains %q", name, bad)
			}
		}
		for _, s := range []string{client.Secret, secret, "ory_at_", "ory_rt_", "eyJ"} {
			if strings.Contains(log, s) {
				t.Errorf("%s's log contains the secret %q", name, s)
			}
		}
		if t.Failed() {
			if len(log) > 6000 {
				log = "...\n" + log[len(log)-6000:]
			}
			t.Logf("%s log:\n%s", name, log)
		}
	})
	return in
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

// alive says whether the process runs and answers /healthz.
func (in *instance) alive() bool {
	pid, err := in.PID()
	if err != nil {
		return false
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
		return false
	}
	st, _, err := in.Admin("/healthz")
	return err == nil && st == 200
}

// requireAlive fails the test when the process died or its log shows a panic.
func (in *instance) requireAlive(t *testing.T) {
	t.Helper()
	if !in.alive() {
		t.Fatalf("%s is no longer alive (log tail: %s)", in.Name, tail(readFile(in.logPath), 2000))
	}
	if strings.Contains(readFile(in.logPath), "panic") {
		t.Fatalf("%s logged a panic", in.Name)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// memory returns the child's VmRSS and VmHWM (peak RSS) in KiB.
func (in *instance) memory(t *testing.T) (rss, peak int) {
	t.Helper()
	pid, err := in.PID()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ":")
		n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		switch k {
		case "VmRSS":
			rss = n
		case "VmHWM":
			peak = n
		}
	}
	return rss, peak
}

// checkSeries returns the extauthz_checks_total series on /metrics.
func (in *instance) checkSeries(t *testing.T) []string {
	t.Helper()
	st, body, err := in.Admin("/metrics")
	if err != nil || st != 200 {
		t.Fatalf("/metrics: %d %v", st, err)
	}
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, "extauthz_checks_total{") {
			out = append(out, l)
		}
	}
	return out
}

// dbsize is the number of keys in a Redis.
func dbsize(t *testing.T, addr string) int64 {
	t.Helper()
	c := goredis.NewClient(&goredis.Options{Addr: addr})
	defer c.Close()
	n, err := c.DBSize(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

// ---------------------------------------------------------------------------
// Envoy's two protocols

// hreq is a request as the client sent it to the proxy.
type hreq struct {
	Method, Host, Path string
	Scheme             string // default https
	H                  [][2]string
	// Authority, when set, is the gRPC :authority header instead of Host
	// (Host stays the attributes' host).
	Authority string
	// RawHeaders: gRPC header_map with raw_value (Envoy's
	// encode_raw_headers), repeated headers as separate entries.
	RawHeaders bool
}

func (q hreq) with(kv ...string) hreq {
	q.H = slices.Clone(q.H)
	for i := 0; i+1 < len(kv); i += 2 {
		q.H = append(q.H, [2]string{kv[i], kv[i+1]})
	}
	return q
}

// hres is what the proxy would do with the request.
type hres struct {
	Status  int
	Allowed bool
	Header  http.Header // to the client (denied response, or response headers on allow)
	Up      http.Header // set on the upstream request (allow only)
	Body    string
	Err     error // transport error, or the gRPC status
	Took    time.Duration
}

// Bearer is the token granted to the upstream, "" when none.
func (r hres) Bearer() string {
	if r.Up == nil {
		return ""
	}
	tok, ok := strings.CutPrefix(r.Up.Get("authorization"), "Bearer ")
	if !ok {
		return ""
	}
	return tok
}

func (r hres) String() string {
	if r.Err != nil {
		return fmt.Sprintf("error %v", r.Err)
	}
	loc := r.Header.Get("location")
	if len(loc) > 80 {
		loc = loc[:80] + "..."
	}
	s := fmt.Sprintf("%d allowed=%v bearer=%v", r.Status, r.Allowed, r.Bearer() != "")
	if loc != "" {
		s += " location=" + loc
	}
	if b := strings.TrimSpace(r.Body); b != "" && !r.Allowed {
		if len(b) > 100 {
			b = b[:100] + "..."
		}
		s += fmt.Sprintf(" body=%q", b)
	}
	return s
}

type protocol struct {
	name string
	do   func(*instance, hreq) hres
}

var protocols = []protocol{{"grpc", viaGRPC}, {"http", viaHTTP}}

func joinSep(k string) string {
	if k == "cookie" {
		return "; "
	}
	return ","
}

func checkRequest(q hreq) *authv3.CheckRequest {
	scheme := q.Scheme
	if scheme == "" {
		scheme = "https"
	}
	h := &authv3.AttributeContext_HttpRequest{Method: q.Method, Host: q.Host, Path: q.Path, Scheme: scheme, Protocol: "HTTP/1.1"}
	authority := q.Host
	if q.Authority != "" {
		authority = q.Authority
	}
	pseudo := [][2]string{{":authority", authority}, {":method", q.Method}, {":path", q.Path}, {":scheme", scheme}}
	if q.RawHeaders {
		h.HeaderMap = &corev3.HeaderMap{}
		for _, kv := range append(pseudo, q.H...) {
			h.HeaderMap.Headers = append(h.HeaderMap.Headers, &corev3.HeaderValue{Key: strings.ToLower(kv[0]), RawValue: []byte(kv[1])})
		}
	} else {
		// Repeated headers joined as Envoy does (in linear time).
		joined := map[string]*strings.Builder{}
		for _, kv := range append(pseudo, q.H...) {
			k := strings.ToLower(kv[0])
			if b, ok := joined[k]; ok {
				b.WriteString(joinSep(k))
				b.WriteString(kv[1])
			} else {
				b = &strings.Builder{}
				b.WriteString(kv[1])
				joined[k] = b
			}
		}
		h.Headers = make(map[string]string, len(joined))
		for k, b := range joined {
			h.Headers[k] = b.String()
		}
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{Http: h}}}
}

// viaGRPC asks as Envoy's gRPC ext_authz filter does, and applies the
// CheckResponse as Envoy does.
func viaGRPC(x *instance, q hreq) hres {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	req := checkRequest(q)
	t0 := time.Now()
	resp, err := x.Check(ctx, req)
	out := fromCheckResponse(resp, err)
	out.Took = time.Since(t0)
	return out
}

func fromCheckResponse(resp *authv3.CheckResponse, err error) hres {
	out := hres{Header: http.Header{}}
	if err != nil {
		// Envoy with failure_mode_allow: false answers 403 (status_on_error).
		out.Status, out.Err = http.StatusForbidden, err
		if st, ok := status.FromError(err); ok {
			out.Err = fmt.Errorf("grpc %s: %s", st.Code(), st.Message())
		}
		return out
	}
	if resp.GetStatus().GetCode() == 0 && resp.GetDeniedResponse() == nil {
		out.Allowed, out.Status, out.Up = true, 200, http.Header{}
		ok := resp.GetOkResponse()
		for _, h := range ok.GetHeaders() {
			out.Up.Set(h.GetHeader().GetKey(), h.GetHeader().GetValue())
		}
		for _, h := range ok.GetResponseHeadersToAdd() {
			out.Header.Add(h.GetHeader().GetKey(), h.GetHeader().GetValue())
		}
		return out
	}
	d := resp.GetDeniedResponse()
	out.Status = int(d.GetStatus().GetCode())
	if out.Status == 0 {
		out.Status = http.StatusForbidden
	}
	for _, h := range d.GetHeaders() {
		out.Header.Add(h.GetHeader().GetKey(), h.GetHeader().GetValue())
	}
	out.Body = d.GetBody()
	return out
}

// viaHTTP asks as Envoy's HTTP ext_authz filter does (and as nginx's
// auth_request would, without its marker): the request's method, path, Host
// and headers, byte for byte on a fresh connection.
func viaHTTP(x *instance, q hreq) hres { return rawHTTP(x.HTTPAddr, q) }

func rawHTTP(addr string, q hreq) hres {
	t0 := time.Now()
	out := hres{Header: http.Header{}}
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		out.Err = err
		return out
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\n", q.Method, q.Path, q.Host)
	for _, kv := range q.H {
		fmt.Fprintf(&b, "%s: %s\r\n", kv[0], kv[1])
	}
	b.WriteString("Connection: close\r\n\r\n")
	if _, err := c.Write(b.Bytes()); err != nil {
		// The server may answer and close before reading everything.
		out.Err = err
	}
	resp, err := http.ReadResponse(bufio.NewReader(c), &http.Request{Method: q.Method})
	if err != nil {
		if out.Err == nil {
			out.Err = err
		}
		out.Status = 0
		return out
	}
	out.Err = nil
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	out.Status, out.Header, out.Body, out.Took = resp.StatusCode, resp.Header, string(body), time.Since(t0)
	if resp.StatusCode == 200 {
		out.Allowed, out.Up = true, resp.Header
	}
	return out
}

// ---------------------------------------------------------------------------
// sessions

// login logs a new browser in at x (app's host, over gRPC) and returns it
// with its session cookie.
func login(t *testing.T, x *instance, user string) (*e2e.Browser, string) {
	t.Helper()
	return loginAt(t, x, app, user)
}

// hydraMu serialises login flows: Hydra on its in-memory database fails
// some of several concurrent logins ("The error is unrecognizable").
var hydraMu sync.Mutex

func loginAt(t *testing.T, x *instance, origin, user string) (*e2e.Browser, string) {
	t.Helper()
	b := e2e.NewBrowser(user, x.Extauthz, hydra)
	hydraMu.Lock()
	resp, hops, err := b.Navigate(context.Background(), origin+"/home")
	hydraMu.Unlock()
	if err != nil {
		t.Fatalf("login: %v (hops %v)", err, hops)
	}
	if resp.Status != 200 || resp.Upstream == nil || !strings.HasPrefix(resp.Upstream.Get("authorization"), "Bearer ") {
		t.Fatalf("login ended with %d %q (hops %v)", resp.Status, resp.Body, hops)
	}
	c := b.Cookie(origin, "JSESSIONID")
	if c == "" {
		t.Fatal("no session cookie after login")
	}
	return b, c
}

// ajax is a script's GET with a session cookie (no redirects).
func ajax(path, cookie string) hreq {
	q := hreq{Method: "GET", Host: "localhost:8443", Path: path, H: [][2]string{{"x-requested-with", "XMLHttpRequest"}}}
	if cookie != "" {
		q.H = append(q.H, [2]string{"cookie", "JSESSIONID=" + cookie})
	}
	return q
}

// navigation is a browser's top-level GET without cookies.
func navigation(host, path string) hreq {
	return hreq{Method: "GET", Host: host, Path: path, H: [][2]string{{"sec-fetch-mode", "navigate"}, {"accept", "text/html"}}}
}

// csrfToken fetches the session's CSRF token.
func csrfToken(t *testing.T, x *instance, cookie string) string {
	t.Helper()
	r := viaGRPC(x, ajax("/home", cookie).with("x-csrf-token", "Fetch"))
	tok := r.Header.Get("x-csrf-token")
	if r.Status != 200 || tok == "" {
		t.Fatalf("CSRF fetch: %s", r)
	}
	return tok
}

// clearsCookie says whether a response deletes the cookie called name.
func clearsCookie(h http.Header, name string) bool {
	for _, sc := range h.Values("set-cookie") {
		c, err := http.ParseSetCookie(sc)
		if err != nil || c.Name != name {
			continue
		}
		if c.Value == "" || c.MaxAge < 0 || (!c.Expires.IsZero() && c.Expires.Before(time.Now())) {
			return true
		}
	}
	return false
}

// setsCookie says whether a response sets the (non-empty) cookie called name.
func setsCookie(h http.Header, name string) bool {
	for _, sc := range h.Values("set-cookie") {
		c, err := http.ParseSetCookie(sc)
		if err == nil && c.Name == name && c.Value != "" && c.MaxAge >= 0 {
			return true
		}
	}
	return false
}

var reRedirectURI = regexp.MustCompile(`[?&]redirect_uri=([^&]*)`)

// redirectURI is the redirect_uri of a login redirect's location.
func redirectURI(loc string) (*url.URL, error) {
	m := reRedirectURI.FindStringSubmatch(loc)
	if m == nil {
		return nil, fmt.Errorf("no redirect_uri in %q", loc)
	}
	s, err := url.QueryUnescape(m[1])
	if err != nil {
		return nil, err
	}
	return url.Parse(s)
}
