package e2e

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"github.com/extauthz/extauthz/internal/redistest"
)

// OAuth2ProxyVersion is the oauth2-proxy that tools/oauth2-proxy pins.
const OAuth2ProxyVersion = "v7.15.6"

// BuildOAuth2Proxy builds oauth2-proxy from tools/oauth2-proxy (its own
// module, so that its dependencies stay out of ours) into bin/oauth2-proxy,
// unless it is there already and newer than tools/oauth2-proxy/go.sum. The
// first build takes a minute or two; later ones are cached.
func BuildOAuth2Proxy(root string, log io.Writer) (string, error) {
	bin := filepath.Join(root, "bin", "oauth2-proxy")
	if bi, err := os.Stat(bin); err == nil {
		if si, err := os.Stat(filepath.Join(root, "tools", "oauth2-proxy", "go.sum")); err == nil && bi.ModTime().After(si.ModTime()) {
			return bin, nil
		}
	}
	fmt.Fprintf(log, "building oauth2-proxy %s from tools/oauth2-proxy (first time: a minute or two) ...\n", OAuth2ProxyVersion)
	cmd := exec.Command("go", "build", "-trimpath",
		"-ldflags", "-X github.com/oauth2-proxy/oauth2-proxy/v7/pkg/version.VERSION="+OAuth2ProxyVersion,
		"-o", bin, "github.com/oauth2-proxy/oauth2-proxy/v7")
	cmd.Dir = filepath.Join(root, "tools", "oauth2-proxy")
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build oauth2-proxy: %w\n%s", err, out)
	}
	return bin, nil
}

// OAuth2ProxyOptions configure an oauth2-proxy with the OIDC provider and
// a Redis session store.
type OAuth2ProxyOptions struct {
	Issuer, ClientID, ClientSecret string
	RedisAddr                      string
	// Args are more command-line flags.
	Args []string
}

// OAuth2Proxy is oauth2-proxy running as a child process: its Redis
// session store, the OIDC provider, the upstream a static 200, every log
// off.
type OAuth2Proxy struct {
	URL        string // http://127.0.0.1:port
	MetricsURL string // its /metrics, on a listener of its own
	cmd        *exec.Cmd
	done       chan struct{}
}

// OAuth2ProxyCookie is the name of its session cookie.
const OAuth2ProxyCookie = "_oauth2_proxy"

// StartOAuth2Proxy runs bin on free loopback ports and waits until /ready
// (which pings Redis) says 200. Its output goes to logw.
func StartOAuth2Proxy(bin string, o OAuth2ProxyOptions, logw io.Writer) (*OAuth2Proxy, error) {
	ports, err := redistest.FreePorts(2)
	if err != nil {
		return nil, err
	}
	port, mport := ports[0], ports[1]
	p := &OAuth2Proxy{URL: "http://127.0.0.1:" + strconv.Itoa(port), MetricsURL: "http://127.0.0.1:" + strconv.Itoa(mport) + "/metrics", done: make(chan struct{})}
	args := append([]string{
		"--http-address=127.0.0.1:" + strconv.Itoa(port),
		"--metrics-address=127.0.0.1:" + strconv.Itoa(mport),
		"--provider=oidc", "--oidc-issuer-url=" + o.Issuer,
		"--client-id=" + o.ClientID, "--client-secret=" + o.ClientSecret,
		"--redirect-url=" + p.URL + "/oauth2/callback",
		"--cookie-secret=bench-cookie-secret-0123456789ab", // 32 bytes: AES-256
		"--cookie-secure=false", "--cookie-name=" + OAuth2ProxyCookie,
		"--email-domain=*", "--upstream=static://200", "--skip-provider-button=true",
		"--session-store-type=redis", "--redis-connection-url=redis://" + o.RedisAddr,
		"--request-logging=false", "--auth-logging=false", "--standard-logging=false",
	}, o.Args...)
	p.cmd = exec.Command(bin, args...)
	p.cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME")}
	p.cmd.Stdout, p.cmd.Stderr = logw, logw
	if err := p.cmd.Start(); err != nil {
		return nil, fmt.Errorf("start oauth2-proxy: %w", err)
	}
	go func() { _ = p.cmd.Wait(); close(p.done) }()
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-p.done:
			return nil, fmt.Errorf("oauth2-proxy exited at start (see its log)")
		default:
		}
		if resp, err := http.Get(p.URL + "/ready"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return p, nil
			}
		}
		if time.Now().After(deadline) {
			p.Close()
			return nil, fmt.Errorf("oauth2-proxy: /ready not 200 after 20s")
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// PID is the process id of oauth2-proxy.
func (p *OAuth2Proxy) PID() int { return p.cmd.Process.Pid }

// Close kills oauth2-proxy.
func (p *OAuth2Proxy) Close() {
	_ = p.cmd.Process.Kill()
	<-p.done
}
