package session

import (
	"context"
	"fmt"
)

// What back-channel logout ends is the identity provider's: a sid names a
// session at the issuer, and (iss, sub) a user there ("locally unique and
// never reassigned within the Issuer", OpenID Connect Core 2). Our tenant
// plays no part in it: with one issuer shared by several tenant hosts (an
// issuer without {tenant}), a user logged in on a.app and b.app within one
// IdP session has one sid, and the provider posts its logout token to one
// registered URI, on one of those hosts. So a logout token is looked up by
// its (verified) issuer:
//
//	<prefix>:p:{sha256(issuer, sid)}       the sessions of one IdP session, in every tenant
//	<prefix>:i:{sha256(issuer, subject)}   the sessions of a subject at an issuer, in every tenant
//	<prefix>:e:{sha256(issuer, sid)}       the IdP session ended (SIDEnded)
//
// With an issuer per tenant nothing changes: tenant b's sessions are not
// in tenant a's issuer's indexes, whatever their sub or sid.
//
// Upgrade from the version that kept these by tenant only (":d:" for a sid,
// the user index ":u:" for a sub, ":x:" for an ended sid). Its sessions
// have only those indexes, and during a rolling upgrade its replicas still
// create sessions and receive logout tokens. Neither version may miss the
// other's sessions silently, so for now:
//
//   - a session is also written into ":d:{tenant, sid}" (":u:" is kept
//     anyway, for the admin API), and an ended sid is also marked in
//     ":x:{tenant, sid}": what an old replica reads;
//   - a logout token is also looked up in the receiving tenant's ":d:" (or
//     ":u:"), and SIDEnded also reads ":x:": what an old replica wrote.
//
// Reading the receiving tenant's keys is never wrong, only narrower: that
// tenant's sessions were made by the same provider that verified the token
// (the login callback and back-channel logout both use the tenant's
// provider). An old session on another tenant's host with a shared issuer
// is still missed, as it was before: no key names it by issuer, and the
// tenants of a host pattern cannot be enumerated. It ends by its absolute
// lifetime, or through the admin API. The tenant-keyed ":d:" and ":x:"
// cost one more index write per login and one more read per logout; a
// release after every replica runs this one, plus one maximum session
// lifetime (when the last old session has expired), may drop them.

func (m *Manager) sidIndex(issuer, sid string) string       { return m.indexKey("p", issuer, sid) }
func (m *Manager) subjectIndex(issuer, sub string) string   { return m.indexKey("i", issuer, sub) }
func (m *Manager) sidEndedKey(issuer, sid string) string    { return m.indexKey("e", issuer, sid) }
func (m *Manager) legacySIDIndex(tenant, sid string) string { return m.indexKey("d", tenant, sid) }
func (m *Manager) legacySIDEnded(tenant, sid string) string { return m.indexKey("x", tenant, sid) }

// issuerIndexes are the identity provider's indexes a session goes into. A
// session without an issuer (made by a test, never by a login) is in none:
// no verified logout token names the empty issuer.
func (m *Manager) issuerIndexes(issuer, subject, sid string) []string {
	if issuer == "" {
		return nil
	}
	var ix []string
	if subject != "" {
		ix = append(ix, m.subjectIndex(issuer, subject))
	}
	if sid != "" {
		ix = append(ix, m.sidIndex(issuer, sid))
	}
	return ix
}

// EndIDPSession ends every session of one identity-provider session (the
// sid of a logout token verified for issuer), in every tenant, on every
// replica; tenant is the tenant whose host received the token (see above:
// the previous version's sessions).
//
// The sid is also remembered as ended (for the absolute lifetime of a
// session): a login whose code the provider issued just before it ended that
// session, completing just after, must not create a session that outlives
// the logout (SIDEnded, checked at the callback), on any tenant's host.
func (m *Manager) EndIDPSession(ctx context.Context, tenant, issuer, sid string) ([]string, error) {
	marks := []string{m.legacySIDEnded(tenant, sid)}
	ixs := []string{m.legacySIDIndex(tenant, sid)}
	if issuer != "" {
		marks = append(marks, m.sidEndedKey(issuer, sid))
		ixs = append(ixs, m.sidIndex(issuer, sid))
	}
	for _, k := range marks {
		if _, err := m.store.SetNX(ctx, k, []byte{1}, m.opt.MaxLifetime); err != nil {
			return nil, fmt.Errorf("session store: %w", err)
		}
	}
	return m.endIndexes(ctx, ixs, "")
}

// EndIDPSubject ends every session of the subject of a logout token
// verified for issuer (one without a sid), in every tenant, on every
// replica; tenant is the tenant whose host received the token.
func (m *Manager) EndIDPSubject(ctx context.Context, tenant, issuer, subject string) ([]string, error) {
	ixs := []string{m.userIndex(tenant, subject)}
	if issuer != "" {
		ixs = append(ixs, m.subjectIndex(issuer, subject))
	}
	return m.endIndexes(ctx, ixs, "")
}

// SIDEnded says whether the identity provider ended its session sid by a
// back-channel logout: issuer is the ID token's, tenant the callback's.
func (m *Manager) SIDEnded(ctx context.Context, tenant, issuer, sid string) (bool, error) {
	if sid == "" {
		return false, nil
	}
	keys := []string{m.legacySIDEnded(tenant, sid)}
	if issuer != "" {
		keys = append(keys, m.sidEndedKey(issuer, sid))
	}
	ttls, err := m.store.TTLs(ctx, keys) // one round trip
	if err != nil {
		return false, fmt.Errorf("session store: %w", err)
	}
	for _, ttl := range ttls {
		if ttl > 0 {
			return true, nil
		}
	}
	return false, nil
}
