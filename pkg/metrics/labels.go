package metrics

import (
	"strconv"
	"sync"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/extauthz/extauthz/pkg/authz"
)

// Metric labels are bounded whatever the traffic: a label value taken from
// a request would let anyone add series (and memory) at will, one random
// subdomain each. The tenant label names only verified tenants (a session
// of the tenant opened, or a login on it completed), at most MaxTenants of
// them, first come; beyond, and for every unverified tenant, it holds a
// fixed value. The reason label takes authz.Reasons and no other value: a
// decision of any other reason is counted as overflow. The label sets
// themselves are capped as a last line, should a status ever come from a
// request.

// Fixed tenant label values. Parentheses never occur in a tenant (a host label).
const (
	// TenantUnverified labels checks whose tenant only the host names.
	TenantUnverified = "(unverified)"
	// TenantOverflow labels verified tenants beyond MaxTenants, and label
	// sets beyond the cap.
	TenantOverflow = "(overflow)"
)

// DefaultMaxTenants is how many verified tenants get their own label value.
const DefaultMaxTenants = 500

// Options configure New.
type Options struct {
	// MaxTenants bounds the tenants named in labels (<= 0: DefaultMaxTenants).
	MaxTenants int
}

// labelSetsPerTenant bounds the label sets (decision, status, reason) one
// tenant label value may have: the engine's fixed reasons for verified
// tenants are a handful.
const labelSetsPerTenant = 16

// checkCounters hands out the checks counter of a decision, from a cache:
// resolving labels hashes them, and every check would pay it.
type checkCounters struct {
	vec *prometheus.CounterVec

	maxTenants int
	tenants    sync.Map // tenant -> struct{}, verified and named
	nTenants   atomic.Int64

	maxSets   int
	byOutcome sync.Map // outcome -> prometheus.Counter
	nSets     atomic.Int64
	overflow  [2]prometheus.Counter // deny, allow
	reasons   map[authz.Reason]bool // authz.Reasons: the reason label's values; read-only

	mu sync.Mutex // admits tenants and label sets one at a time
}

type outcome struct {
	allow  bool
	status int
	reason authz.Reason
	tenant string
}

func newCheckCounters(vec *prometheus.CounterVec, maxTenants int) *checkCounters {
	if maxTenants <= 0 {
		maxTenants = DefaultMaxTenants
	}
	c := &checkCounters{vec: vec, maxTenants: maxTenants, maxSets: labelSetsPerTenant * (maxTenants + 3), reasons: map[authz.Reason]bool{}}
	for _, r := range authz.Reasons() {
		c.reasons[r] = true
	}
	for i, allow := range []bool{false, true} {
		c.overflow[i] = vec.WithLabelValues(decision(allow), "0", TenantOverflow, TenantOverflow)
	}
	return c
}

// tenantLabel is the tenant label value of a decision.
func (c *checkCounters) tenantLabel(d *authz.Decision) string {
	switch {
	case d.Tenant == "":
		return "" // single tenant, or a host of no tenant
	case !d.TenantVerified:
		return TenantUnverified
	}
	if _, ok := c.tenants.Load(d.Tenant); ok {
		return d.Tenant
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if _, ok := c.tenants.Load(d.Tenant); ok {
		return d.Tenant
	}
	if c.nTenants.Load() >= int64(c.maxTenants) {
		return TenantOverflow
	}
	c.tenants.Store(d.Tenant, struct{}{})
	c.nTenants.Add(1)
	return d.Tenant
}

// counter is the checks counter of a decision.
func (c *checkCounters) counter(d *authz.Decision) prometheus.Counter {
	o := outcome{d.Allow, d.Status, d.Reason, c.tenantLabel(d)}
	if v, ok := c.byOutcome.Load(o); ok {
		return v.(prometheus.Counter)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if v, ok := c.byOutcome.Load(o); ok {
		return v.(prometheus.Counter)
	}
	if c.nSets.Load() >= int64(c.maxSets) || !c.reasons[o.reason] {
		if d.Allow {
			return c.overflow[1]
		}
		return c.overflow[0]
	}
	ctr := c.vec.WithLabelValues(decision(o.allow), strconv.Itoa(o.status), string(o.reason), o.tenant)
	c.byOutcome.Store(o, ctr)
	c.nSets.Add(1)
	return ctr
}
