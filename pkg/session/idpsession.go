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

func (m *Manager) sidIndex(issuer, sid string) string     { return m.indexKey("p", issuer, sid) }
func (m *Manager) subjectIndex(issuer, sub string) string { return m.indexKey("i", issuer, sub) }
func (m *Manager) sidEndedKey(issuer, sid string) string  { return m.indexKey("e", issuer, sid) }

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
// replica.
//
// The sid is also remembered as ended (for the absolute lifetime of a
// session): a login whose code the provider issued just before it ended that
// session, completing just after, must not create a session that outlives
// the logout (SIDEnded, checked at the callback), on any tenant's host.
func (m *Manager) EndIDPSession(ctx context.Context, issuer, sid string) ([]string, error) {
	if _, err := m.store.SetNX(ctx, m.sidEndedKey(issuer, sid), []byte{1}, m.opt.MaxLifetime); err != nil {
		return nil, fmt.Errorf("session store: %w", err)
	}
	return m.endIndex(ctx, m.sidIndex(issuer, sid), "")
}

// EndIDPSubject ends every session of the subject of a logout token
// verified for issuer (one without a sid), in every tenant, on every
// replica.
func (m *Manager) EndIDPSubject(ctx context.Context, issuer, subject string) ([]string, error) {
	return m.endIndex(ctx, m.subjectIndex(issuer, subject), "")
}

// SIDEnded says whether the identity provider ended its session sid by a
// back-channel logout (issuer: the ID token's).
func (m *Manager) SIDEnded(ctx context.Context, issuer, sid string) (bool, error) {
	if sid == "" {
		return false, nil
	}
	return m.exists(ctx, m.sidEndedKey(issuer, sid))
}
