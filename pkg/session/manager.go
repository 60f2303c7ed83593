// Package session keeps login sessions: the cookie codec, the sealing of
// records, the Store interface and the Manager that ties them together.
package session

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/extauthz/extauthz/proto/sessionpb"
)

// ErrNoSession is returned when a request carries no usable session: the
// cookie is malformed or forged, the record is gone, expired or does not open.
// It is never returned for a store failure.
var ErrNoSession = errors.New("no session")

// ErrExpired is wrapped in ErrNoSession when the absolute lifetime is over.
var ErrExpired = errors.New("session lifetime is over")

// ErrOtherTenant is returned when a valid session of one tenant is used on
// another tenant's host. The session stays as it is.
var ErrOtherTenant = errors.New("session belongs to another tenant")

// Options configure a Manager.
type Options struct {
	// Prefix starts every store key (default "extauthz").
	Prefix string
	// IdleTimeout: a session unused this long is gone (approuter SESSION_TIMEOUT).
	IdleTimeout time.Duration
	// MaxLifetime: a session older than this is gone however much it is used.
	MaxLifetime time.Duration
	// LoginTTL: how long a login may take from redirect to callback
	// (default DefaultLoginTTL).
	LoginTTL time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Cache, when not nil, keeps opened sessions in memory in front of the
	// store (see CacheOptions).
	Cache *CacheOptions
}

// Manager loads, creates, saves and deletes sealed sessions and login states.
type Manager struct {
	store Store
	keys  *Keys
	opt   Options
	// idleTTL is the expiry every write and read-with-touch sets in the
	// store: IdleTimeout, plus the touch interval with the cache.
	idleTTL time.Duration

	cache *cache // nil: no cache
	peers Peers
	// Invalidations not yet published (see publish).
	unpubMu  sync.Mutex
	unpub    map[string]struct{}
	unpubAll bool
}

// NewManager returns a Manager over store, sealing with keys.
func NewManager(store Store, keys *Keys, opt Options) *Manager {
	if opt.Prefix == "" {
		opt.Prefix = "extauthz"
	}
	if opt.IdleTimeout <= 0 {
		opt.IdleTimeout = 15 * time.Minute
	}
	if opt.MaxLifetime <= 0 {
		opt.MaxLifetime = 12 * time.Hour
	}
	if opt.LoginTTL <= 0 {
		opt.LoginTTL = DefaultLoginTTL
	}
	if opt.Now == nil {
		opt.Now = time.Now
	}
	m := &Manager{store: store, keys: keys, opt: opt, idleTTL: opt.IdleTimeout}
	if o := opt.Cache; o != nil {
		co := *o
		if co.Entries <= 0 {
			co.Entries = DefaultCacheEntries
		}
		if co.Bytes <= 0 {
			co.Bytes = DefaultCacheBytes
		}
		if co.Staleness <= 0 {
			co.Staleness = DefaultCacheStaleness
		}
		if co.TouchInterval <= 0 {
			co.TouchInterval = DefaultTouchInterval
		}
		m.cache = newCache(co)
		m.peers = co.Peers
		m.idleTTL += co.TouchInterval
	}
	return m
}

// CacheStats returns the cache's counters (all zero without a cache): what
// metrics read, e.g. the hit ratio Hits / (Hits + Misses + Stale).
func (m *Manager) CacheStats() CacheStats {
	if m.cache == nil {
		return CacheStats{}
	}
	return m.cache.stats()
}

// Session is one loaded session: its record and where it lives. A Session
// and its Record are read-only once made: with the cache, one Session is
// shared by every request that loads it. To change a record, change a copy
// and make a new Session with WithRecord.
type Session struct {
	token  Token
	id     [32]byte // SHA-256 of the token
	key    string
	bearer string // "Bearer <access token>"
	Record *sessionpb.Session
}

func newSession(t Token, id [32]byte, key string, rec *sessionpb.Session) *Session {
	return &Session{token: t, id: id, key: key, bearer: "Bearer " + rec.GetAccessToken(), Record: rec}
}

// WithRecord returns the session with another record (a changed copy).
func (s *Session) WithRecord(rec *sessionpb.Session) *Session {
	return newSession(s.token, s.id, s.key, rec)
}

// Authorization is the value of the Authorization header for the upstream:
// "Bearer <access token>", made once per record.
func (s *Session) Authorization() string { return s.bearer }

// Key is the store key of the session (it reveals nothing of the cookie).
func (s *Session) Key() string { return s.key }

// sessionKey is "<prefix>:s:{sha256(token)}"; the braces are a Redis Cluster
// hash tag so that the lock of a session lives on the same slot.
func (m *Manager) sessionKey(id *[32]byte) string { return m.keyOf(":s:{", id) }
func (m *Manager) lockKey(t *Token) string        { id := t.hash(); return m.keyOf(":r:{", &id) }
func (m *Manager) usedKey(t *Token) string        { id := t.hash(); return m.keyOf(":l:{", &id) }

// keyOf is prefix + kind + hex(id) + "}", built with one allocation.
func (m *Manager) keyOf(kind string, id *[32]byte) string {
	var b strings.Builder
	b.Grow(len(m.opt.Prefix) + len(kind) + 2*len(id) + 1)
	b.WriteString(m.opt.Prefix)
	b.WriteString(kind)
	var h [64]byte
	hex.Encode(h[:], id[:])
	b.Write(h[:])
	b.WriteByte('}')
	return b.String()
}

// Load finds the session of a cookie value for a request of tenant ("" in
// single-tenant mode) and extends its idle expiry in the same store round
// trip (with the cache: at most once per touch interval, in the
// background). It returns an error wrapping ErrNoSession when there is no
// usable session, ErrOtherTenant for another tenant's session, and any other
// error when the store failed. The Session is read-only.
func (m *Manager) Load(ctx context.Context, cookie, tenant string) (*Session, error) {
	t, err := m.keys.DecodeCookie(cookie)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoSession, err)
	}
	id := t.hash()
	s, err := m.loadID(ctx, &t, &id)
	if err != nil {
		return nil, err
	}
	if s.Record.GetTenant() != tenant {
		return nil, ErrOtherTenant
	}
	return s, nil
}

func (m *Manager) loadID(ctx context.Context, t *Token, id *[32]byte) (*Session, error) {
	c := m.cache
	if c == nil {
		s, _, err := m.load(ctx, *t, *id, m.sessionKey(id), m.idleTTL)
		return s, err
	}
	now := c.now()
	e, res := c.get(id, now, m.opt.Now().UnixNano())
	switch res {
	case cacheHit:
		c.enqueueTouch(e, now)
		return e.s, nil
	case cacheExpired:
		return nil, fmt.Errorf("%w: %w", ErrNoSession, ErrExpired)
	}
	gen := c.gen(id)
	s, stored, err := m.load(ctx, *t, *id, m.sessionKey(id), m.idleTTL)
	if err != nil {
		if errors.Is(err, ErrNoSession) {
			c.forget(id)
		}
		return nil, err
	}
	c.put(m.newEntry(s, stored, now, m.idleTTL), gen, false)
	return s, nil
}

// newEntry is a cache entry for s, read or written as stored by a store call
// sent at sent (monotonic) that set its expiry to ttl.
func (m *Manager) newEntry(s *Session, stored []byte, sent int64, ttl time.Duration) *entry {
	e := &entry{
		id: s.id, s: s, tag: sealTag(stored), fetched: sent,
		size:     int64(len(stored)+len(s.bearer)+len(s.key)) + entryOverhead,
		deadline: time.Unix(s.Record.GetCreatedAt(), 0).Add(m.opt.MaxLifetime).UnixNano(),
	}
	e.expires.Store(sent + int64(ttl))
	e.touchAt.Store(m.cache.nextTouch(sent))
	return e
}

// Reload reads a session from the store again, never from the cache, and
// without touching its expiry.
func (m *Manager) Reload(ctx context.Context, s *Session) (*Session, error) {
	cur, stored, err := m.load(ctx, s.token, s.id, s.key, 0)
	if c := m.cache; c != nil {
		switch {
		case errors.Is(err, ErrNoSession):
			c.forget(&s.id)
		case err == nil:
			c.dropUnless(&s.id, sealTag(stored)) // our copy is behind: its invalidation is late
		}
	}
	return cur, err
}

// A stored session is: tenant length (1 byte), tenant, sealed record. The
// tenant is authenticated (it is in the sealing's associated data with the
// key), so a session can name its tenant before it is opened, and cannot be
// moved to another tenant.
func associatedData(key, tenant string) []byte {
	ad := make([]byte, 0, len(key)+1+len(tenant))
	return append(append(append(ad, key...), 0), tenant...)
}

// load reads and opens a session from the store, setting its expiry to idle
// when idle > 0, and returns it with its stored form.
func (m *Manager) load(ctx context.Context, t Token, id [32]byte, key string, idle time.Duration) (*Session, []byte, error) {
	stored, err := m.store.Get(ctx, key, idle)
	if errors.Is(err, ErrNotFound) {
		return nil, nil, fmt.Errorf("%w: %w", ErrNoSession, err)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("session store: %w", err)
	}
	if len(stored) < 1 || len(stored) < 1+int(stored[0]) {
		return nil, nil, fmt.Errorf("%w: %w", ErrNoSession, errOpen)
	}
	tenant := string(stored[1 : 1+stored[0]])
	plain, err := m.keys.Open(&t, associatedData(key, tenant), stored[1+stored[0]:])
	if err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrNoSession, err)
	}
	rec := &sessionpb.Session{}
	if err := proto.Unmarshal(plain, rec); err != nil || rec.GetTenant() != tenant {
		return nil, nil, fmt.Errorf("%w: record does not decode", ErrNoSession)
	}
	if m.opt.Now().After(time.Unix(rec.GetCreatedAt(), 0).Add(m.opt.MaxLifetime)) {
		return nil, nil, fmt.Errorf("%w: %w", ErrNoSession, ErrExpired)
	}
	return newSession(t, id, key, rec), stored, nil
}

func (m *Manager) TryLock(ctx context.Context, s *Session, ttl time.Duration) (release func(context.Context), ok bool, err error) {
	var owner [16]byte
	rand.Read(owner[:])
	key := m.lockKey(&s.token)
	ok, err = m.store.SetNX(ctx, key, owner[:], ttl)
	if err != nil || !ok {
		return nil, false, err
	}
	return func(ctx context.Context) { _, _ = m.store.DeleteIf(ctx, key, owner[:]) }, true, nil
}

// RandomString returns n random bytes from crypto/rand, base64url-encoded:
// for nonces, CSRF tokens and browser bindings.
func RandomString(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return base64.RawURLEncoding.EncodeToString(b)
}
