package session

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"time"

	"github.com/extauthz/extauthz/proto/sessionpb"
)

// The session index finds a user's sessions, and the sessions of one
// identity-provider session (the ID token's sid), without reading or
// opening any record: back-channel logout and the admin API end them.
//
// Sorted sets, written before the session itself (so a session never
// exists unindexed; a failed write leaves a member that names nothing):
//
//	<prefix>:u:{sha256(tenant, subject)}   the user's sessions in a tenant (admin API)
//	<prefix>:i:{sha256(issuer, subject)}   the sessions of a subject at an issuer
//	<prefix>:p:{sha256(issuer, sid)}       the sessions of one IdP session
//
// The identity provider's subject and sid belong to its issuer, not to our
// host's tenant: with one issuer shared by several tenant hosts, one IdP
// session spans them all, and back-channel logout looks sessions up by
// issuer (see idpsession.go).
//
// A member is the session's id (the hex SHA-256 of its token, as in its key:
// never the token), scored by the session's absolute deadline (creation +
// maximum lifetime), which no touch or refresh moves: a member past it names
// a session that is certainly gone and is dropped at the next write; each
// set keeps at most MaxIndexMembers (the latest deadlines) and expires with
// its last member. A member whose session ended earlier (idle, logout) stays
// until then; readers check the session keys' TTLs. Every index key has its
// own hash tag: the index keys and the session keys are on different
// Cluster slots, nothing updates them in one transaction, and nothing needs
// to.

// MaxIndexMembers caps an index: a user in a tenant, a subject at an
// issuer (across the tenants sharing it) or an identity provider's session
// has at most this many sessions; a login beyond ends the oldest, which
// could otherwise no longer be found to be revoked.
const MaxIndexMembers = 1000

// SessionInfo describes one live session to an operator: never a token or a
// cookie.
type SessionInfo struct {
	// Fingerprint names the session in the admin API and the audit log: the
	// first 16 hex digits of the hash in its store key.
	Fingerprint string    `json:"fingerprint"`
	Created     time.Time `json:"created"`
	// LastUsed is when the idle expiry was last extended: a request then,
	// or up to the touch interval earlier with the session cache.
	LastUsed time.Time `json:"last_used"`
	// Expires is when the session ends unless used again (idle timeout or
	// absolute lifetime, whichever comes first).
	Expires time.Time `json:"expires"`
}

// Fingerprint is the session's short name for logs and operators.
func (s *Session) Fingerprint() string { return fingerprint(&s.id) }

func fingerprint(id *[32]byte) string { return hex.EncodeToString(id[:8]) }

func (m *Manager) indexKey(kind, tenant, name string) string {
	id := sha256.Sum256([]byte(kind + "\x00" + tenant + "\x00" + name))
	return m.keyOf(":"+kind+":{", &id)
}

func (m *Manager) userIndex(tenant, subject string) string { return m.indexKey("u", tenant, subject) }

// indexes are the indexes a new session goes into: the tenant's user index
// (the admin API), and the identity provider's indexes of the subject and
// of the sid at the issuer (back-channel logout, issuerIndexes).
func (m *Manager) indexes(r *sessionpb.Session) []string {
	var ix []string
	if r.GetSubject() != "" {
		ix = append(ix, m.userIndex(r.GetTenant(), r.GetSubject()))
	}
	return append(ix, m.issuerIndexes(r.GetIssuer(), r.GetSubject(), r.GetSid())...)
}

// index writes a new session's index entries.
func (m *Manager) index(ctx context.Context, s *Session) error {
	r := s.Record
	ix := m.indexes(r)
	if len(ix) == 0 {
		return nil
	}
	deadline := time.Unix(r.GetCreatedAt(), 0).Add(m.opt.MaxLifetime)
	capped, err := m.store.IndexAdd(ctx, ix, IndexEntry{Member: hex.EncodeToString(s.id[:]), Deadline: deadline}, m.opt.Now(), MaxIndexMembers)
	if err != nil {
		return err
	}
	for _, member := range capped {
		var id [32]byte
		if b, err := hex.DecodeString(member); err == nil && len(b) == len(id) {
			copy(id[:], b)
			if err := m.deleteID(ctx, &id); err != nil {
				return err
			}
		}
	}
	return nil
}

// live is a session an index names that still exists.
type live struct {
	id       [32]byte
	deadline time.Time
	ttl      time.Duration
}

// liveIn returns the sessions of an index that still exist.
func (m *Manager) liveIn(ctx context.Context, index string) ([]live, error) {
	es, err := m.store.IndexRange(ctx, index, m.opt.Now())
	if err != nil {
		return nil, fmt.Errorf("session store: %w", err)
	}
	ls := make([]live, 0, len(es))
	keys := make([]string, 0, len(es))
	for _, e := range es {
		var id [32]byte
		if n, err := hex.Decode(id[:], []byte(e.Member)); err != nil || n != 32 {
			continue // not ours
		}
		ls = append(ls, live{id: id, deadline: e.Deadline})
		keys = append(keys, m.sessionKey(&id))
	}
	ttls, err := m.store.TTLs(ctx, keys)
	if err != nil {
		return nil, fmt.Errorf("session store: %w", err)
	}
	out := ls[:0]
	for i, l := range ls {
		if ttls[i] > 0 {
			l.ttl = ttls[i]
			out = append(out, l)
		}
	}
	return out, nil
}

// Sessions lists the live sessions of a user in a tenant.
func (m *Manager) Sessions(ctx context.Context, tenant, subject string) ([]SessionInfo, error) {
	ls, err := m.liveIn(ctx, m.userIndex(tenant, subject))
	if err != nil {
		return nil, err
	}
	now := m.opt.Now()
	out := make([]SessionInfo, 0, len(ls))
	for _, l := range ls {
		created := l.deadline.Add(-m.opt.MaxLifetime)
		expires := now.Add(l.ttl)
		last := expires.Add(-m.idleTTL)
		if last.Before(created) {
			last = created
		}
		if last.After(now) {
			last = now
		}
		out = append(out, SessionInfo{Fingerprint: fingerprint(&l.id), Created: created.UTC(), LastUsed: last.UTC().Truncate(time.Second), Expires: expires.UTC().Truncate(time.Second)})
	}
	return out, nil
}

// EndUser ends every session of a user in a tenant, on every replica, and
// returns the fingerprints of those it ended.
func (m *Manager) EndUser(ctx context.Context, tenant, subject string) ([]string, error) {
	return m.endIndex(ctx, m.userIndex(tenant, subject), "")
}

// EndSession ends the user's session with the given fingerprint; it says
// whether there was one.
func (m *Manager) EndSession(ctx context.Context, tenant, subject, fp string) (bool, error) {
	if fp == "" {
		return false, nil
	}
	ended, err := m.endIndex(ctx, m.userIndex(tenant, subject), fp)
	return len(ended) > 0, err
}

// endIndex deletes the live sessions of an index (only the one with
// fingerprint only, when set). A store failure stops it: what was deleted
// stays deleted, and the caller reports the failure.
func (m *Manager) endIndex(ctx context.Context, index, only string) ([]string, error) {
	ls, err := m.liveIn(ctx, index)
	if err != nil {
		return nil, err
	}
	var ended []string
	for _, l := range ls {
		fp := fingerprint(&l.id)
		if only != "" && fp != only {
			continue
		}
		if err := m.deleteID(ctx, &l.id); err != nil {
			return ended, err
		}
		ended = append(ended, fp)
	}
	return ended, nil
}

// deleteID removes a session from the store, and from every replica's cache.
func (m *Manager) deleteID(ctx context.Context, id *[32]byte) error {
	key := m.sessionKey(id)
	err := m.store.Delete(ctx, key)
	if m.cache != nil {
		m.cache.invalidate(id)
	}
	m.publish(ctx, key) // even after an error: the delete may have landed unanswered
	if err != nil {
		return fmt.Errorf("session store: %w", err)
	}
	return nil
}

// Seen says whether Once recorded name before, without recording it: for
// work that must be retried when it fails, recorded (with Once) only after
// it is done.
func (m *Manager) Seen(ctx context.Context, name string) (bool, error) {
	id := sha256.Sum256([]byte(name))
	return m.exists(ctx, m.keyOf(":j:{", &id))
}

// exists says whether the store holds key.
func (m *Manager) exists(ctx context.Context, key string) (bool, error) {
	_, err := m.store.Get(ctx, key, 0)
	switch {
	case errors.Is(err, ErrNotFound):
		return false, nil
	case err != nil:
		return false, fmt.Errorf("session store: %w", err)
	}
	return true, nil
}

// ErrSeen is returned by Once for a name seen before.
var ErrSeen = errors.New("seen before")

// Once records name (e.g. a logout token's issuer and jti) for ttl and
// returns ErrSeen when it was recorded before: replay protection across
// replicas. The store keeps only a hash of the name.
func (m *Manager) Once(ctx context.Context, name string, ttl time.Duration) error {
	id := sha256.Sum256([]byte(name))
	ok, err := m.store.SetNX(ctx, m.keyOf(":j:{", &id), []byte{1}, max(ttl, time.Second))
	switch {
	case err != nil:
		return fmt.Errorf("session store: %w", err)
	case !ok:
		return ErrSeen
	}
	return nil
}
