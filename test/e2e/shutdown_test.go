package e2e_test

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// A rolling update as Kubernetes runs one: two replicas take a load, and
// one gets SIGTERM. Its readiness fails at once while it keeps answering
// for the drain delay, so the load balancer, which follows readiness (as
// kube-proxy and Envoy's health checks do), moves every check to the other
// replica before the listeners close: no check fails, none needs a retry.
// Then the process exits 0.
func TestShutdownRollingUpdate(t *testing.T) {
	const drainDelay = 2 * time.Second
	a := replica(t, "a", hydra, client, "EXTAUTHZ_DRAIN_DELAY", drainDelay.String())
	b := replica(t, "b", hydra, client)
	cookies := seedSessions(t, redis.Addr, 200)

	var aReady atomic.Bool // the load balancer's view of a
	aReady.Store(true)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
			aReady.Store(readyz(a) == 200)
		}
	})
	var mu sync.Mutex
	outcomes := map[string]int{}
	var sigterm atomic.Int64 // unix nanos of the SIGTERM; 0 before
	var aAfterSIGTERM atomic.Int64
	for w := range 16 {
		wg.Go(func() {
			for i := w; ; i += 16 {
				select {
				case <-stop:
					return
				default:
				}
				x := b
				if i%2 == 0 && aReady.Load() {
					x = a
				}
				s := check(x, cookies[i%len(cookies)])
				if x == a && sigterm.Load() != 0 {
					aAfterSIGTERM.Add(1)
				}
				mu.Lock()
				outcomes[fmt.Sprintf("%s-%d", x.Name, s)]++
				mu.Unlock()
			}
		})
	}
	time.Sleep(500 * time.Millisecond)

	began := time.Now()
	sigterm.Store(began.UnixNano())
	stopped := make(chan error, 1)
	go func() { stopped <- a.Stop() }()
	for readyz(a) == 200 {
		if time.Since(began) > time.Second {
			t.Fatal("a is still ready 1s after SIGTERM")
		}
		time.Sleep(5 * time.Millisecond)
	}
	notReady := time.Since(began)
	err := <-stopped
	exited := time.Since(began)
	time.Sleep(200 * time.Millisecond) // b alone
	close(stop)
	wg.Wait()

	var labels []string
	for l, n := range outcomes {
		labels = append(labels, fmt.Sprintf("%s: %d", l, n))
	}
	slices.Sort(labels)
	t.Logf("SIGTERM to a: not ready after %v, exited after %v (drain delay %v); %d checks sent to a after SIGTERM; outcomes {%s}",
		notReady.Round(time.Millisecond), exited.Round(time.Millisecond), drainDelay, aAfterSIGTERM.Load(), strings.Join(labels, ", "))
	if err != nil {
		t.Errorf("a exited with %v after SIGTERM, want status 0", err)
	}
	if exited < drainDelay {
		t.Errorf("a exited %v after SIGTERM, before its drain delay %v", exited, drainDelay)
	}
	for l, n := range outcomes {
		if !strings.HasSuffix(l, "-200") {
			t.Errorf("%d checks ended %s", n, l)
		}
	}
	if outcomes["a-200"] == 0 || outcomes["b-200"] == 0 {
		t.Error("the load did not reach both replicas")
	}
	onlyStatus(t, "every session on the remaining replica", allWork(b, cookies), 200)
}
