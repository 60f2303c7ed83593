// Package e2e is the end-to-end harness shared by test/e2e and the demo: a
// real Ory Hydra, the real extauthz binary as a child process, and a client
// that plays Envoy and a browser.
package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/extauthz/extauthz/internal/redistest"
)

// ModuleRoot is the directory of extauthz's go.mod.
func ModuleRoot() (string, error) {
	out, err := exec.Command("go", "env", "GOMOD").Output()
	if err != nil {
		return "", fmt.Errorf("go env GOMOD: %w", err)
	}
	return filepath.Dir(strings.TrimSpace(string(out))), nil
}

// BuildHydra builds Ory Hydra from tools/hydra (its own module) into
// bin/hydra, unless it is there already and newer than tools/hydra/go.sum.
// The first build takes a few minutes; later ones are cached.
func BuildHydra(root string, log io.Writer) (string, error) {
	bin := filepath.Join(root, "bin", "hydra")
	// Test packages run at once (go test ./...): one builds, the others wait
	// for it and then find the binary fresh.
	if err := os.MkdirAll(filepath.Dir(bin), 0o755); err != nil {
		return "", err
	}
	lock, err := os.OpenFile(bin+".lock", os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return "", err
	}
	defer lock.Close()
	if err := syscall.Flock(int(lock.Fd()), syscall.LOCK_EX); err != nil {
		return "", fmt.Errorf("lock %s: %w", lock.Name(), err)
	}
	if bi, err := os.Stat(bin); err == nil {
		if si, err := os.Stat(filepath.Join(root, "tools", "hydra", "go.sum")); err == nil && bi.ModTime().After(si.ModTime()) {
			return bin, nil
		}
	}
	fmt.Fprintln(log, "building Ory Hydra v2.3.0 from tools/hydra (first time: a few minutes) ...")
	cmd := exec.Command("go", "build", "-tags", "sqlite,sqlite_omit_load_extension", "-o", bin, "github.com/ory/hydra/v2")
	cmd.Dir = filepath.Join(root, "tools", "hydra")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=1")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build hydra: %w\n%s", err, out)
	}
	return bin, nil
}

// Hydra is one running Hydra (one tenant's identity zone), behind a counting
// reverse proxy: the proxy's URL is the issuer, so every call the relying
// party makes to Hydra can be counted.
type Hydra struct {
	Issuer   string // the proxy's URL, or HydraOptions.Issuer
	ProxyURL string // the counting proxy in front of Hydra's public port
	AdminURL string
	// RefreshGrants counts token requests with grant_type=refresh_token.
	RefreshGrants atomic.Int32
	// CodeGrants counts token requests with grant_type=authorization_code.
	CodeGrants atomic.Int32

	cmd   *exec.Cmd
	proxy *http.Server
	logf  *os.File
}

// HydraOptions tune a Hydra.
type HydraOptions struct {
	AccessTokenTTL time.Duration // default 1h
	// Issuer, when set, is the public URL (with a path, for several Hydras
	// behind one router) that routes to ProxyURL.
	Issuer string
	// LoginURL, when set, is the base URL of the login and consent app Hydra
	// sends the browser to (<LoginURL>/login, /consent, /logout), for a real
	// browser (see LoginApp); default http://LoginHost, which only the Go
	// browser plays.
	LoginURL string
}

// LoginHost is where Hydra sends the browser to log in and consent; the test
// browser never connects to it: it accepts the challenge through Hydra's admin API.
const LoginHost = "login.test"

// StartHydra runs `hydra serve all --dev` with an in-memory database on free
// loopback ports.
func StartHydra(bin, dir string, o HydraOptions) (*Hydra, error) {
	if o.AccessTokenTTL == 0 {
		o.AccessTokenTTL = time.Hour
	}
	ports, err := redistest.FreePorts(2)
	if err != nil {
		return nil, err
	}
	pub, adm := ports[0], ports[1]
	pl, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	h := &Hydra{ProxyURL: "http://" + pl.Addr().String(), AdminURL: fmt.Sprintf("http://127.0.0.1:%d", adm)}
	h.Issuer = h.ProxyURL
	if o.Issuer != "" {
		h.Issuer = strings.TrimSuffix(o.Issuer, "/")
	}
	target, _ := url.Parse(fmt.Sprintf("http://127.0.0.1:%d", pub))
	rp := httputil.NewSingleHostReverseProxy(target)
	h.proxy = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method == http.MethodPost && r.URL.Path == "/oauth2/token" {
			body, _ := io.ReadAll(r.Body)
			r.Body = io.NopCloser(bytes.NewReader(body))
			switch q, _ := url.ParseQuery(string(body)); q.Get("grant_type") {
			case "refresh_token":
				h.RefreshGrants.Add(1)
			case "authorization_code":
				h.CodeGrants.Add(1)
			}
		}
		rp.ServeHTTP(w, r)
	}), ReadHeaderTimeout: 5 * time.Second}
	go h.proxy.Serve(pl)

	if h.logf, err = os.CreateTemp(dir, "hydra-*.log"); err != nil {
		return nil, err
	}
	loginURL := "http://" + LoginHost
	if o.LoginURL != "" {
		loginURL = strings.TrimSuffix(o.LoginURL, "/")
	}
	h.cmd = exec.Command(bin, "serve", "all", "--dev", "--sqa-opt-out")
	h.cmd.Stdout, h.cmd.Stderr = h.logf, h.logf
	h.cmd.Env = append(os.Environ(),
		"DSN=memory",
		fmt.Sprintf("SERVE_PUBLIC_PORT=%d", pub), "SERVE_PUBLIC_HOST=127.0.0.1",
		fmt.Sprintf("SERVE_ADMIN_PORT=%d", adm), "SERVE_ADMIN_HOST=127.0.0.1",
		"URLS_SELF_ISSUER="+h.Issuer, "URLS_SELF_PUBLIC="+h.Issuer+"/",
		"URLS_LOGIN="+loginURL+"/login", "URLS_CONSENT="+loginURL+"/consent",
		"URLS_LOGOUT="+loginURL+"/logout",
		"SECRETS_SYSTEM=e2e-system-secret-0123456789abcdef",
		"TTL_ACCESS_TOKEN="+o.AccessTokenTTL.String(),
		"LOG_LEVEL=warn",
	)
	if err := h.cmd.Start(); err != nil {
		h.Close()
		return nil, fmt.Errorf("start hydra: %w", err)
	}
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(h.AdminURL + "/health/ready")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				break
			}
		}
		if time.Now().After(deadline) {
			h.Close()
			log, _ := os.ReadFile(h.logf.Name())
			return nil, fmt.Errorf("hydra not ready after 60s:\n%s", log)
		}
		time.Sleep(100 * time.Millisecond)
	}
	// Warm up the signing keys (created on first use) so the first login is quick.
	if resp, err := http.Get(h.ProxyURL + "/.well-known/jwks.json"); err == nil {
		resp.Body.Close()
	}
	return h, nil
}

// Close stops Hydra and its proxy.
func (h *Hydra) Close() {
	if h.cmd != nil && h.cmd.Process != nil {
		_ = h.cmd.Process.Kill()
		_ = h.cmd.Wait()
	}
	if h.proxy != nil {
		_ = h.proxy.Close()
	}
	if h.logf != nil {
		h.logf.Close()
	}
}

// Client is an OAuth2 client registered at Hydra.
type Client struct{ ID, Secret string }

// CreateClient registers a confidential client for the authorization code
// flow with refresh tokens, for the app at appURL (e.g. http://app.localhost:8080).
func (h *Hydra) CreateClient(ctx context.Context, appURLs ...string) (Client, error) {
	return h.CreateNamedClient(ctx, "", appURLs...)
}

// CreateNamedClient is CreateClient with a given client id (the same id at
// several tenants' Hydras, as one app registered in each identity zone).
func (h *Hydra) CreateNamedClient(ctx context.Context, id string, appURLs ...string) (Client, error) {
	return h.CreateClientWith(ctx, ClientOptions{ID: id}, appURLs...)
}

// ClientOptions are what CreateClientWith registers beyond the defaults.
type ClientOptions struct {
	ID string // "": Hydra picks one
	// BackchannelLogoutURI: where Hydra POSTs logout tokens (OpenID Connect
	// Back-Channel Logout) when a login session of this client ends.
	BackchannelLogoutURI string
}

// CreateClientWith is CreateClient with options.
func (h *Hydra) CreateClientWith(ctx context.Context, o ClientOptions, appURLs ...string) (Client, error) {
	id := o.ID
	var redirects, posts []string
	for _, u := range appURLs {
		redirects = append(redirects, u+"/login/callback")
		posts = append(posts, u+"/")
	}
	secret := "e2e-client-secret-0123456789"
	var out struct {
		ClientID string `json:"client_id"`
	}
	req := map[string]any{
		"grant_types": []string{"authorization_code", "refresh_token"}, "response_types": []string{"code"},
		"scope": "openid offline_access", "redirect_uris": redirects, "post_logout_redirect_uris": posts,
		"token_endpoint_auth_method": "client_secret_basic", "client_secret": secret,
	}
	if id != "" {
		req["client_id"] = id
	}
	if o.BackchannelLogoutURI != "" {
		req["backchannel_logout_uri"] = o.BackchannelLogoutURI
		req["backchannel_logout_session_required"] = true
	}
	err := h.admin(ctx, http.MethodPost, "/admin/clients", req, &out)
	return Client{ID: out.ClientID, Secret: secret}, err
}

// AcceptLogin plays the login app: it accepts the login challenge for
// subject and returns where Hydra sends the browser next.
func (h *Hydra) AcceptLogin(ctx context.Context, challenge, subject string) (string, error) {
	return h.AcceptLoginRemember(ctx, challenge, subject, false)
}

// AcceptLoginRemember is AcceptLogin, the login remembered at Hydra when
// remember is true.
func (h *Hydra) AcceptLoginRemember(ctx context.Context, challenge, subject string, remember bool) (string, error) {
	var out struct {
		RedirectTo string `json:"redirect_to"`
	}
	err := h.admin(ctx, http.MethodPut, "/admin/oauth2/auth/requests/login/accept?login_challenge="+url.QueryEscape(challenge),
		map[string]any{"subject": subject, "remember": remember}, &out)
	return out.RedirectTo, err
}

// AcceptConsent grants the requested scopes.
func (h *Hydra) AcceptConsent(ctx context.Context, challenge string) (string, error) {
	var req struct {
		RequestedScope []string `json:"requested_scope"`
	}
	if err := h.admin(ctx, http.MethodGet, "/admin/oauth2/auth/requests/consent?consent_challenge="+url.QueryEscape(challenge), nil, &req); err != nil {
		return "", err
	}
	var out struct {
		RedirectTo string `json:"redirect_to"`
	}
	err := h.admin(ctx, http.MethodPut, "/admin/oauth2/auth/requests/consent/accept?consent_challenge="+url.QueryEscape(challenge),
		map[string]any{"grant_scope": req.RequestedScope, "remember": false}, &out)
	return out.RedirectTo, err
}

// RejectLogin denies the login (the user cancels): Hydra then sends the
// browser back with error=access_denied.
func (h *Hydra) RejectLogin(ctx context.Context, challenge string) (string, error) {
	var out struct {
		RedirectTo string `json:"redirect_to"`
	}
	err := h.admin(ctx, http.MethodPut, "/admin/oauth2/auth/requests/login/reject?login_challenge="+url.QueryEscape(challenge),
		map[string]any{"error": "access_denied", "error_description": "The user cancelled the login"}, &out)
	return out.RedirectTo, err
}

// AcceptLogout accepts a logout challenge.
func (h *Hydra) AcceptLogout(ctx context.Context, challenge string) (string, error) {
	var out struct {
		RedirectTo string `json:"redirect_to"`
	}
	err := h.admin(ctx, http.MethodPut, "/admin/oauth2/auth/requests/logout/accept?logout_challenge="+url.QueryEscape(challenge), nil, &out)
	return out.RedirectTo, err
}

// Introspect says whether Hydra considers an access token active.
func (h *Hydra) Introspect(ctx context.Context, token string) (bool, error) {
	req, _ := http.NewRequestWithContext(ctx, http.MethodPost, h.AdminURL+"/admin/oauth2/introspect",
		strings.NewReader(url.Values{"token": {token}}.Encode()))
	req.Header.Set("content-type", "application/x-www-form-urlencoded")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	var out struct {
		Active bool `json:"active"`
	}
	return out.Active, json.NewDecoder(resp.Body).Decode(&out)
}

func (h *Hydra) admin(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, _ := json.Marshal(in)
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, h.AdminURL+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("content-type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return fmt.Errorf("hydra admin %s %s: %s: %s", method, path, resp.Status, b)
	}
	if out == nil {
		return nil
	}
	if err := json.Unmarshal(b, out); err != nil {
		return errors.New("hydra admin: " + err.Error())
	}
	return nil
}
