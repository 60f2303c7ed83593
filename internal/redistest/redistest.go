// Package redistest starts real redis-server processes on free loopback ports
// for tests and benchmarks, and stops them at the end.
package redistest

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Server is one running redis-server.
type Server struct {
	Addr string
	Port int
	Dir  string
	args []string
	cmd  *exec.Cmd
	log  string
	// tls, when set, is how ping connects (a TLS-only server).
	tls *tls.Config
}

// Binary returns the path of redis-server, or an error that says how to get it.
func Binary() (string, error) {
	p, err := exec.LookPath("redis-server")
	if err != nil {
		return "", errors.New("redis-server not found in PATH (Debian: apt-get install -y redis-server)")
	}
	return p, nil
}

// Require returns redis-server's path. Without it the test fails when CI is
// set and is skipped otherwise.
func Require(t testing.TB) string {
	t.Helper()
	p, err := Binary()
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatalf("%v; CI is set, so a real Redis is required", err)
		}
		t.Skipf("%v (set CI=1 to make this a failure)", err)
	}
	return p
}

// Start runs redis-server on a free loopback port with its data in a new
// directory under dir; extra are more redis-server arguments ("--appendonly",
// "yes", ...). The caller must Stop it.
func Start(dir string, extra ...string) (*Server, error) {
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	return StartOn(dir, port, extra...)
}

// StartOn is Start on a given port.
func StartOn(dir string, port int, extra ...string) (*Server, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	d, err := os.MkdirTemp(dir, "redis-")
	if err != nil {
		return nil, err
	}
	s := &Server{Addr: "127.0.0.1:" + strconv.Itoa(port), Port: port, Dir: d, log: filepath.Join(d, "redis.log")}
	s.args = append([]string{
		"--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", d,
		"--save", "", "--appendonly", "no", "--logfile", s.log, "--protected-mode", "no",
	}, extra...)
	if err := s.start(bin); err != nil {
		return nil, err
	}
	return s, nil
}

// StartTLS runs a TLS-only redis-server with the PKI's server certificate;
// with clientCerts, clients must present a certificate of the CA.
func StartTLS(dir string, p *PKI, clientCerts bool) (*Server, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	port, err := FreePort()
	if err != nil {
		return nil, err
	}
	d, err := os.MkdirTemp(dir, "redis-tls-")
	if err != nil {
		return nil, err
	}
	auth := "no"
	if clientCerts {
		auth = "yes"
	}
	ct, err := p.ClientTLS()
	if err != nil {
		return nil, err
	}
	ct.InsecureSkipVerify = true // readiness only; the tests check certificates themselves
	s := &Server{Addr: "127.0.0.1:" + strconv.Itoa(port), Port: port, Dir: d, log: filepath.Join(d, "redis.log"), tls: ct}
	s.args = []string{
		"--port", "0", "--tls-port", strconv.Itoa(port), "--bind", "127.0.0.1", "--dir", d,
		"--tls-cert-file", p.CertFile, "--tls-key-file", p.KeyFile, "--tls-ca-cert-file", p.CAFile,
		"--tls-auth-clients", auth, "--save", "", "--appendonly", "no", "--logfile", s.log,
	}
	if err := s.start(bin); err != nil {
		return nil, err
	}
	return s, nil
}

// Run is Start for a test: it stops the server when the test ends.
func Run(t testing.TB, extra ...string) *Server {
	t.Helper()
	Require(t)
	s, err := Start(t.TempDir(), extra...)
	if err != nil {
		t.Fatalf("start redis-server: %v", err)
	}
	t.Cleanup(s.Stop)
	return s
}

func (s *Server) start(bin string) error {
	s.cmd = exec.Command(bin, s.args...)
	if err := s.cmd.Start(); err != nil {
		return fmt.Errorf("start redis-server: %w", err)
	}
	exited := make(chan error, 1)
	go func() { exited <- s.cmd.Wait() }()
	deadline := time.Now().Add(10 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			return fmt.Errorf("redis-server exited at start (%v): %s", err, s.tail())
		default:
		}
		if s.ping() == nil {
			go func() { <-exited }()
			return nil
		}
		time.Sleep(20 * time.Millisecond)
	}
	_ = s.cmd.Process.Kill()
	return fmt.Errorf("redis-server on %s did not answer PING within 10s: %s", s.Addr, s.tail())
}

func (s *Server) tail() string {
	b, _ := os.ReadFile(s.log)
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	return strings.Join(lines, " | ")
}

// ping speaks just enough RESP to see the server answer.
func (s *Server) ping() error {
	var c net.Conn
	var err error
	if s.tls != nil {
		c, err = tls.DialWithDialer(&net.Dialer{Timeout: 200 * time.Millisecond}, "tcp", s.Addr, s.tls)
	} else {
		c, err = net.DialTimeout("tcp", s.Addr, 200*time.Millisecond)
	}
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(500 * time.Millisecond))
	if _, err := c.Write([]byte("PING\r\n")); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "+PONG") {
		return fmt.Errorf("unexpected answer %q", line)
	}
	return nil
}

// Stop kills the server (SIGKILL: data on disk is what AOF/RDB already has).
func (s *Server) Stop() {
	if s.cmd != nil && s.cmd.Process != nil {
		_ = s.cmd.Process.Signal(syscall.SIGCONT)
		_ = s.cmd.Process.Kill()
		deadline := time.Now().Add(5 * time.Second)
		for s.ping() == nil && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
		}
	}
}

// Restart kills the server and starts it again on the same port and directory.
func (s *Server) Restart() error {
	s.Stop()
	bin, err := Binary()
	if err != nil {
		return err
	}
	return s.start(bin)
}

// Pause stops the process (SIGSTOP): connections stay open, nothing answers.
func (s *Server) Pause() error { return s.cmd.Process.Signal(syscall.SIGSTOP) }

// Resume continues a paused server (SIGCONT).
func (s *Server) Resume() error { return s.cmd.Process.Signal(syscall.SIGCONT) }
