package e2e_test

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/e2e"
	"github.com/extauthz/extauthz/internal/redistest"
)

func requireNginx(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("nginx")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("nginx not found (Debian: apt-get install -y nginx-light); CI is set, so it is required")
		}
		t.Skip("nginx not found (apt-get install -y nginx-light)")
	}
	return bin
}

// startNginx runs the shipped deploy/nginx configuration on port with the
// test's addresses in place of the example ones.
func startNginx(t *testing.T, bin string, port int, extauthzHTTP, app string) {
	t.Helper()
	root, _ := e2e.ModuleRoot()
	conf, err := os.ReadFile(filepath.Join(root, "deploy", "nginx", "nginx.conf"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	for _, d := range []string{"temp"} {
		os.MkdirAll(filepath.Join(dir, d), 0o755)
	}
	c := string(conf)
	for old, new := range map[string]string{
		"server 127.0.0.1:9002;": "server " + extauthzHTTP + ";",
		"server 127.0.0.1:3000;": "server " + app + ";",
		"listen 8080;":           fmt.Sprintf("listen 127.0.0.1:%d;", port),
	} {
		if !strings.Contains(c, old) {
			t.Fatalf("deploy/nginx/nginx.conf no longer has %q", old)
		}
		c = strings.ReplaceAll(c, old, new)
	}
	os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(c), 0o644)
	headers, _ := os.ReadFile(filepath.Join(root, "deploy", "nginx", "extauthz_headers"))
	os.WriteFile(filepath.Join(dir, "extauthz_headers"), headers, 0o644)
	logFile, _ := os.Create(filepath.Join(dir, "nginx.log"))
	cmd := exec.Command(bin, "-p", dir, "-c", filepath.Join(dir, "nginx.conf"), "-g", "daemon off;")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(logFile.Name())
			t.Logf("nginx log:\n%s", b)
		}
	})
	addr := fmt.Sprintf("127.0.0.1:%d", port)
	for deadline := time.Now().Add(10 * time.Second); ; {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(logFile.Name())
			t.Fatalf("nginx did not start:\n%s", b)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// TestNginxAuthRequest: a real front proxy no one here wrote, nginx with
// auth_request, in front of a test app and pointed at the HTTP listener:
// log in through Hydra, reach the app with the Bearer token, restart
// extauthz, still reach it.
func TestNginxAuthRequest(t *testing.T) {
	ctx := context.Background()
	appLis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	appSrv := &http.Server{Handler: e2e.AppEcho()}
	go appSrv.Serve(appLis)
	defer appSrv.Close()

	bin := requireNginx(t)
	port, err := redistest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	front := fmt.Sprintf("http://localhost:%d", port)
	c, err := hydra.CreateClient(ctx, front)
	if err != nil {
		t.Fatal(err)
	}
	x := replica(t, "a", hydra, c)
	startNginx(t, bin, port, x.HTTPAddr, appLis.Addr().String())
	b := e2e.NewHTTPBrowser("grace@example.com", hydra)
	b.SetCookie(front, "theme", "dark")

	resp, hops, err := b.Navigate(ctx, front+"/orders?id=1")
	if err != nil {
		t.Fatalf("login through nginx: %v (hops %v)", err, hops)
	}
	if resp.Status != 200 || resp.Upstream == nil || hops[len(hops)-1] != front+"/orders?id=1" {
		t.Fatalf("login through nginx ended with %d %q at %v", resp.Status, resp.Body, hops)
	}
	tok := strings.TrimPrefix(resp.Upstream.Get("Authorization"), "Bearer ")
	if active, err := hydra.Introspect(ctx, tok); err != nil || !active {
		t.Fatalf("the app received %q, not an active Hydra token (%v)", resp.Upstream.Get("Authorization"), err)
	}
	if got := resp.Upstream.Get("Cookie"); got != "theme=dark" {
		t.Fatalf("the app received cookie %q, want the app's cookies without the session cookie", got)
	}

	x.Kill()
	if err := x.Start(); err != nil {
		t.Fatal(err)
	}
	r, err := b.Do(ctx, http.MethodGet, front+"/api", http.Header{"X-Requested-With": {"XMLHttpRequest"}})
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != 200 || strings.TrimPrefix(r.Upstream.Get("Authorization"), "Bearer ") != tok {
		t.Fatalf("after restarting extauthz: %d %q", r.Status, r.Body)
	}
	// Scripts without a session get 401 through nginx, not a redirect.
	anon := e2e.NewHTTPBrowser("nobody", hydra)
	if r, err := anon.Do(ctx, http.MethodPost, front+"/api", nil); err != nil || r.Status != 401 {
		t.Fatalf("POST without session through nginx: %v %v, want 401", r, err)
	}
}
