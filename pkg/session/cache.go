package session

import (
	"math"
	"sync"
	"sync/atomic"
	"time"
)

// The cache of opened sessions sits in front of the store: a hit costs no
// store round trip and no unsealing. It holds what Load returns (the opened,
// read-only Session), keyed by the session's store key (its token's SHA-256,
// which names the key), bounded by entries and bytes, least recently used
// out first. Only sessions the store returned or this replica wrote enter it:
// a cookie that opens nothing caches nothing, so forged or stale cookies
// cannot cost memory.
//
// Redis stays the truth. An entry is served only while one of these holds:
//
//   - it is younger than Staleness (counted from when the read or write that
//     produced it was sent), or
//   - the invalidation channel vouches for it: the entry was fetched after
//     the current subscription went live (so no invalidation of it can have
//     been published before the subscription and missed), and a heartbeat
//     this replica published less than Staleness ago has come back through
//     the channel (so the channel delivers, and lags by less than Staleness).
//
// Otherwise the session is read from the store again, and a store failure
// is the usual fail-closed error. When the channel is down or lagging every
// replica therefore serves nothing older than Staleness; when it works an
// entry lives until it is invalidated, evicted, or its idle or absolute
// lifetime ends.
//
// Invalidation races: an entry read from the store must not be inserted
// after an invalidation of its key that happened after the read. Each shard
// has a generation, bumped under the shard's lock by every invalidation and
// every local write; a read notes the generation before it goes to the store
// and inserts only if it is unchanged.

// CacheOptions configure the cache of opened sessions (Options.Cache).
type CacheOptions struct {
	// Entries and Bytes bound the cache (defaults DefaultCacheEntries and
	// DefaultCacheBytes). Bytes counts the sealed record, the Authorization
	// header value, the key and a fixed overhead per entry.
	Entries int
	Bytes   int64
	// Staleness bounds the age of what is served while the invalidation
	// channel cannot vouch for it (default DefaultCacheStaleness).
	Staleness time.Duration
	// TouchInterval: a cached session's idle expiry in the store is extended
	// at most once per interval, by a background touch, instead of on every
	// request (default DefaultTouchInterval). Every expiry set in the store
	// is then IdleTimeout + TouchInterval, so that a session expires between
	// IdleTimeout and IdleTimeout + TouchInterval after its last use.
	TouchInterval time.Duration
	// Peers carries invalidations between the replicas that share the
	// store. nil: no channel, every entry is read again once older than
	// Staleness.
	Peers Peers
}

// Defaults of CacheOptions.
const (
	DefaultCacheEntries   = 10_000
	DefaultCacheBytes     = 32 << 20
	DefaultCacheStaleness = time.Second
	DefaultTouchInterval  = 15 * time.Second
)

// entryOverhead approximates what an entry costs besides its variable-size
// parts: the entry, the Session and record structs, the map slot.
const entryOverhead = 512

// CacheStats are the cache's counters since the start. Hits+Misses+Stale is
// the number of session loads that went through the cache.
type CacheStats struct {
	Hits   uint64 // served from the cache
	Misses uint64 // not in the cache: read from the store
	// Stale: in the cache, but older than the staleness bound while the
	// channel could not vouch for it (or its store expiry was near): read
	// from the store again.
	Stale uint64
	// Invalidations received from other replicas (a flush counts once).
	Invalidations uint64
	// Evictions to stay within the bounds.
	Evictions uint64
	// Touches sent to extend idle expiries, and those that failed.
	Touches, TouchErrors uint64
	// PublishErrors: invalidations this replica could not publish at once
	// (they are retried).
	PublishErrors uint64
	Entries       int
	Bytes         int64
	// ChannelUp: the invalidation channel vouches for entries right now.
	ChannelUp bool
}

const channelDown = math.MaxInt64

type entry struct {
	id   [32]byte // SHA-256 of the token: names the store key
	s    *Session // read-only, shared by every request that hits it
	size int64
	tag  [16]byte // the sealed value's GCM tag: which version of the record this is
	// fetched (monotonic ns) is when the read or write that produced s was
	// sent; deadline (unix s) the end of the absolute lifetime.
	fetched  int64
	deadline int64
	// expires (monotonic ns): the store keeps the session at least until
	// then (the last expiry this replica set, counted from when it was sent).
	expires atomic.Int64
	// touchAt (monotonic ns): when the next touch is due.
	touchAt  atomic.Int64
	touching atomic.Bool

	prev, next *entry // LRU ring, under the shard's lock
}

type cacheShard struct {
	mu       sync.Mutex
	gen      atomic.Uint64 // written under mu
	m        map[[32]byte]*entry
	ring     entry // ring.next is the most recently used
	n        int
	bytes    int64
	maxN     int
	maxBytes int64
	// Counted under mu.
	hits, misses, stale, evictions uint64
	_                              [64]byte // keep shards on their own cache lines
}

type cache struct {
	shards    []cacheShard
	mask      int
	staleness int64
	touchIvl  int64
	base      time.Time
	// epoch (monotonic ns): when the current subscription went live;
	// channelDown when there is none. echo: send time of the latest
	// heartbeat, sent after epoch, that came back.
	epoch atomic.Int64
	echo  atomic.Int64

	invalidations, touches, touchErrors, publishErrors atomic.Uint64

	touchq chan *entry
}

func newCache(o CacheOptions) *cache {
	n := 1
	if o.Entries >= 1024 {
		n = 16 // spread the lock; each shard takes 1/16 of the bounds
	}
	c := &cache{
		shards:    make([]cacheShard, n),
		mask:      n - 1,
		staleness: int64(o.Staleness),
		touchIvl:  int64(o.TouchInterval),
		base:      time.Now(),
		touchq:    make(chan *entry, 1024),
	}
	c.epoch.Store(channelDown)
	c.echo.Store(math.MinInt64 / 2)
	for i := range c.shards {
		sh := &c.shards[i]
		sh.m = make(map[[32]byte]*entry)
		sh.ring.next, sh.ring.prev = &sh.ring, &sh.ring
		sh.maxN = max(o.Entries/n, 1)
		sh.maxBytes = max(o.Bytes/int64(n), 1)
	}
	return c
}

// now is the cache's monotonic clock, in nanoseconds.
func (c *cache) now() int64 { return int64(time.Since(c.base)) }

func (c *cache) mono(t time.Time) int64 { return int64(t.Sub(c.base)) }

func (c *cache) shard(id *[32]byte) *cacheShard { return &c.shards[int(id[0])&c.mask] }

// gen is the generation of id's shard, to note before a store call whose
// result may be inserted.
func (c *cache) gen(id *[32]byte) uint64 { return c.shard(id).gen.Load() }

// vouched says whether e may be served at now (monotonic ns).
func (c *cache) vouched(e *entry, now int64) bool {
	if now-e.fetched < c.staleness {
		return true
	}
	ep := c.epoch.Load()
	if e.fetched < ep { // also when the channel is down (ep == channelDown)
		return false
	}
	ec := c.echo.Load()
	return ec >= ep && now-ec < c.staleness
}

// lookup outcomes
const (
	cacheMiss = iota
	cacheHit
	cacheStale
	cacheExpired // the absolute lifetime is over: the entry is gone
)

// get returns the entry of id if it may be served at now (monotonic) and
// wall (unix seconds), and counts the outcome.
func (c *cache) get(id *[32]byte, now, wall int64) (*entry, int) {
	sh := c.shard(id)
	sh.mu.Lock()
	e := sh.m[*id]
	switch {
	case e == nil:
		sh.misses++
		sh.mu.Unlock()
		return nil, cacheMiss
	case wall >= e.deadline:
		sh.remove(e)
		sh.misses++
		sh.mu.Unlock()
		return nil, cacheExpired
	case now >= e.expires.Load() || !c.vouched(e, now):
		sh.stale++
		sh.mu.Unlock()
		return nil, cacheStale
	}
	if sh.ring.next != e { // move to front
		e.prev.next, e.next.prev = e.next, e.prev
		sh.pushFront(e)
	}
	sh.hits++
	sh.mu.Unlock()
	return e, cacheHit
}

// put inserts e unless its shard's generation moved since gen (an
// invalidation happened meanwhile). bump also moves the generation: e is
// this replica's own write, so that reads that started before it cannot
// replace it with what they read; when the generation had moved already,
// e is not inserted and any entry of its id is removed.
func (c *cache) put(e *entry, gen uint64, bump bool) {
	sh := c.shard(&e.id)
	sh.mu.Lock()
	defer sh.mu.Unlock()
	fresh := sh.gen.Load() == gen
	if bump {
		sh.gen.Add(1)
	}
	old := sh.m[e.id]
	if !fresh || e.size > sh.maxBytes {
		if old != nil && bump {
			sh.remove(old)
		}
		return
	}
	if old != nil {
		sh.remove(old)
	}
	sh.m[e.id] = e
	sh.pushFront(e)
	sh.n++
	sh.bytes += e.size
	for sh.n > sh.maxN || sh.bytes > sh.maxBytes {
		sh.remove(sh.ring.prev)
		sh.evictions++
	}
}

// invalidate removes id's entry, and makes reads in flight not insert what
// they read.
func (c *cache) invalidate(id *[32]byte) {
	sh := c.shard(id)
	sh.mu.Lock()
	sh.gen.Add(1)
	if e := sh.m[*id]; e != nil {
		sh.remove(e)
	}
	sh.mu.Unlock()
}

// invalidateAll empties the cache.
func (c *cache) invalidateAll() {
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		sh.gen.Add(1)
		clear(sh.m)
		sh.ring.next, sh.ring.prev = &sh.ring, &sh.ring
		sh.n, sh.bytes = 0, 0
		sh.mu.Unlock()
	}
}

// drop removes e if it is still the entry of its id.
func (c *cache) drop(e *entry) {
	sh := c.shard(&e.id)
	sh.mu.Lock()
	if sh.m[e.id] == e {
		sh.remove(e)
	}
	sh.mu.Unlock()
}

// forget removes the entry of id without moving the generation: the store
// said the session is gone, and no read in flight can bring it back.
func (c *cache) forget(id *[32]byte) {
	sh := c.shard(id)
	sh.mu.Lock()
	if e := sh.m[*id]; e != nil {
		sh.remove(e)
	}
	sh.mu.Unlock()
}

func (sh *cacheShard) pushFront(e *entry) {
	e.prev, e.next = &sh.ring, sh.ring.next
	sh.ring.next.prev = e
	sh.ring.next = e
}

// remove unlinks e, which is in the shard; the caller holds mu.
func (sh *cacheShard) remove(e *entry) {
	e.prev.next, e.next.prev = e.next, e.prev
	e.prev, e.next = nil, nil
	delete(sh.m, e.id)
	sh.n--
	sh.bytes -= e.size
}

func (c *cache) stats() CacheStats {
	var st CacheStats
	for i := range c.shards {
		sh := &c.shards[i]
		sh.mu.Lock()
		st.Hits += sh.hits
		st.Misses += sh.misses
		st.Stale += sh.stale
		st.Evictions += sh.evictions
		st.Entries += sh.n
		st.Bytes += sh.bytes
		sh.mu.Unlock()
	}
	st.Invalidations = c.invalidations.Load()
	st.Touches = c.touches.Load()
	st.TouchErrors = c.touchErrors.Load()
	st.PublishErrors = c.publishErrors.Load()
	now := c.now()
	ep, ec := c.epoch.Load(), c.echo.Load()
	st.ChannelUp = ep != channelDown && ec >= ep && now-ec < c.staleness
	return st
}

// The channel's events (PeerListener).

func (c *cache) connected() { c.epoch.Store(c.now()) }

func (c *cache) disconnected() { c.epoch.Store(channelDown) }

func (c *cache) heartbeat(sent time.Time) {
	s := c.mono(sent)
	if s < c.epoch.Load() {
		return // sent before the current subscription: proves nothing about it
	}
	for {
		old := c.echo.Load()
		if s <= old || c.echo.CompareAndSwap(old, s) {
			return
		}
	}
}

// dropUnless removes the entry of id unless it holds the version tag.
func (c *cache) dropUnless(id *[32]byte, tag [16]byte) {
	sh := c.shard(id)
	sh.mu.Lock()
	if e := sh.m[*id]; e != nil && e.tag != tag {
		sh.remove(e)
	}
	sh.mu.Unlock()
}
