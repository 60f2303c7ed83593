package sessiontest

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/extauthz/extauthz/pkg/session"
	"github.com/extauthz/extauthz/proto/sessionpb"
)

// RunIDPSessions runs the back-channel logout suite on a store: what a
// logout token names (a sid, or a sub, at its issuer) ends on every tenant
// and every replica, and nothing else. newStore returns a store for one
// subtest; every subtest has its own key prefix, so a shared backend works.
func RunIDPSessions(t *testing.T, newStore func(t *testing.T) session.Store) {
	const shared = "https://idp.example"
	ctx := context.Background()

	t.Run("SharedIssuerSIDEndsTheSessionsOfEveryTenant", func(t *testing.T) {
		w := newWorld(t, newStore(t))
		ax := w.login("a", shared, "alice", "sid-x")
		bx := w.login("b", shared, "alice", "sid-x")
		ay := w.login("a", shared, "alice", "sid-y")
		bob := w.login("b", shared, "bob", "sid-b")
		// The token reached a's host; the sid is the issuer's.
		ended, err := w.r2.EndIDPSession(ctx, shared, "sid-x")
		if err != nil || len(ended) != 2 {
			t.Fatalf("EndIDPSession = %v, %v; want the sessions on a and on b", ended, err)
		}
		w.mustBeEnded(ax, bx)
		w.mustBeAlive(ay, bob)
		if again, err := w.r1.EndIDPSession(ctx, shared, "sid-x"); err != nil || len(again) != 0 {
			t.Fatalf("the same sid again = %v, %v; want nothing", again, err)
		}
	})

	t.Run("SharedIssuerSubjectEndsTheSessionsOfEveryTenant", func(t *testing.T) {
		w := newWorld(t, newStore(t))
		a1 := w.login("a", shared, "alice", "sid-1")
		b2 := w.login("b", shared, "alice", "sid-2")
		c3 := w.login("c", shared, "alice", "")
		bob := w.login("b", shared, "bob", "sid-1")
		other := w.login("b", "https://other.example", "alice", "sid-2")
		ended, err := w.r1.EndIDPSubject(ctx, shared, "alice")
		if err != nil || len(ended) != 3 {
			t.Fatalf("EndIDPSubject = %v, %v; want alice's 3 sessions at the issuer", ended, err)
		}
		w.mustBeEnded(a1, b2, c3)
		w.mustBeAlive(bob, other)
		// The admin API still sees a user by tenant.
		if infos, err := w.r1.Sessions(ctx, "b", "alice"); err != nil || len(infos) != 1 {
			t.Fatalf("Sessions(b, alice) = %v, %v; want the other issuer's one", infos, err)
		}
	})

	t.Run("PerTenantIssuersStayApart", func(t *testing.T) {
		w := newWorld(t, newStore(t))
		issA, issB := "https://a.idp.example", "https://b.idp.example"
		a := w.login("a", issA, "alice", "sid-1")
		b := w.login("b", issB, "alice", "sid-1") // the same sub and sid values at another issuer
		if ended, err := w.r1.EndIDPSubject(ctx, issA, "alice"); err != nil || len(ended) != 1 {
			t.Fatalf("EndIDPSubject = %v, %v; want a's one", ended, err)
		}
		w.mustBeEnded(a)
		w.mustBeAlive(b)
		if ended, err := w.r1.EndIDPSession(ctx, issA, "sid-1"); err != nil || len(ended) != 0 {
			t.Fatalf("EndIDPSession = %v, %v; want nothing", ended, err)
		}
		w.mustBeAlive(b)
		if ended, err := w.r2.SIDEnded(ctx, issB, "sid-1"); err != nil || ended {
			t.Fatalf("SIDEnded at b's issuer = %v, %v; want false", ended, err)
		}
	})

	t.Run("EndedSIDBlocksALoginOnAnotherTenantOfTheIssuer", func(t *testing.T) {
		w := newWorld(t, newStore(t))
		if _, err := w.r1.EndIDPSession(ctx, shared, "sid-late"); err != nil {
			t.Fatal(err)
		}
		// The mark is the issuer's: a racing login on any tenant's host
		// with that issuer sees it.
		for _, c := range []struct {
			issuer, sid string
			want        bool
		}{
			{shared, "sid-late", true},
			{"https://b.idp.example", "sid-late", false},
			{shared, "sid-other", false},
			{shared, "", false},
		} {
			if got, err := w.r2.SIDEnded(ctx, c.issuer, c.sid); err != nil || got != c.want {
				t.Errorf("SIDEnded(%q, %q) = %v, %v; want %v", c.issuer, c.sid, got, err, c.want)
			}
		}
	})
}

// world is two replicas with caches on one store.
type world struct {
	t       *testing.T
	prefix  string
	r1, r2  *session.Manager
	tenants map[string]string // cookie → tenant
}

func newWorld(t *testing.T, store session.Store) *world {
	keys, err := session.NewKeys([]byte(strings.Repeat("w", 64)))
	if err != nil {
		t.Fatal(err)
	}
	hub := NewHub()
	w := &world{t: t, prefix: "idp-" + t.Name(), tenants: map[string]string{}}
	replica := func() *session.Manager {
		m := session.NewManager(store, keys, session.Options{Prefix: w.prefix, IdleTimeout: time.Minute, MaxLifetime: time.Hour,
			Cache: &session.CacheOptions{Peers: hub.Peer()}})
		t.Cleanup(m.Start(context.Background()))
		for start := time.Now(); !m.CacheStats().ChannelUp; time.Sleep(time.Millisecond) {
			if time.Since(start) > 5*time.Second {
				t.Fatal("the cache's channel is not up")
			}
		}
		return m
	}
	w.r1, w.r2 = replica(), replica()
	return w
}

// login makes a session, loaded (cached) on both replicas.
func (w *world) login(tenant, issuer, sub, sid string) string {
	w.t.Helper()
	ctx := context.Background()
	_, c, err := w.r1.Create(ctx, &sessionpb.Session{Tenant: tenant, Issuer: issuer, Subject: sub, Sid: sid, AccessToken: "at"})
	if err != nil {
		w.t.Fatal(err)
	}
	w.tenants[c] = tenant
	w.mustBeAlive(c)
	return c
}

func (w *world) alive(c string, m *session.Manager) bool {
	w.t.Helper()
	_, err := m.Load(context.Background(), c, w.tenants[c])
	if err != nil && !errors.Is(err, session.ErrNoSession) {
		w.t.Fatal(err)
	}
	return err == nil
}

func (w *world) mustBeAlive(cs ...string) {
	w.t.Helper()
	for i, c := range cs {
		if !w.alive(c, w.r1) || !w.alive(c, w.r2) {
			w.t.Fatalf("session %d (tenant %s) was ended", i, w.tenants[c])
		}
	}
}

func (w *world) mustBeEnded(cs ...string) {
	w.t.Helper()
	for i, c := range cs {
		if w.alive(c, w.r1) || w.alive(c, w.r2) {
			w.t.Fatalf("session %d (tenant %s) still opens", i, w.tenants[c])
		}
	}
}
