package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"syscall"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/extauthz/extauthz/internal/redistest"
)

// BuildExtauthz builds the extauthz binary into dir.
func BuildExtauthz(root, dir string) (string, error) {
	bin := filepath.Join(dir, "extauthz")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/extauthz")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		return "", fmt.Errorf("build extauthz: %w\n%s", err, out)
	}
	return bin, nil
}

// Extauthz is the real extauthz binary running as a child process.
type Extauthz struct {
	Name      string
	GRPCAddr  string
	HTTPAddr  string
	AdminAddr string
	// NginxAddr is the nginx auth_request listener (EXTAUTHZ_NGINX_ADDR).
	NginxAddr string

	bin      string
	env      map[string]string
	logw     io.Writer
	waitPath string

	mu      sync.Mutex
	cmd     *exec.Cmd
	done    chan struct{}
	exitErr error // the process's exit (cmd.Wait), once done is closed
	conn    *grpc.ClientConn
	auth    authv3.AuthorizationClient
}

// StartExtauthz starts the binary with env (on top of a clean environment:
// PATH and HOME only) on free loopback ports and waits until /readyz says
// ready. Its log goes to logw.
func StartExtauthz(name, bin string, env map[string]string, logw io.Writer) (*Extauthz, error) {
	return startExtauthz(name, bin, env, logw, "/readyz")
}

// StartExtauthzUnready is StartExtauthz that waits only until the process
// is up (/healthz), for a store that is not there yet.
func StartExtauthzUnready(name, bin string, env map[string]string, logw io.Writer) (*Extauthz, error) {
	return startExtauthz(name, bin, env, logw, "/healthz")
}

func startExtauthz(name, bin string, env map[string]string, logw io.Writer, waitPath string) (*Extauthz, error) {
	p, err := redistest.FreePorts(4)
	if err != nil {
		return nil, err
	}
	x := &Extauthz{
		Name: name, GRPCAddr: fmt.Sprintf("127.0.0.1:%d", p[0]), HTTPAddr: fmt.Sprintf("127.0.0.1:%d", p[1]), AdminAddr: fmt.Sprintf("127.0.0.1:%d", p[2]),
		NginxAddr: fmt.Sprintf("127.0.0.1:%d", p[3]), bin: bin, env: env, logw: logw, waitPath: waitPath,
	}
	x.conn, err = grpc.NewClient(x.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return nil, err
	}
	x.auth = authv3.NewAuthorizationClient(x.conn)
	if err := x.Start(); err != nil {
		x.conn.Close()
		return nil, err
	}
	return x, nil
}

// Start (re)starts the process on the same ports and waits until ready.
func (x *Extauthz) Start() error {
	cmd := exec.Command(x.bin)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"),
		"EXTAUTHZ_GRPC_ADDR=" + x.GRPCAddr, "EXTAUTHZ_HTTP_ADDR=" + x.HTTPAddr, "EXTAUTHZ_ADMIN_ADDR=" + x.AdminAddr,
		"EXTAUTHZ_NGINX_ADDR=" + x.NginxAddr}
	for k, v := range x.env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	cmd.Stdout, cmd.Stderr = x.logw, x.logw
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", x.Name, err)
	}
	done := make(chan struct{})
	go func() {
		err := cmd.Wait()
		x.mu.Lock()
		x.exitErr = err
		x.mu.Unlock()
		close(done)
	}()
	x.mu.Lock()
	x.cmd, x.done = cmd, done
	x.mu.Unlock()
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-done:
			return fmt.Errorf("%s exited at start (see its log)", x.Name)
		default:
		}
		resp, err := http.Get("http://" + x.AdminAddr + x.waitPath)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				// Like Envoy's, our client reconnects at once to a restarted
				// process instead of waiting out its back-off.
				x.conn.ResetConnectBackoff()
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: %s not 200 after 20s", x.Name, x.waitPath)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// PID is the process id of the running process.
func (x *Extauthz) PID() (int, error) {
	x.mu.Lock()
	defer x.mu.Unlock()
	if x.cmd == nil || x.cmd.Process == nil {
		return 0, fmt.Errorf("%s is not running", x.Name)
	}
	return x.cmd.Process.Pid, nil
}

// Kill ends the process with SIGKILL: no drain, no goodbye.
func (x *Extauthz) Kill() { _ = x.signal(syscall.SIGKILL) }

// Stop ends the process with SIGTERM, waits for it to exit, and returns
// how it exited (nil: status 0).
func (x *Extauthz) Stop() error { return x.signal(syscall.SIGTERM) }

func (x *Extauthz) signal(sig syscall.Signal) error {
	x.mu.Lock()
	cmd, done := x.cmd, x.done
	x.mu.Unlock()
	if cmd == nil || cmd.Process == nil {
		return fmt.Errorf("%s is not running", x.Name)
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_ = cmd.Process.Kill()
		<-done
		return fmt.Errorf("%s: no exit 30s after %v", x.Name, sig)
	}
	x.mu.Lock()
	defer x.mu.Unlock()
	return x.exitErr
}

// Close kills the process and closes the client connection.
func (x *Extauthz) Close() {
	x.Kill()
	x.conn.Close()
}

// Check asks this replica, as Envoy does.
func (x *Extauthz) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	return x.auth.Check(ctx, req)
}

// Admin fetches an admin endpoint and returns its status and body.
func (x *Extauthz) Admin(path string) (int, string, error) {
	resp, err := http.Get("http://" + x.AdminAddr + path)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), err
}
