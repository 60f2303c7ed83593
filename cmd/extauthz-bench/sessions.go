package main

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"

	"github.com/extauthz/extauthz/internal/e2e"
	"github.com/extauthz/extauthz/pkg/session"
	"github.com/extauthz/extauthz/pkg/session/redisstore"
	"github.com/extauthz/extauthz/proto/sessionpb"
)

// measureGroup measures rows at concurrency c, d each: first an unmeasured
// warm-up of each, then rounds of d/rounds per row, the rows taking turns
// (each round starting with the next row), so that a neighbour's burst on
// a shared machine spreads over all rows instead of spoiling one. Around
// each stretch: the server's CPU (/proc), its allocations (/metrics) and
// Redis' command count.
func measureGroup(ctx context.Context, rdb *redis.Client, rows []row, c int, d time.Duration, rounds int) ([]Result, error) {
	rounds = max(1, rounds)
	type acc struct {
		f         op
		s         sample
		cpu       time.Duration
		mallocs   float64
		redisCmds float64
	}
	accs := make([]acc, len(rows))
	for i, r := range rows {
		f, done, err := r.mk(c)
		if err != nil {
			return nil, err
		}
		defer done()
		accs[i].f = f
		run(ctx, c, min(d/10, 300*time.Millisecond), f)
	}
	for round := range rounds {
		for k := range rows {
			i := (k + round) % len(rows)
			r, a := rows[i], &accs[i]
			var cpu0, cpu1 time.Duration
			var m0, m1 float64
			if r.t.pid != 0 {
				cpu0, _ = cpuTime(r.t.pid)
			}
			if r.t.metrics != "" {
				m0, _ = mallocs(r.t.metrics)
			}
			cmds0, _ := redisCommands(ctx, rdb)
			a.s.merge(run(ctx, c, d/time.Duration(rounds), a.f))
			if r.t.pid != 0 {
				cpu1, _ = cpuTime(r.t.pid)
			}
			if r.t.metrics != "" {
				m1, _ = mallocs(r.t.metrics)
			}
			cmds1, _ := redisCommands(ctx, rdb)
			a.cpu += cpu1 - cpu0
			a.mallocs += m1 - m0
			a.redisCmds += cmds1 - cmds0
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
		}
	}
	out := make([]Result, len(rows))
	for i, r := range rows {
		a := &accs[i]
		res := a.s.result()
		res.Name, res.Server, res.Protocol, res.Concurrency = r.name, r.t.key, r.protocol, c
		if res.Ops > 0 {
			if r.t.pid != 0 {
				res.CPUusPerCheck = float64(a.cpu.Microseconds()) / float64(res.Ops)
			}
			if r.t.metrics != "" {
				res.AllocsPerChk = a.mallocs / float64(res.Ops)
			}
			res.RedisCmdsPer = a.redisCmds / float64(res.Ops)
		}
		out[i] = res
	}
	return out, nil
}

func fetchProfile(x *e2e.Extauthz, d time.Duration, file string) error {
	_, body, err := x.Admin(fmt.Sprintf("/debug/pprof/profile?seconds=%d", max(1, int(d.Seconds()))))
	if err != nil {
		return err
	}
	return os.WriteFile(file, []byte(body), 0o644)
}

func closeAll(conns []*grpc.ClientConn) {
	for _, c := range conns {
		c.Close()
	}
}

func contains(s []int, v int) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}

func insertSorted(s []int, v int) []int {
	out := make([]int, 0, len(s)+1)
	done := false
	for _, x := range s {
		if !done && v < x {
			out, done = append(out, v), true
		}
		out = append(out, x)
	}
	if !done {
		out = append(out, v)
	}
	return out
}

// token makes a realistic JWT-sized string.
func token(n int) string {
	b := make([]byte, n)
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	for i := range b {
		b[i] = alphabet[rand.IntN(len(alphabet))]
	}
	return string(b)
}

// createSessions stores n sessions with an XSUAA-sized token set, as the
// callback would, and returns their cookies and one session's key.
func createSessions(ctx context.Context, addr string, n int) ([]string, string, error) {
	st, err := redisstore.New(redisstore.Options{Addrs: []string{addr}, Timeout: 5 * time.Second, PoolSize: 32})
	if err != nil {
		return nil, "", err
	}
	defer st.Close()
	keys, err := session.NewKeys([]byte(secret))
	if err != nil {
		return nil, "", err
	}
	m := session.NewManager(st, keys, session.Options{Prefix: prefix, IdleTimeout: time.Hour, MaxLifetime: 12 * time.Hour})
	cookies := make([]string, n)
	var key string
	var mu sync.Mutex
	var firstErr error
	var next atomic.Int64
	var wg sync.WaitGroup
	for range 16 {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n {
					return
				}
				s, c, err := m.Create(ctx, &sessionpb.Session{
					Issuer: "https://tenant.authentication.eu10.hana.ondemand.com/oauth/token", Subject: "user-" + strconv.Itoa(i),
					AccessToken: token(2600), RefreshToken: token(200), IdToken: token(1100),
					AccessTokenExpiry: time.Now().Add(12 * time.Hour).Unix(), Scopes: []string{"openid", "app!t1.Display", "app!t1.Edit"},
					CsrfToken: token(43),
				})
				mu.Lock()
				if err != nil && firstErr == nil {
					firstErr = err
				}
				cookies[i] = c
				if key == "" && s != nil {
					key = s.Key()
				}
				mu.Unlock()
			}
		})
	}
	wg.Wait()
	return cookies, key, firstErr
}
