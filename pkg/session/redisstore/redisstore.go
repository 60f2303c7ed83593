// Package redisstore is the session Store on Redis: standalone, TLS, Cluster
// or Sentinel, through go-redis's UniversalClient.
package redisstore

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/extauthz/extauthz/pkg/session"
)

// Options say how to reach Redis.
type Options struct {
	// Addrs: one host:port for standalone, several for Cluster; for Sentinel
	// the sentinels' addresses.
	Addrs    []string
	Username string
	Password string
	DB       int
	// TLS, when not nil, is used for every connection.
	TLS *tls.Config
	// Cluster selects Redis Cluster.
	Cluster bool
	// MasterName selects Sentinel: the name of the monitored master.
	MasterName       string
	SentinelUsername string
	SentinelPassword string
	// Timeout bounds every call (dial, wait for a connection, the command).
	Timeout time.Duration
	// After a failed connection attempt n, no new attempt is made for
	// min(n × BackOffMultiplier, RetryCap): approuter's EXT_SESSION_MGT
	// backOffMultiplier and defaultRetryTimeout. Calls in that window fail
	// at once (and so answer 503 at once) instead of piling up.
	BackOffMultiplier time.Duration
	RetryCap          time.Duration
	// PoolSize per node (default: go-redis's, 10 per CPU).
	PoolSize int
}

// Store is a session.Store on Redis.
type Store struct {
	c       redis.UniversalClient
	timeout time.Duration
}

var _ session.Store = (*Store)(nil)

// New returns a Store. It does not connect: Redis may come up later.
func New(opt Options) (*Store, error) {
	if len(opt.Addrs) == 0 {
		return nil, errors.New("redis: no address")
	}
	if opt.Timeout <= 0 {
		opt.Timeout = 250 * time.Millisecond
	}
	if opt.BackOffMultiplier <= 0 {
		opt.BackOffMultiplier = 50 * time.Millisecond
	}
	if opt.RetryCap <= 0 {
		opt.RetryCap = 2 * time.Second
	}
	gates := &dialGates{step: opt.BackOffMultiplier, limit: opt.RetryCap}
	d := &net.Dialer{Timeout: opt.Timeout, KeepAlive: 30 * time.Second}
	dial := func(ctx context.Context, network, addr string) (net.Conn, error) {
		return gates.gate(addr).dial(ctx, func(ctx context.Context) (net.Conn, error) {
			if opt.TLS != nil {
				td := &tls.Dialer{NetDialer: d, Config: opt.TLS}
				return td.DialContext(ctx, network, addr)
			}
			return d.DialContext(ctx, network, addr)
		})
	}
	uo := &redis.UniversalOptions{
		Addrs:                 opt.Addrs,
		Username:              opt.Username,
		Password:              opt.Password,
		DB:                    opt.DB,
		Dialer:                dial, // does the TLS handshake too, for every node
		IsClusterMode:         opt.Cluster,
		MasterName:            opt.MasterName,
		SentinelUsername:      opt.SentinelUsername,
		SentinelPassword:      opt.SentinelPassword,
		DialTimeout:           opt.Timeout,
		ReadTimeout:           opt.Timeout,
		WriteTimeout:          opt.Timeout,
		PoolTimeout:           opt.Timeout,
		ContextTimeoutEnabled: true,
		MaxRetries:            1,
		PoolSize:              opt.PoolSize,
		DisableIdentity:       true,
	}
	return &Store{c: redis.NewUniversalClient(uo), timeout: opt.Timeout}, nil
}

// Close closes every connection.
func (s *Store) Close() error { return s.c.Close() }

func (s *Store) ctx(ctx context.Context) (context.Context, context.CancelFunc) {
	return context.WithTimeout(ctx, s.timeout)
}

func (s *Store) Get(ctx context.Context, key string, idle time.Duration) ([]byte, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	var b []byte
	var err error
	if idle > 0 {
		b, err = s.c.GetEx(ctx, key, idle).Bytes()
	} else {
		b, err = s.c.Get(ctx, key).Bytes()
	}
	return b, wrap("GET", err)
}

func (s *Store) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	return wrap("SET", s.c.Set(ctx, key, value, ttl).Err())
}

func (s *Store) SetNX(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	err := s.c.SetArgs(ctx, key, value, redis.SetArgs{Mode: "NX", TTL: ttl}).Err()
	if errors.Is(err, redis.Nil) {
		return false, nil
	}
	if err != nil {
		return false, wrap("SET NX", err)
	}
	return true, nil
}

func (s *Store) Replace(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	err := s.c.SetArgs(ctx, key, value, redis.SetArgs{Mode: "XX", TTL: ttl}).Err()
	if errors.Is(err, redis.Nil) {
		return false, nil
	}
	if err != nil {
		return false, wrap("SET XX", err)
	}
	return true, nil
}

func (s *Store) Delete(ctx context.Context, key string) error {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	return wrap("DEL", s.c.Del(ctx, key).Err())
}

var deleteIf = redis.NewScript(`if redis.call("GET", KEYS[1]) == ARGV[1] then return redis.call("DEL", KEYS[1]) end return 0`)

func (s *Store) DeleteIf(ctx context.Context, key string, value []byte) (bool, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	n, err := deleteIf.Run(ctx, s.c, []string{key}, value).Int()
	if err != nil {
		return false, wrap("DELETE IF", err)
	}
	return n == 1, nil
}

// indexAdd adds a member to one index (a sorted set scored by deadline,
// unix seconds), drops expired members and all but the max latest, and
// keeps the index alive until the member's deadline. One key: Cluster-safe.
// ARGV: member, deadline, now, max, ttl in ms. Returns the members dropped
// for the cap.
const indexAdd = `redis.call("ZADD", KEYS[1], ARGV[2], ARGV[1])
redis.call("ZREMRANGEBYSCORE", KEYS[1], "-inf", "(" .. ARGV[3])
local max = tonumber(ARGV[4])
local capped = {}
if max > 0 then
  capped = redis.call("ZRANGE", KEYS[1], 0, -max - 1)
  if #capped > 0 then redis.call("ZREMRANGEBYRANK", KEYS[1], 0, -max - 1) end
end
local ttl = tonumber(ARGV[5])
if redis.call("PTTL", KEYS[1]) < ttl then redis.call("PEXPIRE", KEYS[1], ttl) end
return capped`

// IndexAdd runs one script per index, pipelined: the indexes are on
// different Cluster slots, and no transaction spans them.
func (s *Store) IndexAdd(ctx context.Context, indexes []string, e session.IndexEntry, now time.Time, max int) ([]string, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	ttl := e.Deadline.Sub(now) + time.Second
	if ttl < time.Second {
		ttl = time.Second
	}
	cmds, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for _, ix := range indexes {
			p.Eval(ctx, indexAdd, []string{ix}, e.Member, e.Deadline.Unix(), now.Unix(), max, ttl.Milliseconds())
		}
		return nil
	})
	if err != nil {
		return nil, wrap("INDEX ADD", err)
	}
	var capped []string
	for _, c := range cmds {
		ms, err := c.(*redis.Cmd).StringSlice()
		if err != nil && !errors.Is(err, redis.Nil) {
			return nil, wrap("INDEX ADD", err)
		}
		capped = append(capped, ms...)
	}
	return capped, nil
}

func (s *Store) IndexRange(ctx context.Context, index string, now time.Time) ([]session.IndexEntry, error) {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	zs, err := s.c.ZRangeByScoreWithScores(ctx, index, &redis.ZRangeBy{Min: strconv.FormatInt(now.Unix(), 10), Max: "+inf"}).Result()
	if err != nil {
		return nil, wrap("ZRANGEBYSCORE", err)
	}
	out := make([]session.IndexEntry, 0, len(zs))
	for _, z := range zs {
		m, _ := z.Member.(string)
		out = append(out, session.IndexEntry{Member: m, Deadline: time.Unix(int64(z.Score), 0)})
	}
	return out, nil
}

// TTLs pipelines one PTTL per key (they may be on different slots).
func (s *Store) TTLs(ctx context.Context, keys []string) ([]time.Duration, error) {
	if len(keys) == 0 {
		return nil, nil
	}
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	cmds := make([]*redis.DurationCmd, len(keys))
	_, err := s.c.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range keys {
			cmds[i] = p.PTTL(ctx, k)
		}
		return nil
	})
	if err != nil {
		return nil, wrap("PTTL", err)
	}
	out := make([]time.Duration, len(keys))
	for i, c := range cmds {
		switch d := c.Val(); {
		case d == -1: // no expiry (never written so by extauthz)
			out[i] = math.MaxInt64
		case d > 0:
			out[i] = d
		}
	}
	return out, nil
}

// Ping checks every node a call may go to (all masters in a Cluster).
func (s *Store) Ping(ctx context.Context) error {
	ctx, cancel := s.ctx(ctx)
	defer cancel()
	if cc, ok := s.c.(*redis.ClusterClient); ok {
		return wrap("PING", cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
			return c.Ping(ctx).Err()
		}))
	}
	return wrap("PING", s.c.Ping(ctx).Err())
}

func wrap(op string, err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, redis.Nil):
		return session.ErrNotFound
	default:
		return fmt.Errorf("redis %s: %w", op, err)
	}
}

// dialGates holds one dialGate per address: a dead Cluster master or
// sentinel backs off alone, and the healthy nodes keep connecting (their
// users' sessions keep working). The addresses are the configured ones and
// the Cluster's nodes, so the map stays small.
type dialGates struct {
	step, limit time.Duration
	m           sync.Map // addr -> *dialGate
}

func (gs *dialGates) gate(addr string) *dialGate {
	if g, ok := gs.m.Load(addr); ok {
		return g.(*dialGate)
	}
	g, _ := gs.m.LoadOrStore(addr, &dialGate{step: gs.step, limit: gs.limit, now: time.Now})
	return g.(*dialGate)
}

// dialGate spaces out connection attempts to one address after failures
// with approuter's formula: after the n-th failure in a row, wait
// min(n × step, limit).
type dialGate struct {
	step, limit time.Duration
	now         func() time.Time

	mu       sync.Mutex
	failures int
	notUntil time.Time
	lastErr  error
}

func (g *dialGate) dial(ctx context.Context, dial func(context.Context) (net.Conn, error)) (net.Conn, error) {
	g.mu.Lock()
	if g.failures > 0 && g.now().Before(g.notUntil) {
		err := g.lastErr
		g.mu.Unlock()
		return nil, fmt.Errorf("reconnect backing off: %w", err)
	}
	g.mu.Unlock()

	c, err := dial(ctx)

	g.mu.Lock()
	defer g.mu.Unlock()
	if err != nil {
		g.failures++
		g.lastErr = err
		g.notUntil = g.now().Add(g.delay())
		return nil, err
	}
	g.failures = 0
	return c, nil
}

func (g *dialGate) delay() time.Duration {
	return min(time.Duration(g.failures)*g.step, g.limit)
}

// SlogLogger sends go-redis's own messages (reconnects, Sentinel switches)
// to a structured logger at debug level: redis.SetLogger(redisstore.SlogLogger{Log: log}).
type SlogLogger struct{ Log *slog.Logger }

// Printf implements go-redis's logging interface.
func (l SlogLogger) Printf(ctx context.Context, format string, v ...any) {
	l.Log.DebugContext(ctx, "go-redis: "+fmt.Sprintf(format, v...))
}
