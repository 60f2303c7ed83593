package redistest

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
)

// Ports for servers the tests start (redis-server, Hydra, nginx, extauthz)
// are picked, then handed to a process that binds them later. A port from
// the kernel's ephemeral range (what "127.0.0.1:0" gives) can be taken in
// between by any outgoing connection on the machine, and a port free in one
// test binary can be picked by another one that go test runs beside it. So
// FreePort picks below the ephemeral range and reserves each port for the
// life of the test process with an flock on a file in a directory every
// test process shares; the kernel drops the lock when the process ends,
// however it ends.

var (
	portsMu   sync.Mutex
	portLocks []*os.File // held open (locked) until the process exits
)

// FreePort returns a TCP port on 127.0.0.1 that is free, outside the
// kernel's ephemeral range, and reserved for this process: no other test
// process using FreePort gets it while this one runs.
func FreePort() (int, error) {
	lo, hi := portRange()
	dir := filepath.Join(os.TempDir(), "extauthz-test-ports")
	if err := os.MkdirAll(dir, 0o777); err != nil {
		return 0, err
	}
	portsMu.Lock()
	defer portsMu.Unlock()
	for range 1000 {
		port := lo + rand.IntN(hi-lo)
		f, err := os.OpenFile(filepath.Join(dir, strconv.Itoa(port)), os.O_CREATE|os.O_RDWR, 0o666)
		if err != nil {
			return 0, err
		}
		if syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB) != nil {
			f.Close() // another test process holds it
			continue
		}
		l, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err != nil {
			f.Close() // in use by something that does not reserve
			continue
		}
		l.Close()
		portLocks = append(portLocks, f)
		return port, nil
	}
	return 0, errors.New("no free loopback port outside the ephemeral range after 1000 tries")
}

// FreePorts is FreePort n times.
func FreePorts(n int) ([]int, error) {
	ports := make([]int, n)
	for i := range ports {
		p, err := FreePort()
		if err != nil {
			return nil, err
		}
		ports[i] = p
	}
	return ports, nil
}

// portRange is where FreePort picks: below the ephemeral range when there
// is room (Linux's default is 32768–60999), else above it.
func portRange() (lo, hi int) {
	elo, ehi := 32768, 60999
	if b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range"); err == nil {
		var a, z int
		if _, err := fmt.Sscan(strings.TrimSpace(string(b)), &a, &z); err == nil && a > 0 && z >= a {
			elo, ehi = a, z
		}
	}
	if elo-10000 >= 5000 {
		return 10000, elo
	}
	if 65535-ehi >= 2000 {
		return ehi + 1, 65536
	}
	return 1024, 65536 // no room outside: the ephemeral range it is
}
