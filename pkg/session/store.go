package session

import (
	"bytes"
	"context"
	"errors"
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
}

// MemoryStore is a Store in process memory. Its sessions die with the
// process; it exists for development and for tests.
type MemoryStore struct {
	mu        sync.Mutex
	items     map[string]memItem
	now       func() time.Time
	lastSweep int
}

type memItem struct {
	value   []byte
	expires time.Time
}

// NewMemoryStore returns an empty in-memory store. now may be nil (time.Now).
func NewMemoryStore(now func() time.Time) *MemoryStore {
	if now == nil {
		now = time.Now
	}
	return &MemoryStore{items: make(map[string]memItem), now: now}
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
