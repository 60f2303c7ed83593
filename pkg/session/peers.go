package session

import (
	"context"
	"encoding/hex"
	"errors"
	"math/rand/v2"
	"strings"
	"sync"
	"time"
)

// Peers carries cache invalidations between the replicas that share a
// store: a replica that changes or deletes a session publishes its key, and
// every other replica drops its cached copy. (redisstore.Peers is the one
// on Redis pub/sub.)
type Peers interface {
	// Publish tells the other replicas that the session under key changed
	// or is gone; key "" means every session.
	Publish(ctx context.Context, key string) error
	// Run subscribes and tells l what arrives until ctx ends, reconnecting
	// by itself. Every heartbeat it publishes a heartbeat of this replica
	// that only this replica receives, through the same channel, and tells
	// l when one has come back.
	Run(ctx context.Context, heartbeat time.Duration, l PeerListener)
}

// PeerListener is told what happens on the channel. Connected,
// Disconnected and Invalidated are called from one goroutine, in the order
// things happen; HeartbeatReturned may be called from another.
type PeerListener interface {
	// Connected: the subscription is live; nothing published from now on
	// is missed while it lasts.
	Connected()
	// Disconnected: the subscription is gone; what is published until the
	// next Connected may be missed.
	Disconnected()
	// Invalidated: another replica changed or deleted the session under
	// key ("": every session).
	Invalidated(key string)
	// HeartbeatReturned: a heartbeat this replica published at sent came
	// back through the channel.
	HeartbeatReturned(sent time.Time)
}

// listener turns the channel's events into the cache's.
type listener struct{ m *Manager }

func (l listener) Connected()    { l.m.cache.connected() }
func (l listener) Disconnected() { l.m.cache.disconnected() }
func (l listener) HeartbeatReturned(sent time.Time) {
	l.m.cache.heartbeat(sent)
}

func (l listener) Invalidated(key string) {
	c := l.m.cache
	c.invalidations.Add(1)
	if key == "" {
		c.invalidateAll()
		return
	}
	if id, ok := l.m.idOfKey(key); ok {
		c.invalidate(&id)
	}
}

// idOfKey is the token hash a session key names; false for other keys.
func (m *Manager) idOfKey(key string) (id [32]byte, ok bool) {
	h, ok := strings.CutPrefix(key, m.opt.Prefix+":s:{")
	if !ok || len(h) != 65 || h[64] != '}' {
		return id, false
	}
	n, err := hex.Decode(id[:], []byte(h[:64]))
	return id, err == nil && n == 32
}

// Start runs what the cache needs in the background: the invalidation
// channel's subscriber, the touch workers and the retry of invalidations
// that could not be published. stop ends them and waits. Without a cache
// it does nothing. Until Start, the cache serves nothing older than its
// staleness bound.
func (m *Manager) Start(ctx context.Context) (stop func()) {
	if m.cache == nil {
		return func() {}
	}
	ctx, cancel := context.WithCancel(ctx)
	var wg sync.WaitGroup
	if p := m.peers; p != nil {
		hb := max(time.Duration(m.cache.staleness)/4, time.Millisecond)
		wg.Go(func() { p.Run(ctx, hb, listener{m}) })
		wg.Go(func() { m.republish(ctx, hb) })
	}
	for range 2 {
		wg.Go(func() { m.touchLoop(ctx) })
	}
	return func() { cancel(); wg.Wait() }
}

// publish tells the other replicas about a write to key. When that fails,
// the key is kept and published again later (republish); past a bound, the
// next successful publish tells them to drop everything.
func (m *Manager) publish(ctx context.Context, key string) {
	if m.peers == nil {
		return
	}
	err := m.peers.Publish(ctx, key)
	if err == nil {
		return
	}
	m.cache.publishErrors.Add(1)
	m.unpubMu.Lock()
	defer m.unpubMu.Unlock()
	if m.unpub == nil {
		m.unpub = make(map[string]struct{})
	}
	if len(m.unpub) < maxUnpublished {
		m.unpub[key] = struct{}{}
	} else {
		m.unpubAll = true
	}
}

const maxUnpublished = 4096

// republish retries the invalidations that could not be published.
func (m *Manager) republish(ctx context.Context, every time.Duration) {
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		m.unpubMu.Lock()
		all, keys := m.unpubAll, make([]string, 0, len(m.unpub))
		for k := range m.unpub {
			keys = append(keys, k)
		}
		m.unpubMu.Unlock()
		if all {
			keys = []string{""}
		}
		for _, k := range keys {
			if m.peers.Publish(ctx, k) != nil {
				break // still failing: next time
			}
			m.unpubMu.Lock()
			if k == "" {
				m.unpubAll = false
				clear(m.unpub)
			} else {
				delete(m.unpub, k)
			}
			m.unpubMu.Unlock()
		}
	}
}

// touchLoop extends the store expiry of cached sessions that are in use,
// at most once per touch interval each. The touch is a read with an expiry
// (GETEX): it also tells whether the store still holds the cached version,
// which bounds what a lost invalidation (a replica killed between its write
// and its publish) can cost to one touch interval.
func (m *Manager) touchLoop(ctx context.Context) {
	c := m.cache
	for {
		var e *entry
		select {
		case <-ctx.Done():
			return
		case e = <-c.touchq:
		}
		sent := c.now()
		ttl := m.storeTTL(e.s.Record.GetCreatedAt())
		if ttl <= 0 {
			c.drop(e)
			e.touching.Store(false)
			continue
		}
		stored, err := m.store.Get(ctx, e.s.key, ttl)
		switch {
		case err == nil && sealTag(stored) == e.tag:
			c.touches.Add(1)
			e.expires.Store(sent + int64(ttl))
			e.touchAt.Store(c.nextTouch(sent))
		case err == nil, errors.Is(err, ErrNotFound):
			c.touches.Add(1)
			c.drop(e) // changed or gone behind our back: read it again
		default:
			c.touchErrors.Add(1)
			e.touchAt.Store(sent + min(c.touchIvl, int64(time.Second)))
		}
		e.touching.Store(false)
	}
}

// sealTag is the GCM tag that ends a sealed value: it differs for every
// seal (random nonce), so it names one version of a record.
func sealTag(stored []byte) (tag [16]byte) {
	if len(stored) >= 16 {
		copy(tag[:], stored[len(stored)-16:])
	}
	return tag
}

// nextTouch is when the touch of an entry read or touched at sent
// (monotonic ns) comes due: one touch interval later, less a random quarter
// of it. Without the jitter, sessions that were loaded together (every
// active session within seconds of a restart or a deploy) would come due
// together every interval, a burst of one command per active session; with
// it they drift apart within a few intervals. Touches come at most a
// quarter more often, and never later than the interval, so the idle
// expiry's precision stays what TouchInterval says.
func (c *cache) nextTouch(sent int64) int64 {
	return sent + c.touchIvl - rand.Int64N(c.touchIvl/4+1)
}

// enqueueTouch hands e to the touch workers when its touch is due, at most
// once at a time; when they are behind, the touch waits for a later hit (e's
// store expiry is known, and served entries never outlive it).
func (c *cache) enqueueTouch(e *entry, now int64) {
	if now < e.touchAt.Load() || !e.touching.CompareAndSwap(false, true) {
		return
	}
	select {
	case c.touchq <- e:
	default:
		e.touching.Store(false)
	}
}
