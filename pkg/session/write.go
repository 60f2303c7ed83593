package session

import (
	"context"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/extauthz/extauthz/proto/sessionpb"
)

// Create stores a new session under a fresh token and returns it with its
// cookie value. The record's creation time is set here; the record must not
// change afterwards.
func (m *Manager) Create(ctx context.Context, rec *sessionpb.Session) (*Session, string, error) {
	t := NewToken()
	rec.CreatedAt = m.opt.Now().Unix()
	id := t.hash()
	s := newSession(t, id, m.sessionKey(&id), rec)
	stored, ttl, err := m.seal(s)
	if err != nil {
		return nil, "", err
	}
	// Indexed first: a session that exists can always be found to be ended
	// (back-channel logout, the admin API).
	if err := m.index(ctx, s); err != nil {
		return nil, "", fmt.Errorf("session store: %w", err)
	}
	var sent int64
	var gen uint64
	if c := m.cache; c != nil {
		sent, gen = c.now(), c.gen(&id)
	}
	if err := m.store.Set(ctx, s.key, stored, ttl); err != nil {
		return nil, "", fmt.Errorf("session store: %w", err)
	}
	if c := m.cache; c != nil {
		c.put(m.newEntry(s, stored, sent, ttl), gen, false)
	}
	return s, m.keys.EncodeCookie(t), nil
}

// Save writes the changed record of an existing session (a Session made by
// WithRecord), only if it still exists: a session deleted meanwhile (a
// logout during a refresh) stays deleted, and Save returns an error wrapping
// ErrNoSession. With the cache, this replica's cache holds the new record
// and the other replicas are told to drop theirs.
func (m *Manager) Save(ctx context.Context, s *Session) error {
	stored, ttl, err := m.seal(s)
	if err != nil {
		return err
	}
	c := m.cache
	var sent int64
	var gen uint64
	if c != nil {
		sent, gen = c.now(), c.gen(&s.id)
	}
	ok, err := m.store.Replace(ctx, s.key, stored, ttl)
	if c != nil && (err != nil || !ok) {
		// Not written, or we cannot know: no replica's copy is to be
		// trusted any more (the write may have landed without its answer).
		c.invalidate(&s.id)
		m.publish(ctx, s.key)
	}
	if err != nil {
		return fmt.Errorf("session store: %w", err)
	}
	if !ok {
		return fmt.Errorf("%w: deleted meanwhile", ErrNoSession)
	}
	if c != nil {
		c.put(m.newEntry(s, stored, sent, ttl), gen, true)
		m.publish(ctx, s.key)
	}
	return nil
}

// storeTTL is the expiry a write or touch sets: the idle timeout (plus the
// touch interval with the cache), cut to what is left of the absolute
// lifetime of a session created at createdAt (unix seconds).
func (m *Manager) storeTTL(createdAt int64) time.Duration {
	ttl := m.idleTTL
	if left := time.Unix(createdAt, 0).Add(m.opt.MaxLifetime).Sub(m.opt.Now()); left < ttl {
		ttl = left
	}
	return ttl
}

// seal seals the session's record for the store, with its time to live.
func (m *Manager) seal(s *Session) (stored []byte, ttl time.Duration, err error) {
	ttl = m.storeTTL(s.Record.GetCreatedAt())
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

// Delete removes the session from the store, and from every replica's cache.
// The other replicas are told even when the store call failed: the delete
// may have landed without its answer, and a retried logout then finds
// nothing to delete (a failed publish is retried).
func (m *Manager) Delete(ctx context.Context, s *Session) error {
	return m.deleteID(ctx, &s.id)
}

// Forget tells every replica's cache to drop the session of a cookie whose
// record is gone (a logout retried after its delete landed unanswered). A
// cookie that does not verify is ignored: forged cookies cost no publish.
func (m *Manager) Forget(ctx context.Context, cookie string) {
	if m.cache == nil {
		return
	}
	t, err := m.keys.DecodeCookie(cookie)
	if err != nil {
		return
	}
	id := t.hash()
	m.cache.invalidate(&id)
	m.publish(ctx, m.sessionKey(&id))
}

// TryLock takes the session's refresh lock for ttl without waiting. When it
// got the lock, release gives it back (only if it still holds it).
