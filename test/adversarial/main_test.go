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
	"context"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

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
    { "source": "^/deleteonly/", "httpMethods": ["DELETE"], "scope": "Admin", "csrfProtection": false, "destination": "backend" },
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
