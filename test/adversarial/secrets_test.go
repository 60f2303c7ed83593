package adversarial_test

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/extauthz/extauthz/internal/e2e"
	"github.com/extauthz/extauthz/internal/redistest"
)

func secureCookies(h http.Header) (secure, insecure []string) {
	for _, sc := range h.Values("set-cookie") {
		c, err := http.ParseSetCookie(sc)
		if err != nil {
			continue
		}
		if c.Secure {
			secure = append(secure, c.Name)
		} else {
			insecure = append(insecure, c.Name)
		}
	}
	return
}

// TestSecureCookie (issue 11 class 6): cookies are Secure by default, even
// over plain http; with "auto", x-forwarded-proto is believed only from a
// proxy declared trusted.
func TestSecureCookie(t *testing.T) {
	t.Parallel()
	// The default is checked on a process started outside the harness too.
	defAddrs := startBare(t, nil)
	def := start(t, "secure-true", "SECURE_SESSION_COOKIE", "true")
	auto := start(t, "secure-auto", "SECURE_SESSION_COOKIE", "auto")
	trusted := start(t, "secure-trusted", "SECURE_SESSION_COOKIE", "auto", "EXTAUTHZ_TRUST_FORWARDED_PROTO", "true")
	nav := func(xfp string) hreq {
		q := navigation("localhost:8080", "/x")
		q.Scheme = "http"
		if xfp != "" {
			q = q.with("x-forwarded-proto", xfp)
		}
		return q
	}
	for _, p := range protocols {
		for _, xfp := range []string{"", "http"} {
			var r hres
			if p.name == "http" {
				r = rawHTTP(defAddrs.http, nav(xfp))
			} else {
				r = defAddrs.grpc(t, nav(xfp))
			}
			if sec, insec := secureCookies(r.Header); r.Status != http.StatusFound || len(insec) > 0 || len(sec) == 0 {
				t.Errorf("%s SECURE_SESSION_COOKIE unset, x-forwarded-proto %q: %s; cookies without Secure: %v, want all Secure", p.name, xfp, r, insec)
			}
		}
		for _, c := range []struct {
			name       string
			x          *instance
			xfp        string
			wantSecure bool
		}{
			{"true, plain http", def, "", true},
			{"true, x-forwarded-proto http", def, "http", true},
			{"auto, x-forwarded-proto https, proxy not trusted", auto, "https", false},
			{"auto, x-forwarded-proto HTTPS, proxy not trusted", auto, "HTTPS", false},
			{"auto, x-forwarded-proto https,http, proxy not trusted", auto, "https, http", false},
			{"auto, x-forwarded-proto https, trusted", trusted, "https", true},
			{"auto, x-forwarded-proto http, trusted", trusted, "http", false},
		} {
			r := p.do(c.x, nav(c.xfp))
			sec, insec := secureCookies(r.Header)
			if r.Status != http.StatusFound || len(sec)+len(insec) == 0 {
				t.Errorf("%s %s: %s, want a login redirect with its state cookie", p.name, c.name, r)
				continue
			}
			if c.wantSecure && len(insec) > 0 {
				t.Errorf("%s %s: cookies without Secure: %v (%q)", p.name, c.name, insec, r.Header.Values("set-cookie"))
			}
			if !c.wantSecure && len(sec) > 0 {
				t.Errorf("%s %s: x-forwarded-proto believed from an untrusted proxy: Secure cookies %v", p.name, c.name, sec)
			}
			if ru, err := redirectURI(r.Header.Get("location")); err == nil && c.x == auto && ru.Scheme == "https" {
				t.Errorf("%s %s: redirect_uri %s: x-forwarded-proto believed from an untrusted proxy", p.name, c.name, ru)
			}
		}
	}
	// The session cookie of a login with SECURE_SESSION_COOKIE=true is Secure.
	b := e2e.NewBrowser("secure@example.com", def.Extauthz, hydra)
	hydraMu.Lock()
	_, hops, err := b.NavigateUntil(context.Background(), app+"/x", func(u *url.URL) bool { return u.Path == "/login/callback" })
	hydraMu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	r, err := b.Do(context.Background(), "GET", hops[len(hops)-1], nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, insec := secureCookies(r.Header); r.Status != http.StatusFound || len(insec) > 0 {
		t.Errorf("the login's callback: %d, cookies without Secure: %v", r.Status, insec)
	}
}

// bare is a process started outside the harness (no defaults of its own).
type bare struct{ http, grpcAddr string }

func (b bare) grpc(t *testing.T, q hreq) hres {
	conn, err := grpc.NewClient(b.grpcAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, checkRequest(q))
	return fromCheckResponse(resp, err)
}

// startBare runs the binary with baseEnv plus env only, and waits for /healthz.
func startBare(t *testing.T, env []string) bare {
	t.Helper()
	ports, err := redistest.FreePorts(3)
	if err != nil {
		t.Fatal(err)
	}
	b := bare{http: fmt.Sprintf("127.0.0.1:%d", ports[1]), grpcAddr: fmt.Sprintf("127.0.0.1:%d", ports[0])}
	cmd := exec.Command(extauthzBin)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"),
		"EXTAUTHZ_GRPC_ADDR=" + b.grpcAddr, "EXTAUTHZ_HTTP_ADDR=" + b.http, fmt.Sprintf("EXTAUTHZ_ADMIN_ADDR=127.0.0.1:%d", ports[2])}
	for k, v := range baseEnv("adv-bare") {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Env = append(cmd.Env, env...)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for deadline := time.Now().Add(10 * time.Second); ; {
		if resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/healthz", ports[2])); err == nil {
			resp.Body.Close()
			return b
		}
		if time.Now().After(deadline) {
			t.Fatalf("bare extauthz did not start:\n%s", buf.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// placeholderSecrets are the literal session secrets in the repository's
// deploy/ examples.
func placeholderSecrets(t *testing.T) []string {
	t.Helper()
	root, _ := e2e.ModuleRoot()
	re := regexp.MustCompile(`(?i)(?:session[_-]?secrets?|sessionSecret|^\s*secret)\s*["']?\s*[:=]\s*["']?([^\s"'$]{32,})`)
	seen := map[string]bool{}
	var out []string
	filepath.WalkDir(filepath.Join(root, "deploy"), func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasSuffix(p, "_test.go") {
			return nil
		}
		b, _ := os.ReadFile(p)
		for _, line := range strings.Split(string(b), "\n") {
			if m := re.FindStringSubmatch(line); m != nil && !seen[m[1]] {
				seen[m[1]] = true
				out = append(out, m[1])
				t.Logf("example secret in %s: %s", strings.TrimPrefix(p, root+"/"), m[1])
			}
		}
		return nil
	})
	// Published once in this repository (deploy/kyma, deploy/compose), so
	// known to everyone whatever deploy/ says today.
	for _, s := range []string{"CHANGE-ME-to-64-random-characters-CHANGE-ME-to-64-random-characters",
		"quickstart-only-secret-quickstart-only-secret-quickstart-only-secret"} {
		if !seen[s] {
			out = append(out, s)
		}
	}
	return out
}

// runToExit runs the binary with env and returns its output and exit error
// (exited false and a nil error when it did not exit within d).
func runToExit(t *testing.T, env []string, d time.Duration) (exited bool, out string, err error) {
	t.Helper()
	ports, err := redistest.FreePorts(3)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(extauthzBin)
	cmd.Env = append([]string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"),
		fmt.Sprintf("EXTAUTHZ_GRPC_ADDR=127.0.0.1:%d", ports[0]), fmt.Sprintf("EXTAUTHZ_HTTP_ADDR=127.0.0.1:%d", ports[1]),
		fmt.Sprintf("EXTAUTHZ_ADMIN_ADDR=127.0.0.1:%d", ports[2]),
		"EXTAUTHZ_OIDC_ISSUER=" + hydra.Issuer, "EXTAUTHZ_OIDC_CLIENT_ID=" + client.ID, "EXTAUTHZ_OIDC_CLIENT_SECRET=" + client.Secret,
		"EXTAUTHZ_REDIS_URL=redis://" + redisA.Addr}, env...)
	var buf bytes.Buffer
	cmd.Stdout, cmd.Stderr = &buf, &buf
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		return true, buf.String(), err
	case <-time.After(d):
		cmd.Process.Kill()
		<-done
		return false, buf.String(), nil
	}
}

// TestPlaceholderSecretRefused (issue 11 class 6): the example secrets of
// the repository make the binary exit non-zero at start, naming the problem.
func TestPlaceholderSecretRefused(t *testing.T) {
	t.Parallel()
	secrets := placeholderSecrets(t)
	if len(secrets) == 0 {
		t.Log("no literal session secret in deploy/: nothing to refuse")
	}
	dir := t.TempDir()
	for i, s := range secrets {
		file := filepath.Join(dir, fmt.Sprintf("secret-%d", i))
		os.WriteFile(file, []byte(s+"\n"), 0o600)
		for _, env := range [][]string{
			{"EXTAUTHZ_SESSION_SECRETS=" + s},
			{"EXTAUTHZ_SESSION_SECRETS=" + secret + "," + s},
			{"EXTAUTHZ_SESSION_SECRETS_FILE=" + file},
		} {
			exited, out, err := runToExit(t, env, 5*time.Second)
			switch {
			case !exited:
				t.Errorf("%v: the binary started with an example secret (still running after 5s)", env)
			case err == nil:
				t.Errorf("%v: exited 0, want non-zero", env)
			case !regexp.MustCompile(`(?i)placeholder|example|sample|well-known|published`).MatchString(out):
				t.Errorf("%v: exited (%v) without naming the example secret as the cause:\n%s", env, err, tail(out, 1500))
			}
		}
	}
	// Control: a secret of our own starts.
	if exited, out, err := runToExit(t, []string{"EXTAUTHZ_SESSION_SECRETS=" + secret}, 2*time.Second); exited {
		t.Errorf("control: a proper secret: exited (%v):\n%s", err, tail(out, 1500))
	}
}

// TestForeignCallbackDoesNotCancel (issue 11 class 6): someone else's state
// sent to the callback without its state cookie does not use it up: the
// browser that started the login still completes it.
func TestForeignCallbackDoesNotCancel(t *testing.T) {
	t.Parallel()
	x := start(t, "cancel")
	variants := []struct {
		name   string
		mangle func(cb *url.URL, state string) (string, string) // URL and cookie header
	}{
		{"the same URL, no cookie", func(cb *url.URL, _ string) (string, string) { return cb.RequestURI(), "" }},
		{"the same URL, a forged state cookie", func(cb *url.URL, st string) (string, string) {
			return cb.RequestURI(), "JSESSIONID_login_" + st[:min(10, len(st))] + "=" + randLabel(40)
		}},
		{"error=access_denied", func(_ *url.URL, st string) (string, string) {
			return "/login/callback?error=access_denied&state=" + url.QueryEscape(st), ""
		}},
		{"a bogus code", func(_ *url.URL, st string) (string, string) {
			return "/login/callback?code=" + randLabel(43) + "&state=" + url.QueryEscape(st), ""
		}},
	}
	var wg sync.WaitGroup
	for _, p := range protocols {
		for _, v := range variants {
			wg.Go(func() {
				ctx := context.Background()
				b := e2e.NewBrowser("victim@example.com", x.Extauthz, hydra)
				hydraMu.Lock()
				defer hydraMu.Unlock()
				_, hops, err := b.NavigateUntil(ctx, app+"/inbox", func(u *url.URL) bool { return u.Path == "/login/callback" })
				if err != nil {
					t.Error(err)
					return
				}
				cb, _ := url.Parse(hops[len(hops)-1])
				path, cookie := v.mangle(cb, cb.Query().Get("state"))
				q := navigation("localhost:8443", path)
				if cookie != "" {
					q = q.with("cookie", cookie)
				}
				if r := p.do(x, q); r.Allowed || setsCookie(r.Header, "JSESSIONID") {
					t.Errorf("%s %s: the attacker's callback: %s", p.name, v.name, r)
				}
				r, err := b.Do(ctx, "GET", cb.String(), nil)
				if err != nil || r.Status != http.StatusFound || r.Header.Get("location") != "/inbox" || !setsCookie(r.Header, "JSESSIONID") {
					t.Errorf("%s %s: after the attacker's callback the rightful browser's callback got %v %v, want 302 to /inbox with a session", p.name, v.name, r, err)
				}
			})
		}
	}
	wg.Wait()
}
