package e2e

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// NginxBinary finds nginx (Debian puts it in /usr/sbin, which a user's
// PATH may lack).
func NginxBinary() (string, error) {
	if bin, err := exec.LookPath("nginx"); err == nil {
		return bin, nil
	}
	if _, err := os.Stat("/usr/sbin/nginx"); err == nil {
		return "/usr/sbin/nginx", nil
	}
	return "", errors.New("nginx not found (Debian: apt-get install -y nginx-light)")
}

// NginxOptions are the test's addresses for the shipped deploy/nginx
// configuration.
type NginxOptions struct {
	Port         int    // nginx listens on 127.0.0.1:Port
	ExtauthzAddr string // extauthz's nginx listener (Extauthz.NginxAddr)
	AppAddr      string // the app
	// CertFile and KeyFile, when set, make nginx listen with TLS.
	CertFile, KeyFile string
}

// Nginx is nginx running deploy/nginx/nginx.conf with a test's addresses.
type Nginx struct {
	cmd     *exec.Cmd
	logPath string
}

// StartNginx runs the shipped deploy/nginx configuration from root with the
// test's addresses in place of the example ones, in dir, and waits until it
// accepts connections.
func StartNginx(bin, root, dir string, o NginxOptions) (*Nginx, error) {
	conf, err := os.ReadFile(filepath.Join(root, "deploy", "nginx", "nginx.conf"))
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(dir, "temp"), 0o755); err != nil {
		return nil, err
	}
	listen := fmt.Sprintf("listen 127.0.0.1:%d;", o.Port)
	if o.CertFile != "" {
		listen = fmt.Sprintf("listen 127.0.0.1:%d ssl;\n        ssl_certificate %s;\n        ssl_certificate_key %s;", o.Port, o.CertFile, o.KeyFile)
	}
	c := string(conf)
	for _, r := range [][2]string{
		{"server 127.0.0.1:9004;", "server " + o.ExtauthzAddr + ";"},
		{"server 127.0.0.1:3000;", "server " + o.AppAddr + ";"},
		{"listen 8080;", listen},
	} {
		if !strings.Contains(c, r[0]) {
			return nil, fmt.Errorf("deploy/nginx/nginx.conf no longer has %q", r[0])
		}
		c = strings.ReplaceAll(c, r[0], r[1])
	}
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(c), 0o644); err != nil {
		return nil, err
	}
	includes, _ := filepath.Glob(filepath.Join(root, "deploy", "nginx", "*"))
	for _, f := range includes {
		if filepath.Base(f) != "nginx.conf" {
			b, err := os.ReadFile(f)
			if err != nil {
				return nil, err
			}
			if err := os.WriteFile(filepath.Join(dir, filepath.Base(f)), b, 0o644); err != nil {
				return nil, err
			}
		}
	}
	n := &Nginx{logPath: filepath.Join(dir, "nginx.log")}
	logFile, err := os.Create(n.logPath)
	if err != nil {
		return nil, err
	}
	defer logFile.Close()
	n.cmd = exec.Command(bin, "-p", dir, "-c", filepath.Join(dir, "nginx.conf"), "-g", "daemon off;")
	n.cmd.Stdout, n.cmd.Stderr = logFile, logFile
	// Its own process group: the workers go with the master at the end.
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
	if err := n.cmd.Start(); err != nil {
		return nil, err
	}
	addr := fmt.Sprintf("127.0.0.1:%d", o.Port)
	for deadline := time.Now().Add(10 * time.Second); ; {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return n, nil
		}
		if time.Now().After(deadline) {
			n.Close()
			return nil, fmt.Errorf("nginx did not start:\n%s", n.Log())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Log is what nginx wrote (errors and warnings).
func (n *Nginx) Log() string {
	b, _ := os.ReadFile(n.logPath)
	return string(b)
}

// Close stops nginx and its workers.
func (n *Nginx) Close() {
	if n.cmd != nil && n.cmd.Process != nil {
		_ = syscall.Kill(-n.cmd.Process.Pid, syscall.SIGKILL)
		_ = n.cmd.Wait()
	}
}

// RequireNginx returns nginx's path, or skips the test when it is missing;
// with CI set a missing nginx fails the test instead.
func RequireNginx(t testing.TB) string {
	t.Helper()
	bin, err := NginxBinary()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%v; CI is set, so it is required", err)
		}
		t.Skip(err)
	}
	return bin
}
