package redistest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"
)

// CLI runs redis-cli against a server and returns its output.
func CLI(addr string, args ...string) (string, error) {
	host, port, _ := strings.Cut(addr, ":")
	out, err := exec.Command("redis-cli", append([]string{"-h", host, "-p", port}, args...)...).CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("redis-cli %v: %w: %s", args, err, out)
	}
	return string(out), nil
}

func waitFor(what string, timeout time.Duration, ok func() bool) error {
	deadline := time.Now().Add(timeout)
	for !ok() {
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: not within %s", what, timeout)
		}
		time.Sleep(50 * time.Millisecond)
	}
	return nil
}

// Cluster is a Redis Cluster of masters without replicas.
type Cluster struct{ Nodes []*Server }

// StartCluster runs n masters with cluster mode on and joins them with
// `redis-cli --cluster create`. extra are more redis-server arguments.
func StartCluster(dir string, n int, extra ...string) (*Cluster, error) {
	if _, err := exec.LookPath("redis-cli"); err != nil {
		return nil, errors.New("redis-cli not found in PATH (Debian: apt-get install -y redis-tools)")
	}
	c := &Cluster{}
	var addrs []string
	for range n {
		// The bus port is reserved too (by default it is the port + 10000,
		// which may be in the ephemeral range or another test's).
		bus, err := FreePort()
		if err != nil {
			c.Stop()
			return nil, err
		}
		s, err := Start(dir, append([]string{"--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf", "--cluster-node-timeout", "2000",
			"--cluster-port", strconv.Itoa(bus)}, extra...)...)
		if err != nil {
			c.Stop()
			return nil, err
		}
		c.Nodes = append(c.Nodes, s)
		addrs = append(addrs, s.Addr)
	}
	args := append([]string{"--cluster", "create"}, addrs...)
	if out, err := exec.Command("redis-cli", append(args, "--cluster-replicas", "0", "--cluster-yes")...).CombinedOutput(); err != nil {
		c.Stop()
		return nil, fmt.Errorf("redis-cli --cluster create: %w: %s", err, out)
	}
	for _, s := range c.Nodes {
		if err := waitFor("cluster_state:ok on "+s.Addr, 20*time.Second, func() bool {
			out, err := CLI(s.Addr, "cluster", "info")
			return err == nil && strings.Contains(out, "cluster_state:ok")
		}); err != nil {
			c.Stop()
			return nil, err
		}
	}
	return c, nil
}

// Addrs are the nodes' addresses.
func (c *Cluster) Addrs() []string {
	var out []string
	for _, s := range c.Nodes {
		out = append(out, s.Addr)
	}
	return out
}

// NodeID is the cluster node id of a node.
func (c *Cluster) NodeID(s *Server) (string, error) {
	out, err := CLI(s.Addr, "cluster", "myid")
	return strings.TrimSpace(out), err
}

// Stop stops every node.
func (c *Cluster) Stop() {
	for _, s := range c.Nodes {
		s.Stop()
	}
}

// Sentinel is a master, one replica and three sentinels watching them.
type Sentinel struct {
	Master, Replica *Server
	Sentinels       []*Server
	MasterName      string
}

// StartSentinel runs the setup and waits until the sentinels know each other
// and the replica is in sync.
func StartSentinel(dir string) (*Sentinel, error) {
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	st := &Sentinel{MasterName: "mymaster"}
	if st.Master, err = Start(dir); err != nil {
		return nil, err
	}
	if st.Replica, err = Start(dir, "--replicaof", "127.0.0.1", strconv.Itoa(st.Master.Port)); err != nil {
		st.Stop()
		return nil, err
	}
	if err := waitFor("replica in sync", 20*time.Second, func() bool {
		out, err := CLI(st.Replica.Addr, "info", "replication")
		return err == nil && strings.Contains(out, "master_link_status:up")
	}); err != nil {
		st.Stop()
		return nil, err
	}
	for i := range 3 {
		port, err := FreePort()
		if err != nil {
			st.Stop()
			return nil, err
		}
		d, err := os.MkdirTemp(dir, "sentinel-")
		if err != nil {
			st.Stop()
			return nil, err
		}
		conf := filepath.Join(d, "sentinel.conf")
		os.WriteFile(conf, []byte(fmt.Sprintf(`port %d
bind 127.0.0.1
dir %s
sentinel monitor %s 127.0.0.1 %d 2
sentinel down-after-milliseconds %s 1000
sentinel failover-timeout %s 5000
sentinel parallel-syncs %s 1
`, port, d, st.MasterName, st.Master.Port, st.MasterName, st.MasterName, st.MasterName)), 0o600)
		s := &Server{Addr: "127.0.0.1:" + strconv.Itoa(port), Port: port, Dir: d, log: filepath.Join(d, "sentinel.log"),
			args: []string{conf, "--sentinel", "--logfile", filepath.Join(d, "sentinel.log")}}
		if err := s.start(bin); err != nil {
			st.Stop()
			return nil, fmt.Errorf("sentinel %d: %w", i, err)
		}
		st.Sentinels = append(st.Sentinels, s)
	}
	for _, s := range st.Sentinels {
		if err := waitFor("sentinel "+s.Addr+" knows the replica and the other sentinels", 30*time.Second, func() bool {
			out, err := CLI(s.Addr, "sentinel", "master", st.MasterName)
			return err == nil && strings.Contains(out, "num-slaves\n1\n") && strings.Contains(out, "num-other-sentinels\n2\n")
		}); err != nil {
			st.Stop()
			return nil, err
		}
	}
	return st, nil
}

// SentinelAddrs are the sentinels' addresses.
func (st *Sentinel) SentinelAddrs() []string {
	var out []string
	for _, s := range st.Sentinels {
		out = append(out, s.Addr)
	}
	return out
}

// CurrentMaster asks a sentinel which address is the master now.
func (st *Sentinel) CurrentMaster() (string, error) {
	for _, s := range st.Sentinels {
		out, err := CLI(s.Addr, "sentinel", "get-master-addr-by-name", st.MasterName)
		if err != nil {
			continue
		}
		f := strings.Fields(out)
		if len(f) == 2 {
			return f[0] + ":" + f[1], nil
		}
	}
	return "", errors.New("no sentinel names a master")
}

// WaitFailover waits until the sentinels name another master than old.
func (st *Sentinel) WaitFailover(old string, timeout time.Duration) error {
	return waitFor("failover away from "+old, timeout, func() bool {
		m, err := st.CurrentMaster()
		return err == nil && m != old
	})
}

// Stop stops every process.
func (st *Sentinel) Stop() {
	for _, s := range append([]*Server{st.Master, st.Replica}, st.Sentinels...) {
		if s != nil {
			s.Stop()
		}
	}
}
