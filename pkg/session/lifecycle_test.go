package session_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/extauthz/extauthz/pkg/session"
	"github.com/extauthz/extauthz/pkg/session/sessiontest"
	"github.com/extauthz/extauthz/proto/sessionpb"
)

func TestEndSessionsByUserSIDAndFingerprintOnEveryReplica(t *testing.T) {
	store := session.NewMemoryStore(nil)
	hub := sessiontest.NewHub()
	a := newReplica(t, store, hub, session.CacheOptions{})
	b := newReplica(t, store, hub, session.CacheOptions{})
	ctx := context.Background()
	login := func(tenant, sub, sid string) string {
		t.Helper()
		_, c, err := a.m.Create(ctx, &sessionpb.Session{Tenant: tenant, Issuer: "https://" + tenant + ".idp", Subject: sub, Sid: sid, AccessToken: "at-" + sub})
		if err != nil {
			t.Fatal(err)
		}
		for _, r := range []*replica{a, b} { // cached on both
			if _, err := r.m.Load(ctx, c, tenant); err != nil {
				t.Fatal(err)
			}
		}
		return c
	}
	alive := func(cookie, tenant string) bool {
		t.Helper()
		okA, okB := true, true
		if _, err := a.m.Load(ctx, cookie, tenant); errors.Is(err, session.ErrNoSession) {
			okA = false
		}
		if _, err := b.m.Load(ctx, cookie, tenant); errors.Is(err, session.ErrNoSession) {
			okB = false
		}
		if okA != okB {
			t.Fatalf("replicas disagree: a %v, b %v", okA, okB)
		}
		return okA
	}
	x1 := login("t1", "alice", "sid-x")
	x2 := login("t1", "alice", "sid-x")
	y := login("t1", "alice", "sid-y")
	bob := login("t1", "bob", "sid-x")     // another user, same sid value: the IdP's sid is what counts
	other := login("t2", "alice", "sid-x") // another tenant, with its own issuer

	infos, err := b.m.Sessions(ctx, "t1", "alice")
	if err != nil || len(infos) != 3 {
		t.Fatalf("Sessions = %v, %v; want 3", infos, err)
	}
	for _, in := range infos {
		if len(in.Fingerprint) != 16 || in.Created.IsZero() || in.LastUsed.Before(in.Created) || !in.Expires.After(time.Now()) {
			t.Fatalf("info %+v", in)
		}
	}

	ended, err := b.m.EndIDPSession(ctx, "https://t1.idp", "sid-x")
	if err != nil || len(ended) != 3 {
		t.Fatalf("EndIDPSession = %v, %v; want alice's two and bob's", ended, err)
	}
	if alive(x1, "t1") || alive(x2, "t1") || alive(bob, "t1") {
		t.Fatal("a session of the ended sid still opens")
	}
	if !alive(y, "t1") || !alive(other, "t2") {
		t.Fatal("a session of another sid or tenant was ended")
	}
	if infos, _ := a.m.Sessions(ctx, "t1", "alice"); len(infos) != 1 {
		t.Fatalf("after the sid logout alice has %d sessions listed, want 1", len(infos))
	}

	y2 := login("t1", "alice", "")
	infos, _ = a.m.Sessions(ctx, "t1", "alice")
	if len(infos) != 2 {
		t.Fatalf("Sessions = %d, want 2", len(infos))
	}
	if ok, err := b.m.EndSession(ctx, "t1", "alice", "0000000000000000"); err != nil || ok {
		t.Fatalf("EndSession of an unknown fingerprint = %v, %v", ok, err)
	}
	if ok, err := b.m.EndSession(ctx, "t2", "alice", infos[0].Fingerprint); err != nil || ok {
		t.Fatalf("EndSession in another tenant = %v, %v", ok, err)
	}
	if ok, err := b.m.EndSession(ctx, "t1", "alice", infos[0].Fingerprint); err != nil || !ok {
		t.Fatalf("EndSession = %v, %v", ok, err)
	}
	if n := btoi(alive(y, "t1")) + btoi(alive(y2, "t1")); n != 1 {
		t.Fatalf("%d of alice's 2 sessions alive after ending one", n)
	}
	ended, err = a.m.EndUser(ctx, "t1", "alice")
	if err != nil || len(ended) != 1 {
		t.Fatalf("EndUser = %v, %v; want 1", ended, err)
	}
	if alive(y, "t1") || alive(y2, "t1") || !alive(other, "t2") {
		t.Fatal("EndUser: wrong sessions ended")
	}
	if ended, err := a.m.EndUser(ctx, "t1", "alice"); err != nil || len(ended) != 0 {
		t.Fatalf("EndUser again = %v, %v; want none", ended, err)
	}
}

func btoi(b bool) int {
	if b {
		return 1
	}
	return 0
}

func TestIndexHoldsNoToken(t *testing.T) {
	store := session.NewMemoryStore(nil)
	m := session.NewManager(store, mustKeys(t, secretA), session.Options{})
	ctx := context.Background()
	s, cookie, err := m.Create(ctx, &sessionpb.Session{Tenant: "t", Subject: "alice", Sid: "sid", AccessToken: "secret-access-token"})
	if err != nil {
		t.Fatal(err)
	}
	infos, err := m.Sessions(ctx, "t", "alice")
	if err != nil || len(infos) != 1 || infos[0].Fingerprint != s.Fingerprint() {
		t.Fatalf("Sessions = %+v, %v", infos, err)
	}
	if fp := infos[0].Fingerprint; strings.Contains(cookie, fp) || !strings.Contains(s.Key(), fp) {
		t.Fatalf("fingerprint %q: must be part of the key's hash, never of the cookie", fp)
	}
}

func TestOnce(t *testing.T) {
	m := session.NewManager(session.NewMemoryStore(nil), mustKeys(t, secretA), session.Options{})
	ctx := context.Background()
	if err := m.Once(ctx, "iss\x00jti-1", time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := m.Once(ctx, "iss\x00jti-1", time.Minute); !errors.Is(err, session.ErrSeen) {
		t.Fatalf("second Once = %v, want ErrSeen", err)
	}
	if err := m.Once(ctx, "iss\x00jti-2", time.Minute); err != nil {
		t.Fatal(err)
	}
}

// A user's sessions beyond the index's cap are ended, not dropped from the
// index and left where no revocation can find them.
func TestSessionsBeyondTheCapAreEnded(t *testing.T) {
	store := session.NewMemoryStore(nil)
	now := time.Now()
	clock := func() time.Time { return now }
	m := session.NewManager(store, mustKeys(t, secretA), session.Options{Now: clock})
	ctx := context.Background()
	_, first, err := m.Create(ctx, &sessionpb.Session{Tenant: "t", Subject: "mallory", Sid: "sx"})
	if err != nil {
		t.Fatal(err)
	}
	now = now.Add(2 * time.Second) // the first has the earliest deadline
	var last string
	for range session.MaxIndexMembers {
		if _, last, err = m.Create(ctx, &sessionpb.Session{Tenant: "t", Subject: "mallory", Sid: "sy"}); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := m.Load(ctx, first, "t"); !errors.Is(err, session.ErrNoSession) {
		t.Fatalf("the session beyond the cap still works: %v", err)
	}
	if _, err := m.Load(ctx, last, "t"); err != nil {
		t.Fatalf("the newest session: %v", err)
	}
	n, err := m.EndUser(ctx, "t", "mallory")
	if err != nil || len(n) != session.MaxIndexMembers {
		t.Fatalf("EndUser ended %d, %v; want every one of the %d left", len(n), err, session.MaxIndexMembers)
	}
	if _, err := m.Load(ctx, last, "t"); !errors.Is(err, session.ErrNoSession) {
		t.Fatalf("after revoking them all: %v", err)
	}
}
