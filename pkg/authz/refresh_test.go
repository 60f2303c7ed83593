package authz_test

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/extauthz/extauthz/pkg/authz"
	"github.com/extauthz/extauthz/pkg/idp"
	"github.com/extauthz/extauthz/proto/sessionpb"
)

func TestRefreshAheadOneRefreshManyRequests(t *testing.T) {
	f := newFixture(t, authz.Options{RefreshAhead: 5 * time.Minute})
	f.idp.delay = 50 * time.Millisecond
	f.idp.refreshed = &idp.Tokens{AccessToken: "new", Expiry: time.Now().Add(time.Hour), Subject: "alice"}
	c := f.newSession(t, &sessionpb.Session{Subject: "alice", AccessToken: "old", RefreshToken: "rt",
		AccessTokenExpiry: time.Now().Add(time.Minute).Unix()})
	var wg sync.WaitGroup
	var allowed atomic.Int32
	for range 50 {
		wg.Go(func() {
			d := f.engine.Check(context.Background(), get("/", "JSESSIONID="+c))
			if d.Allow {
				allowed.Add(1)
			}
		})
	}
	wg.Wait()
	if n := f.idp.refreshes.Load(); n != 1 {
		t.Fatalf("%d refresh grants for 50 concurrent requests, want 1", n)
	}
	if n := allowed.Load(); n != 50 {
		t.Fatalf("%d of 50 requests allowed during the refresh", n)
	}
	d := f.engine.Check(context.Background(), get("/", "JSESSIONID="+c))
	if d.Upstream[0].Value != "Bearer new" {
		t.Fatalf("after the refresh: %v", d.Upstream)
	}
	if n := f.idp.refreshes.Load(); n != 1 {
		t.Fatalf("the fresh token was refreshed again (%d grants)", n)
	}
}

func TestRefreshFailures(t *testing.T) {
	ctx := context.Background()
	t.Run("still valid: keep the token, retry later", func(t *testing.T) {
		f := newFixture(t, authz.Options{RefreshAhead: 5 * time.Minute})
		f.idp.refreshErr = errors.New("timeout")
		c := f.newSession(t, &sessionpb.Session{AccessToken: "old", RefreshToken: "rt", AccessTokenExpiry: time.Now().Add(time.Minute).Unix()})
		for i := 1; i <= 2; i++ {
			if d := f.engine.Check(ctx, get("/", "JSESSIONID="+c)); !d.Allow || d.Upstream[0].Value != "Bearer old" {
				t.Fatalf("request %d: %+v", i, d)
			}
			if n := f.idp.refreshes.Load(); int(n) != i {
				t.Fatalf("refresh attempts %d after %d requests: the failure must be retried", n, i)
			}
		}
	})
	t.Run("expired and rejected: session ends", func(t *testing.T) {
		f := newFixture(t, authz.Options{RefreshAhead: 5 * time.Minute})
		f.idp.refreshErr = fmt.Errorf("%w: invalid_grant", idp.ErrRejected)
		c := f.newSession(t, &sessionpb.Session{AccessToken: "old", RefreshToken: "rt", AccessTokenExpiry: time.Now().Add(-time.Minute).Unix()})
		if d := f.engine.Check(ctx, get("/", "JSESSIONID="+c)); d.Status != http.StatusFound {
			t.Fatalf("expired + rejected refresh: %+v, want a login redirect", d)
		}
		if d := f.engine.Check(ctx, get("/", "JSESSIONID="+c, "x-requested-with", "XMLHttpRequest")); d.Status != http.StatusUnauthorized {
			t.Fatalf("the session must be gone: %d", d.Status)
		}
	})
	t.Run("expired and IdP down: 502, session kept", func(t *testing.T) {
		f := newFixture(t, authz.Options{RefreshAhead: 5 * time.Minute})
		f.idp.refreshErr = errors.New("connection refused")
		c := f.newSession(t, &sessionpb.Session{AccessToken: "old", RefreshToken: "rt", AccessTokenExpiry: time.Now().Add(-time.Minute).Unix()})
		if d := f.engine.Check(ctx, get("/", "JSESSIONID="+c)); d.Status != http.StatusBadGateway {
			t.Fatalf("%+v", d)
		}
		f.idp.refreshErr = nil
		f.idp.refreshed = &idp.Tokens{AccessToken: "new", Expiry: time.Now().Add(time.Hour)}
		if d := f.engine.Check(ctx, get("/", "JSESSIONID="+c)); !d.Allow || d.Upstream[0].Value != "Bearer new" {
			t.Fatalf("after the IdP is back: %+v", d)
		}
	})
	t.Run("expired without refresh token: login", func(t *testing.T) {
		f := newFixture(t, authz.Options{})
		c := f.newSession(t, &sessionpb.Session{AccessToken: "old", AccessTokenExpiry: time.Now().Add(-time.Second).Unix()})
		if d := f.engine.Check(ctx, get("/", "JSESSIONID="+c, "x-requested-with", "XMLHttpRequest")); d.Status != http.StatusUnauthorized || d.Reason != "token_expired" {
			t.Fatalf("%+v", d)
		}
	})
}
