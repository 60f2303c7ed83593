package session

import (
	"context"
	"encoding/base64"
	"errors"
	"fmt"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/extauthz/extauthz/proto/sessionpb"
)

// DefaultLoginTTL is how long a login may take from the redirect to the
// identity provider until the callback (approuter's STATE_CACHE).
const DefaultLoginTTL = 180 * time.Second

// A login in progress is kept by the browser, not by the store: anonymous
// traffic writes nothing to Redis. The state sent to the identity provider
// is a signed token (forged states are refused without a store call); the
// per-login state cookie holds the login state sealed under that token, and
// bound to the tenant and the host the login started on. The state alone
// opens nothing and the cookie alone opens nothing: only the browser that
// started the login holds both, which is what binds the login to it.

// ErrLoginUsed is returned by UseLogin for a login completed before.
var ErrLoginUsed = errors.New("this login was already completed")

// Login is one sealed login in progress.
type Login struct {
	// State is the OAuth2 state parameter.
	State string
	// Cookie is the value of the per-login state cookie.
	Cookie string
}

func loginAD(tenant, host string) []byte {
	return []byte("extauthz login v1\x00" + tenant + "\x00" + host)
}

// LoginTTL is how long a login may take.
func (m *Manager) LoginTTL() time.Duration { return m.opt.LoginTTL }

// SealLogin seals a login state for a login started on host (the request's
// canonical host) of tenant. It touches no store.
func (m *Manager) SealLogin(ls *sessionpb.LoginState, host string) (Login, error) {
	t := NewToken()
	ls.CreatedAt = m.opt.Now().Unix()
	plain, err := proto.Marshal(ls)
	if err != nil {
		return Login{}, fmt.Errorf("login state: %w", err)
	}
	sealed, err := m.keys.Seal(nil, &t, loginAD(ls.GetTenant(), host), plain)
	if err != nil {
		return Login{}, err
	}
	return Login{State: m.keys.EncodeCookie(t), Cookie: base64.RawURLEncoding.EncodeToString(sealed)}, nil
}

// OpenLogin opens the login state of a callback on host of tenant from its
// state parameter and the state cookie's value. A forged, foreign (another
// browser's, tenant's or host's) or expired login wraps ErrNoSession. It
// touches no store; UseLogin makes the login single-use.
func (m *Manager) OpenLogin(state, cookie, tenant, host string) (*sessionpb.LoginState, error) {
	t, err := m.keys.DecodeCookie(state)
	if err != nil {
		return nil, fmt.Errorf("%w: invalid state", ErrNoSession)
	}
	sealed, err := base64.RawURLEncoding.DecodeString(cookie)
	if err != nil || cookie == "" {
		return nil, fmt.Errorf("%w: no login cookie of this state", ErrNoSession)
	}
	plain, err := m.keys.Open(&t, loginAD(tenant, host), sealed)
	if err != nil {
		return nil, fmt.Errorf("%w: login cookie of another state, browser, tenant or host: %w", ErrNoSession, err)
	}
	ls := &sessionpb.LoginState{}
	if err := proto.Unmarshal(plain, ls); err != nil || ls.GetTenant() != tenant {
		return nil, fmt.Errorf("%w: login state does not decode", ErrNoSession)
	}
	if !m.opt.Now().Before(time.Unix(ls.GetCreatedAt(), 0).Add(m.opt.LoginTTL)) {
		return nil, fmt.Errorf("%w: the login took longer than %s", ErrNoSession, m.opt.LoginTTL)
	}
	return ls, nil
}

// UseLogin marks an opened login as used, once: a second use gets
// ErrLoginUsed. The mark lives until the login would have expired anyway.
// Any other error is a store failure.
func (m *Manager) UseLogin(ctx context.Context, state string, ls *sessionpb.LoginState) error {
	t, err := m.keys.DecodeCookie(state)
	if err != nil {
		return fmt.Errorf("%w: invalid state", ErrNoSession)
	}
	ttl := time.Unix(ls.GetCreatedAt(), 0).Add(m.opt.LoginTTL).Sub(m.opt.Now())
	if ttl < time.Second {
		ttl = time.Second
	}
	ok, err := m.store.SetNX(ctx, m.usedKey(&t), []byte{1}, ttl)
	if err != nil {
		return fmt.Errorf("session store: %w", err)
	}
	if !ok {
		return ErrLoginUsed
	}
	return nil
}
