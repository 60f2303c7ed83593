package redisstore_test

import (
	"context"
	"errors"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/redistest"
	"github.com/extauthz/extauthz/pkg/session"
	"github.com/extauthz/extauthz/pkg/session/redisstore"
	"github.com/extauthz/extauthz/pkg/session/sessiontest"
	"github.com/extauthz/extauthz/proto/sessionpb"
)

func open(t *testing.T, o redisstore.Options) *redisstore.Store {
	t.Helper()
	s, err := redisstore.New(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func manager(t *testing.T, s session.Store) *session.Manager {
	keys, err := session.NewKeys([]byte(strings.Repeat("t", 64)))
	if err != nil {
		t.Fatal(err)
	}
	return session.NewManager(s, keys, session.Options{IdleTimeout: time.Hour})
}

// createSessions stores n sessions and returns their cookies.
func createSessions(t *testing.T, m *session.Manager, n int) []string {
	t.Helper()
	var cookies []string
	for i := range n {
		_, c, err := m.Create(context.Background(), &sessionpb.Session{Subject: "u" + strconv.Itoa(i), AccessToken: "at" + strconv.Itoa(i)})
		if err != nil {
			t.Fatal(err)
		}
		cookies = append(cookies, c)
	}
	return cookies
}

func TestTLS(t *testing.T) {
	redistest.Require(t)
	dir := t.TempDir()
	pki, err := redistest.NewPKI(dir)
	if err != nil {
		t.Fatal(err)
	}
	srv, err := redistest.StartTLS(dir, pki, true)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	mutual, err := redisstore.TLSConfig(redisstore.TLSOptions{CA: pki.CA, CertFile: pki.ClientCertFile, KeyFile: pki.ClientKeyFile, RejectUnauthorized: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Run("Conformance", func(t *testing.T) {
		sessiontest.Run(t, func(t *testing.T) session.Store {
			return open(t, redisstore.Options{Addrs: []string{srv.Addr}, TLS: mutual, Timeout: 2 * time.Second})
		})
	})
	ping := func(o redisstore.TLSOptions, addr string) error {
		tc, err := redisstore.TLSConfig(o)
		if err != nil {
			return err
		}
		return open(t, redisstore.Options{Addrs: []string{addr}, TLS: tc, Timeout: time.Second}).Ping(context.Background())
	}
	t.Run("NoClientCertificate", func(t *testing.T) {
		if err := ping(redisstore.TLSOptions{CA: pki.CA, RejectUnauthorized: true}, srv.Addr); err == nil {
			t.Fatal("a server that requires client certificates accepted a client without one")
		}
	})
	t.Run("UnknownCA", func(t *testing.T) {
		if err := ping(redisstore.TLSOptions{CertFile: pki.ClientCertFile, KeyFile: pki.ClientKeyFile, RejectUnauthorized: true}, srv.Addr); err == nil {
			t.Fatal("connected to a server signed by an unknown CA")
		}
		if err := ping(redisstore.TLSOptions{CertFile: pki.ClientCertFile, KeyFile: pki.ClientKeyFile, RejectUnauthorized: false}, srv.Addr); err != nil {
			t.Fatalf("rejectUnauthorized=false must accept any certificate: %v", err)
		}
	})
	t.Run("HostnameValidation", func(t *testing.T) {
		other := &redistest.PKI{CAFile: pki.CAFile, CA: pki.CA, CertFile: pki.WrongHostCertFile, KeyFile: pki.WrongHostKeyFile,
			ClientCertFile: pki.ClientCertFile, ClientKeyFile: pki.ClientKeyFile}
		wrong, err := redistest.StartTLS(dir, other, false)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(wrong.Stop)
		if err := ping(redisstore.TLSOptions{CA: pki.CA, RejectUnauthorized: true}, wrong.Addr); err == nil {
			t.Fatal("accepted a certificate for another host name")
		}
		if err := ping(redisstore.TLSOptions{CA: pki.CA, RejectUnauthorized: true, SkipCertHostnameValidation: true}, wrong.Addr); err != nil {
			t.Fatalf("skipCertHostnameValidation must accept a valid chain for another name: %v", err)
		}
	})
}

func TestCluster(t *testing.T) {
	redistest.Require(t)
	cl, err := redistest.StartCluster(t.TempDir(), 3)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Stop)
	newStore := func(t *testing.T) *redisstore.Store {
		return open(t, redisstore.Options{Addrs: cl.Addrs()[:1], Cluster: true, Timeout: time.Second})
	}
	t.Run("Conformance", func(t *testing.T) {
		sessiontest.Run(t, func(t *testing.T) session.Store { return newStore(t) })
	})
	t.Run("IDPSessions", func(t *testing.T) {
		sessiontest.RunIDPSessions(t, func(t *testing.T) session.Store { return newStore(t) })
	})
	s := newStore(t)
	m := manager(t, s)
	ctx := context.Background()
	cookies := createSessions(t, m, 300)

	t.Run("SessionsSpreadAcrossAllMasters", func(t *testing.T) {
		for _, n := range cl.Nodes {
			out, err := redistest.CLI(n.Addr, "dbsize")
			if err != nil {
				t.Fatal(err)
			}
			if k, _ := strconv.Atoi(strings.TrimSpace(out)); k < 30 {
				t.Errorf("master %s holds %d of 300 sessions", n.Addr, k)
			}
		}
	})
	t.Run("LockSharesTheSessionSlot", func(t *testing.T) {
		sess, err := m.Load(ctx, cookies[0], "")
		if err != nil {
			t.Fatal(err)
		}
		lockKey := strings.Replace(sess.Key(), ":s:", ":r:", 1)
		a, _ := redistest.CLI(cl.Nodes[0].Addr, "cluster", "keyslot", sess.Key())
		b, _ := redistest.CLI(cl.Nodes[0].Addr, "cluster", "keyslot", lockKey)
		if a != b {
			t.Fatalf("session key slot %s, lock key slot %s", a, b)
		}
		if _, ok, err := m.TryLock(ctx, sess, time.Second); err != nil || !ok {
			t.Fatalf("TryLock in a cluster: %v %v", ok, err)
		}
	})
	t.Run("SlotMigration", func(t *testing.T) {
		from, _ := cl.NodeID(cl.Nodes[0])
		to, _ := cl.NodeID(cl.Nodes[1])
		out, err := exec.Command("redis-cli", "--cluster", "reshard", cl.Nodes[0].Addr, "--cluster-from", from, "--cluster-to", to,
			"--cluster-slots", "3000", "--cluster-yes").CombinedOutput()
		if err != nil {
			t.Fatalf("reshard: %v: %s", err, out)
		}
		moved := strings.Count(string(out), "Moving slot")
		if moved < 1000 {
			t.Fatalf("only %d slots moved", moved)
		}
		for i, c := range cookies {
			if _, err := m.Load(ctx, c, ""); err != nil {
				t.Fatalf("session %d after %d slots moved: %v", i, moved, err)
			}
		}
	})
	// Plain PUBLISH reaches the subscribers of every node; each replica's
	// heartbeat goes to every master and comes back from each.
	t.Run("CacheInvalidation", func(t *testing.T) {
		sa := open(t, redisstore.Options{Addrs: cl.Addrs()[:1], Cluster: true, Timeout: time.Second})
		sb := open(t, redisstore.Options{Addrs: cl.Addrs()[2:], Cluster: true, Timeout: time.Second})
		a := cachedManager(t, sa, sa, "cl", longStaleness)
		b := cachedManager(t, sb, sb, "cl", longStaleness)
		checkPropagation(t, a, b, 100, 30)
	})
}

func TestSentinel(t *testing.T) {
	redistest.Require(t)
	st, err := redistest.StartSentinel(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(st.Stop)
	newStore := func(t *testing.T) *redisstore.Store {
		return open(t, redisstore.Options{Addrs: st.SentinelAddrs(), MasterName: st.MasterName, Timeout: time.Second})
	}
	t.Run("Conformance", func(t *testing.T) {
		sessiontest.Run(t, func(t *testing.T) session.Store { return newStore(t) })
	})
	sa, sb := newStore(t), newStore(t)
	ca := cachedManager(t, sa, sa, "sent", longStaleness)
	cb := cachedManager(t, sb, sb, "sent", longStaleness)
	t.Run("CacheInvalidation", func(t *testing.T) { checkPropagation(t, ca, cb, 100, 30) })
	t.Run("Failover", func(t *testing.T) {
		s := newStore(t)
		m := manager(t, s)
		ctx := context.Background()
		cookies := createSessions(t, m, 100)
		if out, err := redistest.CLI(st.Master.Addr, "wait", "1", "5000"); err != nil || strings.TrimSpace(out) != "1" {
			t.Fatalf("replica did not acknowledge the writes: %q %v", out, err)
		}
		old := st.Master.Addr
		st.Master.Stop()
		if err := st.WaitFailover(old, 30*time.Second); err != nil {
			t.Fatal(err)
		}
		var failed int
		for i, c := range cookies {
			deadline := time.Now().Add(10 * time.Second)
			for {
				_, err := m.Load(ctx, c, "")
				if err == nil {
					break
				}
				if errors.Is(err, session.ErrNoSession) {
					t.Fatalf("session %d is gone after the failover", i)
				}
				failed++
				if time.Now().After(deadline) {
					t.Fatalf("session %d unreachable 10s after the failover: %v", i, err)
				}
				time.Sleep(50 * time.Millisecond)
			}
		}
		t.Logf("failover: all %d sessions work on the new master; %d reads failed (store errors, answered 503) while clients switched", len(cookies), failed)
		if _, _, err := m.Create(ctx, &sessionpb.Session{Subject: "after"}); err != nil {
			t.Fatalf("writes after the failover: %v", err)
		}
	})
	// The subscribers were on the old master: they find the new one.
	t.Run("CacheInvalidationAfterFailover", func(t *testing.T) {
		back := sessiontest.WaitFor(t, "invalidation channels up on the new master", 30*time.Second, func() bool {
			return ca.CacheStats().ChannelUp && cb.CacheStats().ChannelUp
		})
		t.Logf("MEASURE channels up %s after the failover test", back)
		checkPropagation(t, ca, cb, 50, 10)
	})
}

// One dead master costs only the sessions it holds: the others keep working
// without a single error, also when the pools to the healthy masters must
// open new connections while the dead one is backing off.
func TestClusterDeadMasterLeavesTheOthersAlone(t *testing.T) {
	redistest.Require(t)
	// As managed Redis Clusters run: the slots of live masters keep being
	// served when one master is down.
	cl, err := redistest.StartCluster(t.TempDir(), 3, "--cluster-require-full-coverage", "no")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(cl.Stop)
	s := open(t, redisstore.Options{Addrs: cl.Addrs(), Cluster: true, Timeout: time.Second,
		BackOffMultiplier: 500 * time.Millisecond, RetryCap: 2 * time.Second})
	m := manager(t, s)
	ctx := context.Background()
	cookies := createSessions(t, m, 120)
	dead := cl.Nodes[2]
	onDead := map[string]bool{}
	out, err := exec.Command("redis-cli", "-p", strings.Split(dead.Addr, ":")[1], "--scan").Output()
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range strings.Fields(string(out)) {
		onDead[k] = true
	}
	var alive []string
	for _, c := range cookies {
		sess, err := m.Load(ctx, c, "")
		if err != nil {
			t.Fatal(err)
		}
		if !onDead[sess.Key()] {
			alive = append(alive, c)
		}
	}
	if len(onDead) == 0 || len(alive) == 0 {
		t.Fatalf("%d sessions on the dead master, %d elsewhere: the spread is wrong", len(onDead), len(alive))
	}
	dead.Stop()
	// Touch the dead master so that its gate backs off, then load the other
	// sessions with enough concurrency to need new connections.
	for _, c := range cookies {
		_, _ = m.Load(ctx, c, "")
	}
	var failures atomic.Int32
	deadline := time.Now().Add(3 * time.Second)
	var wg sync.WaitGroup
	for w := range 24 {
		wg.Go(func() {
			for i := w; time.Now().Before(deadline); i++ {
				if _, err := m.Load(ctx, alive[i%len(alive)], ""); err != nil {
					if failures.Add(1) == 1 {
						t.Errorf("a session on a healthy master failed: %v", err)
					}
				}
				if i%len(alive) == 0 {
					_, _ = m.Load(ctx, cookies[i%len(cookies)], "") // and keep poking the dead one
				}
			}
		})
	}
	wg.Wait()
	if n := failures.Load(); n != 0 {
		t.Fatalf("%d loads of sessions on healthy masters failed while one master was dead", n)
	}
}
