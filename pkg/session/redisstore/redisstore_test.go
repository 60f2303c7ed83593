package redisstore_test

import (
	"testing"

	"github.com/extauthz/extauthz/internal/redistest"
	"github.com/extauthz/extauthz/pkg/session"
	"github.com/extauthz/extauthz/pkg/session/redisstore"
	"github.com/extauthz/extauthz/pkg/session/sessiontest"
)

func newStore(t *testing.T, addr string) *redisstore.Store {
	t.Helper()
	s, err := redisstore.New(redisstore.Options{Addrs: []string{addr}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

func TestConformanceStandalone(t *testing.T) {
	srv := redistest.Run(t)
	sessiontest.Run(t, func(t *testing.T) session.Store { return newStore(t, srv.Addr) })
}
