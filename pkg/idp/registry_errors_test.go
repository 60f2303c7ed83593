package idp

import (
	"context"
	"errors"
	"testing"
	"time"
)

// TestUnknownTenantIsNotAnOutage: a tenant the provider does not know (its
// discovery document is not found) is ErrUnknownTenant, also from memory;
// a provider that is down is not, nor is a proven tenant whose discovery
// is not found later (a misconfigured or broken provider, not a stranger).
func TestUnknownTenantIsNotAnOutage(t *testing.T) {
	ctx := context.Background()
	idp := newTenantIdP(t, "acme", "globex")
	c := newClock()
	r := idp.registry(RegistryOptions{TTL: time.Minute}, c)
	for range 3 {
		if _, err := r.Provider(ctx, "stranger"); !errors.Is(err, ErrUnknownTenant) || !errors.Is(err, ErrNoSuchIssuer) {
			t.Fatalf("a tenant the provider answers 404 for: %v, want ErrUnknownTenant", err)
		}
	}
	if n := idp.count(idp.discovery, "stranger"); n != 1 {
		t.Fatalf("%d discovery fetches for the unknown tenant, want 1 (remembered)", n)
	}
	idp.mu.Lock()
	idp.failAll["globex"] = true
	idp.mu.Unlock()
	if _, err := r.Provider(ctx, "globex"); err == nil || errors.Is(err, ErrUnknownTenant) || errors.Is(err, ErrNoSuchIssuer) {
		t.Fatalf("a provider answering 503: %v, want an outage", err)
	}
	if err := login(ctx, r, "acme", "good"); err != nil {
		t.Fatal(err)
	}
	idp.mu.Lock()
	delete(idp.known, "acme")
	idp.mu.Unlock()
	c.advance(2 * time.Minute) // due for a rebuild, which fails
	if _, err := r.Provider(ctx, "acme"); err != nil {
		t.Fatalf("a proven tenant whose rebuild fails keeps its client: %v", err)
	}
}

// TestVouchedTenantIsNeverUnknown: a replica restarted has proven no tenant;
// a session of the tenant vouches for it, and its provider answering 404 is
// then an outage, not ErrUnknownTenant, and it never waits for a fetch slot.
func TestVouchedTenantIsNeverUnknown(t *testing.T) {
	ctx := context.Background()
	idp := newTenantIdP(t, "acme")
	c := newClock()
	r := idp.registry(RegistryOptions{TTL: time.Minute, MaxFetches: 1, FetchWait: 10 * time.Millisecond}, c)
	idp.mu.Lock()
	delete(idp.known, "acme") // its discovery answers 404 from now on
	idp.mu.Unlock()
	if _, err := r.Provider(ctx, "acme"); !errors.Is(err, ErrUnknownTenant) {
		t.Fatalf("anonymous, unproven: %v, want ErrUnknownTenant", err)
	}
	r.Vouch("acme")
	_, err := r.Provider(ctx, "acme")
	if err == nil || errors.Is(err, ErrUnknownTenant) {
		t.Fatalf("vouched for by a session: %v, want the provider's failure", err)
	}
	// Fetch slots taken by unproven tenants do not hold it up.
	release, err := r.acquire(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	c.advance(DefaultRetryAfter + time.Second)
	idp.mu.Lock()
	idp.known["acme"] = true
	idp.mu.Unlock()
	if _, err := r.Provider(ctx, "acme"); err != nil {
		t.Fatalf("vouched, with every fetch slot taken: %v", err)
	}
}
