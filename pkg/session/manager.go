// Package session keeps login sessions: the cookie codec, the sealing of
// records, the Store interface and the Manager that ties them together.
package session

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
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
}

// Manager loads, creates, saves and deletes sealed sessions and login states.
type Manager struct {
	store Store
	keys  *Keys
	opt   Options
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
	return &Manager{store: store, keys: keys, opt: opt}
}

// Session is one loaded session: its record and where it lives.
type Session struct {
	token  Token
	key    string
	Record *sessionpb.Session
}

// Key is the store key of the session (it reveals nothing of the cookie).
func (s *Session) Key() string { return s.key }

// sessionKey is "<prefix>:s:{sha256(token)}"; the braces are a Redis Cluster
// hash tag so that the lock of a session lives on the same slot.
func (m *Manager) sessionKey(t *Token) string { return m.opt.Prefix + ":s:{" + t.hashHex() + "}" }
func (m *Manager) lockKey(t *Token) string    { return m.opt.Prefix + ":r:{" + t.hashHex() + "}" }
func (m *Manager) usedKey(t *Token) string    { return m.opt.Prefix + ":l:{" + t.hashHex() + "}" }

// Load finds the session of a cookie value for a request of tenant ("" in
// single-tenant mode) and extends its idle expiry in the same store round
// trip. It returns an error wrapping ErrNoSession when there is no usable
// session, ErrOtherTenant for another tenant's session, and any other error
// when the store failed.
func (m *Manager) Load(ctx context.Context, cookie, tenant string) (*Session, error) {
	t, err := m.keys.DecodeCookie(cookie)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoSession, err)
	}
	key := m.sessionKey(&t)
	s, err := m.load(ctx, t, key, m.opt.IdleTimeout)
	if err != nil {
		return nil, err
	}
	if s.Record.GetTenant() != tenant {
		return nil, ErrOtherTenant
	}
	return s, nil
}

// Reload reads a session again without touching its expiry.
func (m *Manager) Reload(ctx context.Context, s *Session) (*Session, error) {
	return m.load(ctx, s.token, s.key, 0)
}

// A stored session is: tenant length (1 byte), tenant, sealed record. The
// tenant is authenticated (it is in the sealing's associated data with the
// key), so a session can name its tenant before it is opened, and cannot be
// moved to another tenant.
func associatedData(key, tenant string) []byte {
	ad := make([]byte, 0, len(key)+1+len(tenant))
	return append(append(append(ad, key...), 0), tenant...)
}

func (m *Manager) load(ctx context.Context, t Token, key string, idle time.Duration) (*Session, error) {
	stored, err := m.store.Get(ctx, key, idle)
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("%w: %w", ErrNoSession, err)
	}
	if err != nil {
		return nil, fmt.Errorf("session store: %w", err)
	}
	if len(stored) < 1 || len(stored) < 1+int(stored[0]) {
		return nil, fmt.Errorf("%w: %w", ErrNoSession, errOpen)
	}
	tenant := string(stored[1 : 1+stored[0]])
	plain, err := m.keys.Open(&t, associatedData(key, tenant), stored[1+stored[0]:])
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoSession, err)
	}
	rec := &sessionpb.Session{}
	if err := proto.Unmarshal(plain, rec); err != nil || rec.GetTenant() != tenant {
		return nil, fmt.Errorf("%w: record does not decode", ErrNoSession)
	}
	if m.opt.Now().After(time.Unix(rec.GetCreatedAt(), 0).Add(m.opt.MaxLifetime)) {
		return nil, fmt.Errorf("%w: %w", ErrNoSession, ErrExpired)
	}
	return &Session{token: t, key: key, Record: rec}, nil
}

// Create stores a new session under a fresh token and returns it with its
// cookie value. The record's creation time is set here.
func (m *Manager) Create(ctx context.Context, rec *sessionpb.Session) (*Session, string, error) {
	t := NewToken()
	rec.CreatedAt = m.opt.Now().Unix()
	s := &Session{token: t, key: m.sessionKey(&t), Record: rec}
	stored, ttl, err := m.seal(s)
	if err != nil {
		return nil, "", err
	}
	if err := m.store.Set(ctx, s.key, stored, ttl); err != nil {
		return nil, "", fmt.Errorf("session store: %w", err)
	}
	return s, m.keys.EncodeCookie(t), nil
}

// Save writes the changed record of an existing session, only if it still
// exists: a session deleted meanwhile (a logout during a refresh) stays
// deleted, and Save returns an error wrapping ErrNoSession.
func (m *Manager) Save(ctx context.Context, s *Session) error {
	stored, ttl, err := m.seal(s)
	if err != nil {
		return err
	}
	ok, err := m.store.Replace(ctx, s.key, stored, ttl)
	if err != nil {
		return fmt.Errorf("session store: %w", err)
	}
	if !ok {
		return fmt.Errorf("%w: deleted meanwhile", ErrNoSession)
	}
	return nil
}

// seal seals the session's record for the store. Its time to live is the
// idle timeout, cut to what is left of the absolute lifetime.
func (m *Manager) seal(s *Session) (stored []byte, ttl time.Duration, err error) {
	ttl = m.opt.IdleTimeout
	if left := time.Unix(s.Record.GetCreatedAt(), 0).Add(m.opt.MaxLifetime).Sub(m.opt.Now()); left < ttl {
		ttl = left
	}
	if ttl <= 0 {
		return nil, 0, fmt.Errorf("%w: %w", ErrNoSession, ErrExpired)
	}
	plain, err := proto.Marshal(s.Record)
	if err != nil {
		return nil, 0, fmt.Errorf("session record: %w", err)
	}
	tenant := s.Record.GetTenant()
	if len(tenant) > 255 {
		return nil, 0, errors.New("session record: tenant name longer than 255 bytes")
	}
	header := append(make([]byte, 0, 1+len(tenant)+len(plain)+64), byte(len(tenant)))
	stored, err = m.keys.Seal(append(header, tenant...), &s.token, associatedData(s.key, tenant), plain)
	return stored, ttl, err
}

// Delete removes the session from the store.
func (m *Manager) Delete(ctx context.Context, s *Session) error {
	if err := m.store.Delete(ctx, s.key); err != nil {
		return fmt.Errorf("session store: %w", err)
	}
	return nil
}

// TryLock takes the session's refresh lock for ttl without waiting. When it
// got the lock, release gives it back (only if it still holds it).
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
