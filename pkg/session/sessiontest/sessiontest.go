// Package sessiontest is the conformance suite every session.Store passes.
package sessiontest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/extauthz/extauthz/pkg/session"
)

// Run runs the suite. newStore returns an empty store for one subtest; keys
// are unique per subtest so a shared backend works too.
func Run(t *testing.T, newStore func(t *testing.T) session.Store) {
	ctx := context.Background()
	key := func(t *testing.T, name string) string {
		return fmt.Sprintf("conformance:{%s}:%s", t.Name(), name)
	}
	t.Run("GetMissing", func(t *testing.T) {
		s := newStore(t)
		if _, err := s.Get(ctx, key(t, "none"), 0); !errors.Is(err, session.ErrNotFound) {
			t.Fatalf("Get of a missing key: err = %v, want ErrNotFound", err)
		}
		if _, err := s.Get(ctx, key(t, "none"), time.Minute); !errors.Is(err, session.ErrNotFound) {
			t.Fatalf("Get with idle of a missing key: err = %v, want ErrNotFound", err)
		}
	})
	t.Run("SetGetBinary", func(t *testing.T) {
		s := newStore(t)
		v := make([]byte, 256)
		for i := range v {
			v[i] = byte(i)
		}
		if err := s.Set(ctx, key(t, "k"), v, time.Minute); err != nil {
			t.Fatal(err)
		}
		v[0] = 99 // the store must have kept its own copy
		got, err := s.Get(ctx, key(t, "k"), 0)
		if err != nil {
			t.Fatal(err)
		}
		if got[0] != 0 || len(got) != 256 || got[255] != 255 {
			t.Fatalf("Get returned %d bytes starting %v, want the 256 bytes written", len(got), got[:4])
		}
	})
	t.Run("SetOverwrites", func(t *testing.T) {
		s := newStore(t)
		k := key(t, "k")
		mustSet(t, s, k, "one", time.Minute)
		mustSet(t, s, k, "two", time.Minute)
		if got := mustGet(t, s, k, 0); got != "two" {
			t.Fatalf("Get = %q, want two", got)
		}
	})
	t.Run("TTLExpires", func(t *testing.T) {
		s := newStore(t)
		k := key(t, "k")
		mustSet(t, s, k, "v", 150*time.Millisecond)
		time.Sleep(300 * time.Millisecond)
		if _, err := s.Get(ctx, k, 0); !errors.Is(err, session.ErrNotFound) {
			t.Fatalf("Get after TTL: err = %v, want ErrNotFound", err)
		}
	})
	t.Run("GetWithIdleExtends", func(t *testing.T) {
		s := newStore(t)
		k := key(t, "k")
		mustSet(t, s, k, "v", 200*time.Millisecond)
		mustGet(t, s, k, 10*time.Second)
		time.Sleep(400 * time.Millisecond)
		if got := mustGet(t, s, k, 0); got != "v" {
			t.Fatalf("Get = %q after the idle extension, want v", got)
		}
	})
	t.Run("GetWithoutIdleKeepsTTL", func(t *testing.T) {
		s := newStore(t)
		k := key(t, "k")
		mustSet(t, s, k, "v", 200*time.Millisecond)
		mustGet(t, s, k, 0)
		time.Sleep(400 * time.Millisecond)
		if _, err := s.Get(ctx, k, 0); !errors.Is(err, session.ErrNotFound) {
			t.Fatalf("Get(idle=0) must not extend the TTL: err = %v, want ErrNotFound", err)
		}
	})
	t.Run("SetNX", func(t *testing.T) {
		s := newStore(t)
		k := key(t, "lock")
		ok, err := s.SetNX(ctx, k, []byte("a"), 150*time.Millisecond)
		if err != nil || !ok {
			t.Fatalf("first SetNX = %v, %v; want true, nil", ok, err)
		}
		ok, err = s.SetNX(ctx, k, []byte("b"), time.Minute)
		if err != nil || ok {
			t.Fatalf("second SetNX = %v, %v; want false, nil", ok, err)
		}
		if got := mustGet(t, s, k, 0); got != "a" {
			t.Fatalf("value after a refused SetNX = %q, want a", got)
		}
		time.Sleep(300 * time.Millisecond)
		ok, err = s.SetNX(ctx, k, []byte("c"), time.Minute)
		if err != nil || !ok {
			t.Fatalf("SetNX after expiry = %v, %v; want true, nil", ok, err)
		}
	})
	t.Run("SetNXConcurrentOneWinner", func(t *testing.T) {
		s := newStore(t)
		k := key(t, "lock")
		var wins atomic.Int32
		var wg sync.WaitGroup
		for i := range 32 {
			wg.Go(func() {
				ok, err := s.SetNX(ctx, k, []byte{byte(i)}, time.Minute)
				if err != nil {
					t.Error(err)
				}
				if ok {
					wins.Add(1)
				}
			})
		}
		wg.Wait()
		if n := wins.Load(); n != 1 {
			t.Fatalf("%d of 32 concurrent SetNX won, want exactly 1", n)
		}
	})
	t.Run("ReplaceOnlyExisting", func(t *testing.T) {
		s := newStore(t)
		k := key(t, "session")
		if ok, err := s.Replace(ctx, k, []byte("v"), time.Minute); err != nil || ok {
			t.Fatalf("Replace of a missing key = %v, %v; want false, nil", ok, err)
		}
		if _, err := s.Get(ctx, k, 0); !errors.Is(err, session.ErrNotFound) {
			t.Fatalf("Replace of a missing key created it: err = %v", err)
		}
		mustSet(t, s, k, "one", time.Minute)
		if ok, err := s.Replace(ctx, k, []byte("two"), 200*time.Millisecond); err != nil || !ok {
			t.Fatalf("Replace of an existing key = %v, %v; want true, nil", ok, err)
		}
		if got := mustGet(t, s, k, 0); got != "two" {
			t.Fatalf("Get after Replace = %q, want two", got)
		}
		time.Sleep(400 * time.Millisecond)
		if _, err := s.Get(ctx, k, 0); !errors.Is(err, session.ErrNotFound) {
			t.Fatalf("Replace did not set the new TTL: err = %v", err)
		}
	})
	t.Run("ReplaceAfterDeleteStaysDeleted", func(t *testing.T) {
		// A refresh that finishes after a logout must not bring the session back.
		s := newStore(t)
		k := key(t, "session")
		mustSet(t, s, k, "v", time.Minute)
		var wg sync.WaitGroup
		var replaced atomic.Int32
		if err := s.Delete(ctx, k); err != nil {
			t.Fatal(err)
		}
		for range 16 {
			wg.Go(func() {
				ok, err := s.Replace(ctx, k, []byte("refreshed"), time.Minute)
				if err != nil {
					t.Error(err)
				}
				if ok {
					replaced.Add(1)
				}
			})
		}
		wg.Wait()
		if n := replaced.Load(); n != 0 {
			t.Fatalf("%d Replaces after Delete wrote the key", n)
		}
		if _, err := s.Get(ctx, k, 0); !errors.Is(err, session.ErrNotFound) {
			t.Fatalf("Get after Delete and Replace: err = %v, want ErrNotFound", err)
		}
	})
	t.Run("Delete", func(t *testing.T) {
		s := newStore(t)
		k := key(t, "k")
		mustSet(t, s, k, "v", time.Minute)
		if err := s.Delete(ctx, k); err != nil {
			t.Fatal(err)
		}
		if _, err := s.Get(ctx, k, 0); !errors.Is(err, session.ErrNotFound) {
			t.Fatalf("Get after Delete: err = %v, want ErrNotFound", err)
		}
		if err := s.Delete(ctx, k); err != nil {
			t.Fatalf("Delete of a missing key: %v, want nil", err)
		}
	})
	t.Run("DeleteIf", func(t *testing.T) {
		s := newStore(t)
		k := key(t, "lock")
		mustSet(t, s, k, "mine", time.Minute)
		if ok, err := s.DeleteIf(ctx, k, []byte("theirs")); err != nil || ok {
			t.Fatalf("DeleteIf with another value = %v, %v; want false, nil", ok, err)
		}
		if got := mustGet(t, s, k, 0); got != "mine" {
			t.Fatalf("value after a refused DeleteIf = %q", got)
		}
		if ok, err := s.DeleteIf(ctx, k, []byte("mine")); err != nil || !ok {
			t.Fatalf("DeleteIf with the value = %v, %v; want true, nil", ok, err)
		}
		if ok, err := s.DeleteIf(ctx, k, []byte("mine")); err != nil || ok {
			t.Fatalf("DeleteIf of a missing key = %v, %v; want false, nil", ok, err)
		}
	})
	t.Run("CanceledContextIsAnErrorNotNotFound", func(t *testing.T) {
		s := newStore(t)
		k := key(t, "k")
		mustSet(t, s, k, "v", time.Minute)
		cctx, cancel := context.WithCancel(ctx)
		cancel()
		_, err := s.Get(cctx, k, time.Minute)
		if err == nil || errors.Is(err, session.ErrNotFound) {
			t.Fatalf("Get with a canceled context: err = %v, want a store error (not ErrNotFound)", err)
		}
		if got := mustGet(t, s, k, 0); got != "v" {
			t.Fatalf("value after a failed Get = %q, want v", got)
		}
	})
	t.Run("IndexAddRange", func(t *testing.T) {
		s := newStore(t)
		now := time.Now().Truncate(time.Second)
		a, b := key(t, "u"), key(t, "d")
		for i, m := range []string{"m3", "m1", "m2"} {
			d := now.Add(time.Duration(3-i) * time.Hour)
			if m == "m3" {
				d = now.Add(3 * time.Hour)
			}
			if _, err := s.IndexAdd(ctx, []string{a, b}, session.IndexEntry{Member: m, Deadline: d}, now, 100); err != nil {
				t.Fatal(err)
			}
		}
		// m1 at +2h, m2 at +1h, m3 at +3h; m2 moved to +4h.
		if _, err := s.IndexAdd(ctx, []string{a}, session.IndexEntry{Member: "m2", Deadline: now.Add(4 * time.Hour)}, now, 100); err != nil {
			t.Fatal(err)
		}
		got := members(t, s, a, now)
		if want := "m1@2h0m0s m3@3h0m0s m2@4h0m0s"; describe(got, now) != want {
			t.Fatalf("index a = %s, want %s", describe(got, now), want)
		}
		if want := "m2@1h0m0s m1@2h0m0s m3@3h0m0s"; describe(members(t, s, b, now), now) != want {
			t.Fatalf("index b = %s, want %s", describe(members(t, s, b, now), now), want)
		}
		if got := members(t, s, key(t, "none"), now); len(got) != 0 {
			t.Fatalf("a missing index has members %v", got)
		}
		// Members past their deadline are not returned.
		if got := describe(members(t, s, a, now.Add(150*time.Minute)), now); got != "m3@3h0m0s m2@4h0m0s" {
			t.Fatalf("index a later = %s", got)
		}
	})
	t.Run("IndexPrunesExpiredAndCaps", func(t *testing.T) {
		s := newStore(t)
		now := time.Now().Truncate(time.Second)
		k := key(t, "u")
		var capped []string
		add := func(m string, d time.Duration, at time.Time, max int) {
			t.Helper()
			c, err := s.IndexAdd(ctx, []string{k}, session.IndexEntry{Member: m, Deadline: now.Add(d)}, at, max)
			if err != nil {
				t.Fatal(err)
			}
			capped = append(capped, c...)
		}
		add("old", time.Minute, now, 5)
		add("new", time.Hour, now.Add(2*time.Minute), 5) // "old" is past its deadline then: dropped
		if got := describe(members(t, s, k, now), now); got != "new@1h0m0s" {
			t.Fatalf("after pruning: %s, want only new", got)
		}
		for i := range 8 {
			add(fmt.Sprintf("s%d", i), time.Duration(i+2)*time.Hour, now, 5)
		}
		if got := describe(members(t, s, k, now), now); got != "s3@5h0m0s s4@6h0m0s s5@7h0m0s s6@8h0m0s s7@9h0m0s" {
			t.Fatalf("capped at 5: %s, want the 5 latest", got)
		}
		// The live members dropped for the cap are returned (their sessions
		// are ended, not left unrevocable); the expired one is not.
		if got := strings.Join(capped, " "); got != "new s0 s1 s2" {
			t.Fatalf("dropped for the cap: %q, want new s0 s1 s2", got)
		}
	})
	t.Run("IndexExpiresWithItsLastMember", func(t *testing.T) {
		s := newStore(t)
		now := time.Now()
		k := key(t, "u")
		if _, err := s.IndexAdd(ctx, []string{k}, session.IndexEntry{Member: "m", Deadline: now}, now, 5); err != nil {
			t.Fatal(err)
		}
		ttl, err := s.TTLs(ctx, []string{k})
		if err != nil || ttl[0] <= 0 || ttl[0] > 2*time.Second {
			t.Fatalf("index TTL = %v, %v; want at most a couple of seconds after its last deadline", ttl, err)
		}
	})
	t.Run("TTLs", func(t *testing.T) {
		s := newStore(t)
		a, b := key(t, "a"), key(t, "b")
		mustSet(t, s, a, "v", time.Minute)
		got, err := s.TTLs(ctx, []string{a, b})
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != 2 || got[0] <= 50*time.Second || got[0] > time.Minute || got[1] != 0 {
			t.Fatalf("TTLs = %v, want [~1m 0]", got)
		}
		if got, err := s.TTLs(ctx, nil); err != nil || len(got) != 0 {
			t.Fatalf("TTLs(nil) = %v, %v", got, err)
		}
	})
	t.Run("Ping", func(t *testing.T) {
		if err := newStore(t).Ping(ctx); err != nil {
			t.Fatalf("Ping: %v", err)
		}
	})
}

func mustSet(t *testing.T, s session.Store, k, v string, ttl time.Duration) {
	t.Helper()
	if err := s.Set(context.Background(), k, []byte(v), ttl); err != nil {
		t.Fatalf("Set(%s): %v", k, err)
	}
}

func mustGet(t *testing.T, s session.Store, k string, idle time.Duration) string {
	t.Helper()
	b, err := s.Get(context.Background(), k, idle)
	if err != nil {
		t.Fatalf("Get(%s): %v", k, err)
	}
	return string(bytes.Clone(b))
}

func members(t *testing.T, s session.Store, k string, now time.Time) []session.IndexEntry {
	t.Helper()
	es, err := s.IndexRange(context.Background(), k, now)
	if err != nil {
		t.Fatalf("IndexRange(%s): %v", k, err)
	}
	return es
}

// describe renders entries as "member@deadline-from-now ...".
func describe(es []session.IndexEntry, now time.Time) string {
	var b bytes.Buffer
	for i, e := range es {
		if i > 0 {
			b.WriteByte(' ')
		}
		fmt.Fprintf(&b, "%s@%v", e.Member, e.Deadline.Sub(now))
	}
	return b.String()
}

// WaitFor polls ok every millisecond until it holds, and fails the test if
// it does not within; it returns how long it took.
func WaitFor(t testing.TB, what string, within time.Duration, ok func() bool) time.Duration {
	t.Helper()
	start := time.Now()
	for !ok() {
		if time.Since(start) > within {
			t.Fatalf("%s: not within %s", what, within)
		}
		time.Sleep(time.Millisecond)
	}
	return time.Since(start)
}
