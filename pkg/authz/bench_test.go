package authz_test

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/extauthz/extauthz/pkg/authz"
	"github.com/extauthz/extauthz/proto/sessionpb"
)

func BenchmarkCheckValidSession(b *testing.B) { benchmarkCheckValidSession(b, false) }

// BenchmarkCheckValidSessionCached: the check of a session in the cache.
func BenchmarkCheckValidSessionCached(b *testing.B) { benchmarkCheckValidSession(b, true) }

func benchmarkCheckValidSession(b *testing.B, cache bool) {
	defer func(old bool) { fixtureCache = old }(fixtureCache)
	fixtureCache = cache
	f := newFixture(b, authz.Options{})
	c := f.newSession(b, &sessionpb.Session{
		AccessToken: strings.Repeat("a", 2500), IdToken: strings.Repeat("i", 1000), RefreshToken: strings.Repeat("r", 100),
		AccessTokenExpiry: time.Now().Add(time.Hour).Unix(),
	})
	req := get("/app", "theme=dark; JSESSIONID="+c)
	b.ReportAllocs()
	for b.Loop() {
		if d := f.engine.Check(context.Background(), req); !d.Allow {
			b.Fatal(d.Reason)
		}
	}
}
