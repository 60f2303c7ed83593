package session_test

import (
	"context"
	"testing"
	"time"

	"github.com/extauthz/extauthz/pkg/session"
	"github.com/extauthz/extauthz/pkg/session/sessiontest"
	"github.com/extauthz/extauthz/proto/sessionpb"
)

func BenchmarkDecodeCookie(b *testing.B) {
	k := mustKeys(b, secretA)
	c := k.EncodeCookie(session.NewToken())
	b.ReportAllocs()
	for b.Loop() {
		if _, err := k.DecodeCookie(c); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkOpen(b *testing.B) {
	k := mustKeys(b, secretA)
	tok := session.NewToken()
	ad := []byte("extauthz:s:{0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef}")
	sealed, _ := k.Seal(nil, &tok, ad, make([]byte, 4096))
	b.ReportAllocs()
	for b.Loop() {
		if _, err := k.Open(&tok, ad, sealed); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkLoadMemory(b *testing.B) {
	m := session.NewManager(session.NewMemoryStore(nil), mustKeys(b, secretA), session.Options{})
	_, c, err := m.Create(context.Background(), &sessionpb.Session{
		AccessToken: string(make([]byte, 2500)), IdToken: string(make([]byte, 1000)), RefreshToken: string(make([]byte, 100)),
		AccessTokenExpiry: time.Now().Add(time.Hour).Unix(),
	})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.Load(context.Background(), c, ""); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkLoadCached: Load of a session in the cache (the channel up).
func BenchmarkLoadCached(b *testing.B) {
	m := session.NewManager(session.NewMemoryStore(nil), mustKeys(b, secretA), session.Options{
		Cache: &session.CacheOptions{Peers: sessiontest.NewHub().Peer()},
	})
	b.Cleanup(m.Start(context.Background()))
	_, c, err := m.Create(context.Background(), &sessionpb.Session{
		AccessToken: string(make([]byte, 2500)), IdToken: string(make([]byte, 1000)), RefreshToken: string(make([]byte, 100)),
		AccessTokenExpiry: time.Now().Add(time.Hour).Unix(),
	})
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	for b.Loop() {
		if _, err := m.Load(context.Background(), c, ""); err != nil {
			b.Fatal(err)
		}
	}
}
