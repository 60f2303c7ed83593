package idp

import (
	"container/list"
	"context"
	"errors"
	"fmt"
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
	// VerifyLogoutToken verifies a back-channel logout token (ErrRejected
	// when it does not verify, ErrUnsupported when the provider sends none).
	VerifyLogoutToken(ctx context.Context, raw string) (*Logout, error)
}

// discoverer is a Client that fetches something before it can serve (OIDC
// discovery). The registry has it fetched when it builds the Client, so
// that the fetch is bounded like the build.
type discoverer interface {
	Discover(ctx context.Context) error
}

// ErrBusy means a tenant's provider could not be fetched now: as many
// fetches for unproven tenants as allowed are running. Try again shortly.
var ErrBusy = errors.New("identity provider: too many fetches for new tenants at once; try again shortly")

// ErrUnknownTenant: an unproven tenant whose issuer does not exist
// (ErrNoSuchIssuer): a host that names no tenant of the provider, not a
// provider that is down.
var ErrUnknownTenant = errors.New("identity provider: no such tenant")

// Registry holds one Client per tenant, built and discovered on first use
// (once, however many requests ask at the same time) and kept for a while.
//
// Anyone can name a tenant: any host matching TENANT_HOST_PATTERN does. So
// a tenant is unproven until a login on it completed or a refresh on it
// succeeded (its identity provider knows it), and unproven tenants cost
// bounded resources:
//   - they are kept apart, at most MaxUnproven, and push out only each
//     other: never a proven tenant;
//   - their fetches (building, discovery, code exchange) run at most
//     MaxFetches at a time, across tenants; a caller waits for its turn a
//     few seconds at most (ErrBusy);
//   - a failure (no such tenant at the provider, provider down) is
//     remembered for RetryAfter: the tenant is not asked again meanwhile.
//
// Proven tenants (at most MaxTenants; beyond, the least recently used
// proven one goes) are never throttled. A proven tenant whose rebuild fails
// keeps its previous Client until a rebuild succeeds.
type Registry struct {
	build func(tenant string) (Client, error)
	opt   RegistryOptions
	group singleflight.Group
	slots chan struct{} // fetches for unproven tenants

	mu       sync.Mutex
	proven   lru
	unproven lru
}

// RegistryOptions configure NewRegistryWith. Zero values take the defaults.
type RegistryOptions struct {
	// MaxTenants bounds the proven tenants held (default 1000).
	MaxTenants int
	// MaxUnproven bounds the unproven tenants held (default 1000). Most
	// hold a remembered failure (a few hundred bytes); one that a
	// provider knows holds a discovered client (a few KiB).
	MaxUnproven int
	// TTL: a Client is rebuilt (its discovery fetched again) after this
	// (default 1h).
	TTL time.Duration
	// RetryAfter: how long a failed build or discovery is answered from
	// memory (default DefaultRetryAfter).
	RetryAfter time.Duration
	// MaxFetches bounds the fetches for unproven tenants running at once
	// (default 16).
	MaxFetches int
	// FetchWait bounds how long a request waits for a fetch slot (default
	// 3s: a login that waited longer is no better served than by its
	// retry, and the 502 page says retry-after 5).
	FetchWait time.Duration
	Now       func() time.Time
}

type regEntry struct {
	tenant  string
	c       *tenantClient // nil until a build and discovery succeeded
	built   time.Time
	err     error     // the last failure, answered until retryAt
	retryAt time.Time // zero: no failure
}

// lru is one class of tenants, most recently used first: every operation
// is O(1), however many tenants.
type lru struct {
	max int
	m   map[string]*list.Element // of *regEntry
	l   list.List
}

func newLRU(max int) lru { return lru{max: max, m: map[string]*list.Element{}} }

// get returns a tenant's entry and marks it used.
func (c *lru) get(tenant string) *regEntry {
	el, ok := c.m[tenant]
	if !ok {
		return nil
	}
	c.l.MoveToFront(el)
	return el.Value.(*regEntry)
}

// add adds an entry, removing the least recently used one when full.
func (c *lru) add(e *regEntry) {
	if c.l.Len() >= c.max {
		last := c.l.Back()
		c.l.Remove(last)
		delete(c.m, last.Value.(*regEntry).tenant)
	}
	c.m[e.tenant] = c.l.PushFront(e)
}

func (c *lru) remove(tenant string) *regEntry {
	el, ok := c.m[tenant]
	if !ok {
		return nil
	}
	c.l.Remove(el)
	delete(c.m, tenant)
	return el.Value.(*regEntry)
}

// NewRegistry returns a registry holding at most max proven tenants
// (<= 0: 1000) for ttl each (<= 0: one hour), other options by default.
func NewRegistry(build func(tenant string) (Client, error), max int, ttl time.Duration) *Registry {
	return NewRegistryWith(build, RegistryOptions{MaxTenants: max, TTL: ttl})
}

// NewRegistryWith returns a registry.
func NewRegistryWith(build func(tenant string) (Client, error), o RegistryOptions) *Registry {
	if o.MaxTenants <= 0 {
		o.MaxTenants = 1000
	}
	if o.MaxUnproven <= 0 {
		o.MaxUnproven = 1000
	}
	if o.TTL <= 0 {
		o.TTL = time.Hour
	}
	if o.RetryAfter <= 0 {
		o.RetryAfter = DefaultRetryAfter
	}
	if o.MaxFetches <= 0 {
		o.MaxFetches = 16
	}
	if o.FetchWait <= 0 {
		o.FetchWait = 3 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	return &Registry{
		build: build, opt: o, slots: make(chan struct{}, o.MaxFetches),
		proven: newLRU(o.MaxTenants), unproven: newLRU(o.MaxUnproven),
	}
}

// Provider returns the tenant's Client (the engine's Providers).
func (r *Registry) Provider(ctx context.Context, tenant string) (Client, error) {
	now := r.opt.Now()
	r.mu.Lock()
	e := r.lookup(tenant)
	if e != nil {
		fresh := e.c != nil && now.Sub(e.built) < r.opt.TTL
		failing := !e.retryAt.IsZero() && now.Before(e.retryAt)
		switch {
		case fresh:
			r.mu.Unlock()
			return e.c, nil
		case failing && e.c != nil:
			r.mu.Unlock()
			return e.c, nil // stale, but it worked: keep it until a rebuild succeeds
		case failing:
			err := e.err
			r.mu.Unlock()
			return nil, err
		}
	}
	r.mu.Unlock()
	ch := r.group.DoChan(tenant, func() (any, error) { return r.load(ctx, tenant) })
	select {
	case res := <-ch:
		if res.Err != nil {
			return nil, res.Err
		}
		return res.Val.(*tenantClient), nil
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

// load builds and discovers a tenant's Client: for an unproven tenant, in
// one of the fetch slots.
func (r *Registry) load(ctx context.Context, tenant string) (*tenantClient, error) {
	if !r.isProven(tenant) {
		release, err := r.acquire(ctx)
		if err != nil {
			return nil, err // not the tenant's failure: nothing remembered
		}
		defer release()
	}
	c, err := r.build(tenant)
	if err == nil {
		if d, ok := c.(discoverer); ok {
			err = d.Discover(ctx)
		}
	}
	now := r.opt.Now()
	r.mu.Lock()
	defer r.mu.Unlock()
	e := r.lookup(tenant)
	if e == nil {
		e = &regEntry{tenant: tenant}
		r.unproven.add(e)
	}
	if err != nil {
		if tenant != "" && errors.Is(err, ErrNoSuchIssuer) && r.unproven.get(tenant) == e {
			err = fmt.Errorf("%w %q: %w", ErrUnknownTenant, tenant, err)
		}
		e.err, e.retryAt = err, now.Add(r.opt.RetryAfter)
		if e.c != nil {
			return e.c, nil
		}
		return nil, err
	}
	e.c = &tenantClient{Client: c, r: r, tenant: tenant}
	e.built, e.err, e.retryAt = now, nil, time.Time{}
	return e.c, nil
}

// acquire takes a fetch slot, waiting while ctx allows, FetchWait at most.
func (r *Registry) acquire(ctx context.Context) (release func(), err error) {
	select {
	case r.slots <- struct{}{}:
		return func() { <-r.slots }, nil
	default:
	}
	t := time.NewTimer(r.opt.FetchWait)
	defer t.Stop()
	select {
	case r.slots <- struct{}{}:
		return func() { <-r.slots }, nil
	case <-t.C:
		return nil, ErrBusy
	case <-ctx.Done():
		return nil, ErrBusy
	}
}

// lookup finds a tenant's entry and marks it used.
func (r *Registry) lookup(tenant string) *regEntry {
	if e := r.proven.get(tenant); e != nil {
		return e
	}
	return r.unproven.get(tenant)
}

func (r *Registry) isProven(tenant string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.proven.m[tenant]
	return ok
}

// prove moves a tenant among the proven ones: a login or a refresh on it
// succeeded.
func (r *Registry) prove(c *tenantClient) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.proven.m[c.tenant]; ok {
		return
	}
	e := r.unproven.remove(c.tenant)
	if e == nil { // pushed out meanwhile by other unproven tenants
		e = &regEntry{tenant: c.tenant, c: c, built: r.opt.Now()}
	}
	r.proven.add(e)
}

// Vouch proves a tenant on evidence of its own: a session of the tenant
// (sealed with its name, and found in the store) was opened, so a login on
// it once succeeded, on this replica or another, before a restart or not.
// Its fetches are then never held up by unproven tenants' (ErrBusy), and
// its discovery failing is the provider's failure, not ErrUnknownTenant.
func (r *Registry) Vouch(tenant string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if _, ok := r.proven.m[tenant]; ok {
		return
	}
	e := r.unproven.remove(tenant)
	if e == nil {
		e = &regEntry{tenant: tenant}
	} else if errors.Is(e.err, ErrUnknownTenant) {
		e.err, e.retryAt = nil, time.Time{} // what an anonymous request made of it
	}
	r.proven.add(e)
}

// tenantClient is a tenant's Client as the registry hands it out: a code
// exchange for an unproven tenant takes a fetch slot, and a successful
// exchange or refresh proves the tenant.
type tenantClient struct {
	Client
	r      *Registry
	tenant string
}

func (c *tenantClient) Exchange(ctx context.Context, code, verifier, redirectURI, nonce string) (*Tokens, error) {
	if !c.r.isProven(c.tenant) {
		release, err := c.r.acquire(ctx)
		if err != nil {
			return nil, err
		}
		defer release()
	}
	t, err := c.Client.Exchange(ctx, code, verifier, redirectURI, nonce)
	if err == nil {
		c.r.prove(c)
	}
	return t, err
}

func (c *tenantClient) Refresh(ctx context.Context, refreshToken, subject string) (*Tokens, error) {
	t, err := c.Client.Refresh(ctx, refreshToken, subject)
	if err == nil {
		c.r.prove(c)
	}
	return t, err
}
