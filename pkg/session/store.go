package session

import (
	"bytes"
	"context"
	"errors"
	"slices"
	"strings"
	"sync"
	"time"
)

// ErrNotFound is returned by a Store for a key that does not exist or has expired.
var ErrNotFound = errors.New("not found")

// Store keeps sealed values under keys with a time to live. Values are opaque
// to it. Any error other than ErrNotFound means the store could not answer;
// callers must then fail closed and must not treat the session as gone.
type Store interface {
	// Get returns the value under key. When idle > 0 it also sets the key's
	// time to live to idle in the same round trip (Redis GETEX).
	Get(ctx context.Context, key string, idle time.Duration) ([]byte, error)
	// Set writes value under key with the given time to live.
	Set(ctx context.Context, key string, value []byte, ttl time.Duration) error
	// SetNX writes value under key only if the key does not exist, and says
	// whether it did.
	SetNX(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error)
	// Replace writes value under key only if the key exists (SET XX), and
	// says whether it did: a session deleted meanwhile stays deleted.
	Replace(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error)
	// Delete removes key; a missing key is not an error.
	Delete(ctx context.Context, key string) error
	// DeleteIf removes key only if it holds value, and says whether it did.
	DeleteIf(ctx context.Context, key string, value []byte) (bool, error)
	// Ping reports whether the store is reachable.
	Ping(ctx context.Context) error

	// The session index: which sessions a user or an identity-provider
	// session has (see Manager.Sessions). An index is a set of members
	// (session ids, never tokens), each with a deadline after which it is
	// dropped. Every call touches one key, or several keys independently
	// (no transaction spans keys: on a Redis Cluster they are on different
	// slots).

	// IndexAdd adds e to each index (or moves its deadline), drops the
	// members whose deadline is before now and all but the max latest ones,
	// and keeps each index at least until e's deadline. It returns the live
	// members dropped for the cap, so that their sessions can be ended
	// rather than lost to revocation.
	IndexAdd(ctx context.Context, indexes []string, e IndexEntry, now time.Time, max int) (capped []string, err error)
	// IndexRange returns the members of index whose deadline is not before
	// now, earliest deadline first.
	IndexRange(ctx context.Context, index string, now time.Time) ([]IndexEntry, error)
	// TTLs returns each key's remaining time to live: 0 for a missing key.
	TTLs(ctx context.Context, keys []string) ([]time.Duration, error)
}

// IndexEntry is one member of an index with its deadline (kept to the
// second).
type IndexEntry struct {
	Member   string
	Deadline time.Time
}

// MemoryStore is a Store in process memory. Its sessions die with the
// process; it exists for development and for tests.
type MemoryStore struct {
	mu        sync.Mutex
	items     map[string]memItem
	indexes   map[string]*memIndex
	now       func() time.Time
	lastSweep int
}

type memItem struct {
	value   []byte
	expires time.Time
}

type memIndex struct {
	members map[string]int64 // member -> deadline, unix seconds
	expires time.Time
}

// NewMemoryStore returns an empty in-memory store. now may be nil (time.Now).
func NewMemoryStore(now func() time.Time) *MemoryStore {
	if now == nil {
		now = time.Now
	}
	return &MemoryStore{items: make(map[string]memItem), indexes: make(map[string]*memIndex), now: now}
}

// live returns the item under key if it has not expired; the caller holds mu.
func (m *MemoryStore) live(key string) (memItem, bool) {
	it, ok := m.items[key]
	if ok && !m.now().Before(it.expires) {
		delete(m.items, key)
		return memItem{}, false
	}
	return it, ok
}

// sweep drops expired items once the map has doubled since the last sweep,
// so memory stays bounded without a background goroutine.
func (m *MemoryStore) sweep() {
	if len(m.items) < 2*m.lastSweep+64 {
		return
	}
	now := m.now()
	for k, it := range m.items {
		if !now.Before(it.expires) {
			delete(m.items, k)
		}
	}
	m.lastSweep = len(m.items)
	for k, ix := range m.indexes {
		if !now.Before(ix.expires) {
			delete(m.indexes, k)
		}
	}
}

func (m *MemoryStore) Get(ctx context.Context, key string, idle time.Duration) ([]byte, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	it, ok := m.live(key)
	if !ok {
		return nil, ErrNotFound
	}
	if idle > 0 {
		it.expires = m.now().Add(idle)
		m.items[key] = it
	}
	return bytes.Clone(it.value), nil
}

func (m *MemoryStore) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sweep()
	m.items[key] = memItem{value: bytes.Clone(value), expires: m.now().Add(ttl)}
	return nil
}

func (m *MemoryStore) SetNX(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.live(key); ok {
		return false, nil
	}
	m.sweep()
	m.items[key] = memItem{value: bytes.Clone(value), expires: m.now().Add(ttl)}
	return true, nil
}

func (m *MemoryStore) Replace(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, ok := m.live(key); !ok {
		return false, nil
	}
	m.items[key] = memItem{value: bytes.Clone(value), expires: m.now().Add(ttl)}
	return true, nil
}

func (m *MemoryStore) Delete(ctx context.Context, key string) error {
	if err := ctx.Err(); err != nil {
		return err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.items, key)
	return nil
}

func (m *MemoryStore) DeleteIf(ctx context.Context, key string, value []byte) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	it, ok := m.live(key)
	if !ok || !bytes.Equal(it.value, value) {
		return false, nil
	}
	delete(m.items, key)
	return true, nil
}

func (m *MemoryStore) Ping(ctx context.Context) error { return ctx.Err() }

func (m *MemoryStore) IndexAdd(ctx context.Context, indexes []string, e IndexEntry, now time.Time, limit int) ([]string, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	var capped []string
	m.mu.Lock()
	defer m.mu.Unlock()
	m.sweep()
	for _, k := range indexes {
		ix := m.index(k)
		if ix == nil {
			ix = &memIndex{members: map[string]int64{}}
			m.indexes[k] = ix
		}
		ix.members[e.Member] = e.Deadline.Unix()
		for mb, d := range ix.members {
			if d < now.Unix() {
				delete(ix.members, mb)
			}
		}
		if over := len(ix.members) - limit; limit > 0 && over > 0 {
			es := ix.sorted()
			for _, x := range es[:over] {
				delete(ix.members, x.Member)
				capped = append(capped, x.Member)
			}
		}
		if exp := m.now().Add(max(e.Deadline.Sub(now), 0) + time.Second); exp.After(ix.expires) {
			ix.expires = exp
		}
	}
	return capped, nil
}

func (m *MemoryStore) IndexRange(ctx context.Context, index string, now time.Time) ([]IndexEntry, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	ix := m.index(index)
	if ix == nil {
		return nil, nil
	}
	var out []IndexEntry
	for _, e := range ix.sorted() {
		if e.Deadline.Unix() >= now.Unix() {
			out = append(out, e)
		}
	}
	return out, nil
}

func (m *MemoryStore) TTLs(ctx context.Context, keys []string) ([]time.Duration, error) {
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]time.Duration, len(keys))
	for i, k := range keys {
		if it, ok := m.live(k); ok {
			out[i] = it.expires.Sub(m.now())
		} else if ix := m.index(k); ix != nil {
			out[i] = ix.expires.Sub(m.now())
		}
	}
	return out, nil
}

// index is the live index under key, or nil; the caller holds mu.
func (m *MemoryStore) index(key string) *memIndex {
	ix := m.indexes[key]
	if ix != nil && !m.now().Before(ix.expires) {
		delete(m.indexes, key)
		return nil
	}
	return ix
}

// sorted is the index's entries, earliest deadline first (then by member,
// as Redis orders a sorted set).
func (ix *memIndex) sorted() []IndexEntry {
	out := make([]IndexEntry, 0, len(ix.members))
	for mb, d := range ix.members {
		out = append(out, IndexEntry{Member: mb, Deadline: time.Unix(d, 0)})
	}
	slices.SortFunc(out, func(a, b IndexEntry) int {
		if c := a.Deadline.Compare(b.Deadline); c != 0 {
			return c
		}
		return strings.Compare(a.Member, b.Member)
	})
	return out
}
