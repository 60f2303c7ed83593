package redisstore

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/extauthz/extauthz/pkg/session"
)

// Peers is the session cache's invalidation channel on Redis: plain pub/sub
// (PUBLISH / SUBSCRIBE) on the session store's own connections.
//
// Why pub/sub, and not go-redis's client-side caching (RESP3 CLIENT
// TRACKING, ClientSideCacheConfig):
//   - it works on every topology we support. Client-side caching in go-redis
//     is for standalone clients only (no Cluster, no Sentinel). A plain
//     PUBLISH reaches the subscribers of every node of a Cluster (the
//     cluster bus broadcasts it), and a Sentinel master's subscribers (and
//     its replicas', after a failover). Sharded pub/sub (SPUBLISH) is per
//     slot: a replica would need a subscription on every master.
//   - it needs no server configuration: neither CONFIG (keyspace
//     notifications, forbidden on managed Redis) nor CLIENT TRACKING, and
//     no tracking table in Redis's memory.
//   - the cache holds opened records (no unsealing on a hit), not raw
//     values; tracking would invalidate on our own touches (GETEX writes).
//   - its health can be proven: every replica publishes heartbeats and
//     watches them come back through the very connection invalidations
//     arrive on, which is what bounds staleness when it breaks.
//
// The cost: invalidations are broadcast to every node of a Cluster, and a
// message published while a replica's subscription is down is lost (the
// replica then serves nothing older than the staleness bound, and reads
// again what it had before the new subscription).
//
// Channels: <prefix>:inv carries "<replica id> <session key>" (key "*":
// every session); <prefix>:hb:<replica id> carries the replica's own
// heartbeats, which only it subscribes to. In a Cluster a heartbeat is
// published on every master, and counts as returned when all came back: it
// then also proves that every master answers.
type Peers struct {
	c       redis.UniversalClient
	id      string
	inv, hb string
	timeout time.Duration
	log     *slog.Logger
}

// PeersOptions configure Peers.
type PeersOptions struct {
	// Prefix is the session key prefix: replicas with the same prefix share
	// sessions, and invalidations.
	Prefix string
	// Log, when not nil, is told when the channel goes down and comes back.
	Log *slog.Logger
}

var _ session.Peers = (*Peers)(nil)

// Peers returns the invalidation channel of the replicas that use the
// store with o.Prefix.
func (s *Store) Peers(o PeersOptions) *Peers {
	var b [8]byte
	rand.Read(b[:])
	id := hex.EncodeToString(b[:])
	if o.Prefix == "" {
		o.Prefix = "extauthz"
	}
	return &Peers{c: s.c, id: id, inv: o.Prefix + ":inv", hb: o.Prefix + ":hb:" + id, timeout: s.timeout, log: o.Log}
}

// Publish tells the other replicas that the session under key changed or
// is gone ("": every session).
func (p *Peers) Publish(ctx context.Context, key string) error {
	if key == "" {
		key = "*"
	}
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	return wrap("PUBLISH", p.c.Publish(ctx, p.inv, p.id+" "+key).Err())
}

// Run subscribes, and resubscribes after any failure, until ctx ends; it
// publishes a heartbeat every heartbeat.
func (p *Peers) Run(ctx context.Context, heartbeat time.Duration, l session.PeerListener) {
	r := &rounds{m: make(map[uint64]round), kick: make(chan struct{}, 1)}
	var wg sync.WaitGroup
	wg.Go(func() { p.beat(ctx, heartbeat, r, l) })
	defer wg.Wait()
	for attempt := 1; ctx.Err() == nil; attempt++ {
		up, err := p.subscribe(ctx, heartbeat, r, l)
		l.Disconnected()
		if ctx.Err() != nil {
			return
		}
		if up {
			attempt = 1
		}
		if p.log != nil {
			level := slog.LevelDebug // once per outage at warn
			if attempt == 1 {
				level = slog.LevelWarn
			}
			p.log.Log(ctx, level, "session cache: invalidation channel down; cached sessions are served no older than the staleness bound until it is back", "error", err)
		}
		// The dial gate spaces out connection attempts already; this only
		// keeps a channel that fails after connecting from spinning.
		select {
		case <-ctx.Done():
		case <-time.After(min(time.Duration(attempt)*50*time.Millisecond, 2*time.Second)):
		}
	}
}

// subscribe runs one subscription until it fails; up says whether it was
// ever confirmed.
func (p *Peers) subscribe(ctx context.Context, heartbeat time.Duration, r *rounds, l session.PeerListener) (up bool, err error) {
	ps := p.c.Subscribe(ctx, p.inv, p.hb)
	defer ps.Close()
	// A read in progress does not see ctx end; closing the connection ends it.
	defer context.AfterFunc(ctx, func() { ps.Close() })()
	// Heartbeats arrive every heartbeat: this long without a message, the
	// connection gets a PING; twice, it is taken for dead.
	silence := max(4*heartbeat, 2*p.timeout)
	confirmed := map[string]bool{}
	quiet := 0
	for {
		msg, err := ps.ReceiveTimeout(ctx, silence)
		var ne interface{ Timeout() bool }
		if errors.As(err, &ne) && ne.Timeout() && ctx.Err() == nil && quiet == 0 {
			quiet++
			if err := ps.Ping(ctx); err != nil {
				return up, err
			}
			continue
		}
		if err != nil {
			return up, err
		}
		quiet = 0
		switch m := msg.(type) {
		case *redis.Subscription:
			if m.Kind != "subscribe" {
				continue
			}
			if len(confirmed) == 2 {
				// go-redis reconnected and resubscribed by itself:
				// what was published in between is lost.
				l.Disconnected()
				clear(confirmed)
			}
			confirmed[m.Channel] = true
			if len(confirmed) == 2 {
				up = true
				l.Connected()
				r.kickNow() // a heartbeat now, to vouch for the new subscription without waiting
				if p.log != nil {
					p.log.Info("session cache: invalidation channel up", "channel", p.inv)
				}
			}
		case *redis.Message:
			if m.Channel == p.hb {
				if seq, err := strconv.ParseUint(m.Payload, 10, 64); err == nil {
					if sent, ok := r.returned(seq); ok {
						l.HeartbeatReturned(sent)
					}
				}
				continue
			}
			origin, key, ok := strings.Cut(m.Payload, " ")
			if !ok || origin == p.id {
				continue // our own: the cache has it already
			}
			if key == "*" {
				key = ""
			}
			l.Invalidated(key)
		}
	}
}

// beat publishes a heartbeat every interval until ctx ends. A heartbeat may
// come back before its PUBLISH has answered: the round is noted before.
func (p *Peers) beat(ctx context.Context, every time.Duration, r *rounds, l session.PeerListener) {
	t := time.NewTicker(every)
	defer t.Stop()
	for seq := uint64(1); ; seq++ {
		sent := time.Now()
		r.start(seq, sent)
		n, err := p.publishHeartbeat(ctx, seq)
		if err != nil || n == 0 {
			r.failed(seq)
		} else if sent, done := r.published(seq, n); done {
			l.HeartbeatReturned(sent)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		case <-r.kick:
		}
	}
}

// publishHeartbeat publishes heartbeat seq: on every master of a Cluster,
// else once. It returns how many copies should come back.
func (p *Peers) publishHeartbeat(ctx context.Context, seq uint64) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, p.timeout)
	defer cancel()
	payload := strconv.FormatUint(seq, 10)
	if cc, ok := p.c.(*redis.ClusterClient); ok {
		var n atomic.Int32
		err := cc.ForEachMaster(ctx, func(ctx context.Context, c *redis.Client) error {
			if err := c.Publish(ctx, p.hb, payload).Err(); err != nil {
				return err
			}
			n.Add(1)
			return nil
		})
		return int(n.Load()), err
	}
	return 1, p.c.Publish(ctx, p.hb, payload).Err()
}

// rounds are the heartbeats in flight.
type rounds struct {
	mu   sync.Mutex
	m    map[uint64]round
	kick chan struct{} // a heartbeat now, please
}

func (r *rounds) kickNow() {
	select {
	case r.kick <- struct{}{}:
	default:
	}
}

type round struct {
	sent      time.Time
	want, got int // want 0: not known yet (the PUBLISH has not answered)
}

// maxRounds bounds the heartbeats remembered: older ones never count.
const maxRounds = 64

func (r *rounds) start(seq uint64, sent time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.m[seq] = round{sent: sent}
	if seq > maxRounds {
		delete(r.m, seq-maxRounds)
	}
}

func (r *rounds) failed(seq uint64) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.m, seq)
}

// published notes that want copies of heartbeat seq were published, and
// says whether all are back already.
func (r *rounds) published(seq uint64, want int) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rd, ok := r.m[seq]
	if !ok {
		return time.Time{}, false
	}
	rd.want = want
	return r.settle(seq, rd)
}

// returned counts one copy of heartbeat seq back, and says whether all are.
func (r *rounds) returned(seq uint64) (time.Time, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	rd, ok := r.m[seq]
	if !ok {
		return time.Time{}, false
	}
	rd.got++
	return r.settle(seq, rd)
}

func (r *rounds) settle(seq uint64, rd round) (time.Time, bool) {
	if rd.want == 0 || rd.got < rd.want {
		r.m[seq] = rd
		return time.Time{}, false
	}
	delete(r.m, seq)
	return rd.sent, true
}
