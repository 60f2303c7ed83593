package idp

import (
	"context"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"
)

// Client is what a tenant's identity provider does for the engine
// (Provider and XSUAA are Clients).
type Client interface {
	AuthCodeURL(ctx context.Context, state, nonce, verifier, redirectURI string) (string, error)
	Exchange(ctx context.Context, code, verifier, redirectURI, nonce string) (*Tokens, error)
	Refresh(ctx context.Context, refreshToken, subject string) (*Tokens, error)
	LogoutURL(ctx context.Context, idTokenHint, postLogoutRedirect string) (string, error)
}

// Registry holds one Client per tenant, built on first use — once, however
// many requests ask at the same time — and kept for a while (discovery and
// keys are cached inside it). It holds at most Max tenants; the oldest goes.
type Registry struct {
	build func(tenant string) (Client, error)
	max   int
	ttl   time.Duration
	now   func() time.Time
	group singleflight.Group

	mu      sync.Mutex
	entries map[string]regEntry
}

type regEntry struct {
	c       Client
	created time.Time
}

// NewRegistry returns a registry; max <= 0 means 1000, ttl <= 0 one hour.
func NewRegistry(build func(tenant string) (Client, error), max int, ttl time.Duration) *Registry {
	if max <= 0 {
		max = 1000
	}
	if ttl <= 0 {
		ttl = time.Hour
	}
	return &Registry{build: build, max: max, ttl: ttl, now: time.Now, entries: map[string]regEntry{}}
}

// Get returns the tenant's Client.
func (r *Registry) Get(_ context.Context, tenant string) (Client, error) {
	r.mu.Lock()
	e, ok := r.entries[tenant]
	r.mu.Unlock()
	if ok && r.now().Sub(e.created) < r.ttl {
		return e.c, nil
	}
	v, err, _ := r.group.Do(tenant, func() (any, error) {
		c, err := r.build(tenant)
		if err != nil {
			return nil, err
		}
		r.mu.Lock()
		defer r.mu.Unlock()
		if len(r.entries) >= r.max {
			r.evictOldest()
		}
		r.entries[tenant] = regEntry{c: c, created: r.now()}
		return c, nil
	})
	if err != nil {
		return nil, err
	}
	return v.(Client), nil
}

func (r *Registry) evictOldest() {
	var oldest string
	var at time.Time
	for t, e := range r.entries {
		if oldest == "" || e.created.Before(at) {
			oldest, at = t, e.created
		}
	}
	delete(r.entries, oldest)
}

// Len is the number of tenants held.
func (r *Registry) Len() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return len(r.entries)
}
