// Package browser_test runs extauthz end to end in a real browser: headless
// Chromium (Debian's chromium), driven with chromedp, through the shipped
// deploy/nginx configuration (a real nginx) to the real extauthz binary, a
// real redis-server, Ory Hydra with a login page a person could use
// (e2e.LoginApp), and a small app whose page calls its API with fetch().
// Host names are *.localhost (Chromium resolves them to loopback).
//
// Without chromium, nginx or redis-server the suite is skipped, or fails
// when CI is set (scripts/deps.sh installs them). Screenshots of the
// failed-login pages are kept with go test -artifacts.
package browser_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	goredis "github.com/redis/go-redis/v9"

	"github.com/extauthz/extauthz/internal/e2e"
	"github.com/extauthz/extauthz/internal/redistest"
)

var (
	root        string
	extauthzBin string
	nginxBin    string
	redis       *redistest.Server
	hydra       *e2e.Hydra
	loginURL    string // the login page's origin, http://login.localhost:<port>
	// browser is the one Chromium of the suite; each test opens its own
	// browser context (a profile of its own: cookies, cache, history).
	browser           context.Context
	certFile, keyFile string // the app's https certificate (nginx)
)

func TestMain(m *testing.M) { os.Exit(setup(m)) }

// required reports a missing program: a skip locally, a failure in CI.
func required(err error) int {
	if os.Getenv("CI") != "" {
		fmt.Fprintln(os.Stderr, "browser:", err, "(CI is set: it is required)")
		return 1
	}
	fmt.Fprintln(os.Stderr, "browser: skipped:", err)
	return 0
}

func setup(m *testing.M) int {
	if _, err := redistest.Binary(); err != nil {
		return required(err)
	}
	var err error
	if nginxBin, err = e2e.NginxBinary(); err != nil {
		return required(err)
	}
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		return required(errors.New("chromium not found (Debian: apt-get install -y chromium; make deps)"))
	}
	dir, err := os.MkdirTemp("", "extauthz-browser-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	defer os.RemoveAll(dir)
	fail := func(err error) int {
		fmt.Fprintln(os.Stderr, "browser setup:", err)
		return 1
	}
	if root, err = e2e.ModuleRoot(); err != nil {
		return fail(err)
	}
	if extauthzBin, err = e2e.BuildExtauthz(root, dir); err != nil {
		return fail(err)
	}
	hydraBin, err := e2e.BuildHydra(root, os.Stderr)
	if err != nil {
		return fail(err)
	}
	if redis, err = redistest.Start(dir); err != nil {
		return fail(err)
	}
	defer redis.Stop()

	// The login page: Hydra sends the browser there.
	login := &e2e.LoginApp{}
	ll, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return fail(err)
	}
	loginSrv := &http.Server{Handler: login, ReadHeaderTimeout: 5 * time.Second}
	go loginSrv.Serve(ll)
	defer loginSrv.Close()
	loginURL = fmt.Sprintf("http://login.localhost:%d", ll.Addr().(*net.TCPAddr).Port)
	if hydra, err = e2e.StartHydra(hydraBin, dir, e2e.HydraOptions{LoginURL: loginURL}); err != nil {
		return fail(err)
	}
	defer hydra.Close()
	login.SetHydra(hydra)

	spki, err := writeCert(dir)
	if err != nil {
		return fail(err)
	}
	chromeLog, err := os.Create(filepath.Join(dir, "chromium.log"))
	if err != nil {
		return fail(err)
	}
	alloc, cancelAlloc := chromedp.NewExecAllocator(context.Background(),
		chromedp.ExecPath(chromium),
		chromedp.Headless, chromedp.NoSandbox, chromedp.DisableGPU, chromedp.NoFirstRun, chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-breakpad", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("metrics-recording-only", true),
		chromedp.Flag("password-store", "basic"),
		// The app's https listener has the test's own certificate.
		chromedp.Flag("ignore-certificate-errors-spki-list", spki),
		chromedp.WindowSize(1000, 700),
		chromedp.UserDataDir(filepath.Join(dir, "chromium-profile")),
		chromedp.CombinedOutput(chromeLog),
	)
	defer cancelAlloc()
	var cancelBrowser context.CancelFunc
	browser, cancelBrowser = chromedp.NewContext(alloc)
	defer cancelBrowser()
	if err := chromedp.Do(browser); err != nil { // starts Chromium
		log, _ := os.ReadFile(chromeLog.Name())
		return fail(fmt.Errorf("start chromium: %w\n%s", err, log))
	}
	return m.Run()
}

// writeCert writes a self-signed certificate for app.localhost into dir
// (certFile, keyFile) and returns the base64 SHA-256 of its public key, for
// Chromium's --ignore-certificate-errors-spki-list.
func writeCert(dir string) (string, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return "", err
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "app.localhost"},
		DNSNames:  []string{"app.localhost"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		return "", err
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return "", err
	}
	certFile, keyFile = filepath.Join(dir, "app.crt"), filepath.Join(dir, "app.key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		return "", err
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		return "", err
	}
	pub, err := x509.MarshalPKIXPublicKey(&key.PublicKey)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(pub)
	return base64.StdEncoding.EncodeToString(sum[:]), nil
}

const secret = "browser-secret-browser-secret-browser-secret-browser-secret-browser-secret-"

// stack is one app behind nginx and extauthz, on the shared Redis and Hydra.
type stack struct {
	URL    string // http://app.localhost:<port> (https with TLS)
	X      *e2e.Extauthz
	prefix string
	redis  *goredis.Client
}

type stackOptions struct {
	TLS bool // nginx listens with TLS (the test's certificate)
	// Env is extauthz's environment on top of the stack's, name and value
	// pairs. SECURE_SESSION_COOKIE is extauthz's default (Secure) unless
	// set here.
	Env []string
}

func newStack(t *testing.T, o stackOptions) *stack {
	t.Helper()
	ctx := context.Background()
	dir := t.TempDir()
	appLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	appSrv := &http.Server{Handler: appHandler(), ReadHeaderTimeout: 5 * time.Second}
	go appSrv.Serve(appLis)
	t.Cleanup(func() { appSrv.Close() })

	port, err := redistest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	s := &stack{URL: fmt.Sprintf("http://app.localhost:%d", port), prefix: "browser-" + strings.ReplaceAll(t.Name(), "/", "-")}
	if o.TLS {
		s.URL = "https" + strings.TrimPrefix(s.URL, "http")
	}
	c, err := hydra.CreateClientSpec(ctx, e2e.ClientSpec{Name: "Orders app", AppURLs: []string{s.URL}, LogoutPaths: []string{"/", "/logged-out.html"}})
	if err != nil {
		t.Fatal(err)
	}
	xsapp := filepath.Join(dir, "xs-app.json")
	if err := os.WriteFile(xsapp, []byte(xsApp), 0o644); err != nil {
		t.Fatal(err)
	}
	env := map[string]string{
		"EXTAUTHZ_REDIS_URL":          "redis://" + redis.Addr,
		"EXTAUTHZ_SESSION_KEY_PREFIX": s.prefix,
		"EXTAUTHZ_SESSION_SECRETS":    secret,
		"EXTAUTHZ_OIDC_ISSUER":        hydra.Issuer,
		"EXTAUTHZ_OIDC_CLIENT_ID":     c.ID,
		"EXTAUTHZ_OIDC_CLIENT_SECRET": c.Secret,
		"EXTAUTHZ_OIDC_SCOPES":        "openid offline_access",
		"EXTAUTHZ_XS_APP":             xsapp,
		"EXTAUTHZ_LOG_LEVEL":          "debug",
		"EXTAUTHZ_LOG_FORMAT":         "text",
		"EXTAUTHZ_ADMIN_TOKEN":        adminToken,
	}
	if o.TLS {
		// nginx terminates TLS and tells extauthz the browser's scheme
		// (deploy/nginx sets X-Forwarded-Proto on every request to it): on
		// a loopback host extauthz otherwise builds its URLs (the redirect
		// URI) with the scheme it saw, http.
		env["EXTAUTHZ_TRUST_FORWARDED_PROTO"] = "true"
	}
	for i := 0; i+1 < len(o.Env); i += 2 {
		env[o.Env[i]] = o.Env[i+1]
	}
	logPath := filepath.Join(dir, "extauthz.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	x, err := e2e.StartExtauthz("extauthz", extauthzBin, env, logFile)
	if err != nil {
		b, _ := os.ReadFile(logPath)
		t.Fatalf("%v\n%s", err, b)
	}
	s.X = x
	t.Cleanup(func() {
		x.Close()
		logFile.Close()
		b, _ := os.ReadFile(logPath)
		if t.Failed() {
			t.Logf("extauthz log:\n%s", b)
		}
		for _, secret := range []string{c.Secret, secret, "ory_at_", "ory_rt_", "eyJ"} {
			if strings.Contains(string(b), secret) {
				t.Errorf("extauthz's log contains %q", secret)
			}
		}
	})
	no := e2e.NginxOptions{Port: port, ExtauthzAddr: x.NginxAddr, AppAddr: appLis.Addr().String()}
	if o.TLS {
		no.CertFile, no.KeyFile = certFile, keyFile
	}
	n, err := e2e.StartNginx(nginxBin, root, filepath.Join(dir, "nginx"), no)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		n.Close()
		if t.Failed() {
			t.Logf("nginx log:\n%s", n.Log())
		}
	})
	s.redis = goredis.NewClient(&goredis.Options{Addr: redis.Addr})
	t.Cleanup(func() { s.redis.Close() })
	return s
}

// sessionKeys are the session records of this stack in Redis.
func (s *stack) sessionKeys(t *testing.T) []string {
	t.Helper()
	keys, err := s.redis.Keys(context.Background(), s.prefix+":s:*").Result()
	if err != nil {
		t.Fatal(err)
	}
	return keys
}

// endSessions ends a user's sessions through the admin API, as an administrator
// would.
func (s *stack) endSessions(t *testing.T, subject string) {
	t.Helper()
	req, _ := http.NewRequest("DELETE", "http://"+s.X.AdminAddr+"/admin/sessions?subject="+url.QueryEscape(subject), nil)
	req.Header.Set("Authorization", "Bearer "+adminToken)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out struct{ Revoked int }
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil || resp.StatusCode != 200 || out.Revoked == 0 {
		t.Fatalf("admin DELETE: %s, %+v, %v", resp.Status, out, err)
	}
}

// adminToken guards the admin API of every stack.
const adminToken = "browser-admin-token-5f1c9e3a7b2d4f6a8c0e1b3d5f7a9c2e"
