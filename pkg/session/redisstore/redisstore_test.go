package redisstore_test

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/extauthz/extauthz/internal/redistest"
	"github.com/extauthz/extauthz/pkg/session"
	"github.com/extauthz/extauthz/pkg/session/redisstore"
	"github.com/extauthz/extauthz/pkg/session/sessiontest"
	"github.com/extauthz/extauthz/proto/sessionpb"
)

func newStore(t *testing.T, addr string) *redisstore.Store {
	t.Helper()
	s, err := redisstore.New(redisstore.Options{Addrs: []string{addr}, Timeout: 2 * time.Second}) // generous: CI runs every package at once, with -race
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformanceStandalone(t *testing.T) {
	srv := redistest.Run(t)
	sessiontest.Run(t, func(t *testing.T) session.Store { return newStore(t, srv.Addr) })
	t.Run("IDPSessions", func(t *testing.T) {
		sessiontest.RunIDPSessions(t, func(t *testing.T) session.Store { return newStore(t, srv.Addr) })
	})
}

// TestRedisDumpRevealsNothing: a dump of every key and value after sessions
// and logins exist holds no cookie value, no state and no token in clear.
func TestRedisDumpRevealsNothing(t *testing.T) {
	srv := redistest.Run(t)
	s := newStore(t, srv.Addr)
	keys, err := session.NewKeys([]byte(strings.Repeat("z", 64)))
	if err != nil {
		t.Fatal(err)
	}
	m := session.NewManager(s, keys, session.Options{})
	ctx := context.Background()
	var secrets []string
	for i := range 20 {
		rec := &sessionpb.Session{
			Issuer: "https://idp.example", Subject: "user-secret", Sid: fmt.Sprintf("sid-%d-secret", i), AccessToken: fmt.Sprintf("access-token-%d-secret", i), RefreshToken: fmt.Sprintf("refresh-token-%d-secret", i),
			IdToken: fmt.Sprintf("id-token-%d-secret", i), CsrfToken: fmt.Sprintf("csrf-%d-secret", i),
		}
		_, cookie, err := m.Create(ctx, rec)
		if err != nil {
			t.Fatal(err)
		}
		login, err := m.SealLogin(&sessionpb.LoginState{Nonce: fmt.Sprintf("nonce-%d-secret", i), PkceVerifier: fmt.Sprintf("verifier-%d-secret", i)}, "app.example.com")
		if err != nil {
			t.Fatal(err)
		}
		ls, err := m.OpenLogin(login.State, login.Cookie, "", "app.example.com")
		if err != nil {
			t.Fatal(err)
		}
		if err := m.UseLogin(ctx, login.State, ls); err != nil { // the only login key: its single-use mark
			t.Fatal(err)
		}
		state := login.State
		raw, _ := base64.RawURLEncoding.DecodeString(cookie)
		secrets = append(secrets, cookie, state, login.Cookie, ls.GetNonce(), ls.GetPkceVerifier(), cookie[:43], string(raw[:32]), hex.EncodeToString(raw[:32]),
			rec.AccessToken, rec.RefreshToken, rec.IdToken, rec.CsrfToken, rec.Sid, rec.Subject, "secret")
	}
	var dump strings.Builder
	iter := s.Client().Scan(ctx, 0, "*", 100).Iterator()
	n := 0
	for iter.Next(ctx) {
		k := iter.Val()
		var v string
		if typ := s.Client().Type(ctx, k).Val(); typ == "zset" { // the session indexes
			zs, err := s.Client().ZRangeWithScores(ctx, k, 0, -1).Result()
			if err != nil {
				t.Fatal(err)
			}
			v = fmt.Sprint(zs)
		} else if v, err = s.Client().Get(ctx, k).Result(); err != nil {
			t.Fatal(err)
		}
		dump.WriteString(k + " " + v + "\n")
		n++
	}
	if n != 62 {
		t.Fatalf("dump has %d keys, want 62 (20 sessions, 20 used logins, 20 sid indexes, a user's index in the tenant and at the issuer)", n)
	}
	for _, sec := range secrets {
		if strings.Contains(dump.String(), sec) {
			t.Fatalf("the Redis dump contains %q", sec)
		}
	}
}
