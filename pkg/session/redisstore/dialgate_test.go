package redisstore

import (
	"context"
	"errors"
	"net"
	"testing"
	"time"
)

// TestDialGateBacksOffLikeApprouter: after the n-th failed connection in a
// row, no attempt for min(n × backOffMultiplier, defaultRetryTimeout).
func TestDialGateBacksOffLikeApprouter(t *testing.T) {
	now := time.Unix(0, 0)
	g := &dialGate{step: 50 * time.Millisecond, limit: 120 * time.Millisecond, now: func() time.Time { return now }}
	attempts := 0
	refused := errors.New("connection refused")
	dial := func(context.Context) (net.Conn, error) { attempts++; return nil, refused }
	ctx := context.Background()

	for n, wantDelay := range []time.Duration{50, 100, 120, 120} {
		if _, err := g.dial(ctx, dial); !errors.Is(err, refused) {
			t.Fatalf("attempt %d: %v", n+1, err)
		}
		if d := g.delay(); d != wantDelay*time.Millisecond {
			t.Fatalf("after %d failures the delay is %v, want %v", n+1, d, wantDelay*time.Millisecond)
		}
		before := attempts
		now = now.Add(wantDelay*time.Millisecond - time.Millisecond)
		if _, err := g.dial(ctx, dial); err == nil || attempts != before {
			t.Fatalf("a dial inside the back-off window reached the network")
		}
		now = now.Add(time.Millisecond)
	}
	g.dial(ctx, func(context.Context) (net.Conn, error) { c, _ := net.Pipe(); return c, nil })
	if g.failures != 0 {
		t.Fatal("a successful connection must reset the count")
	}
}
