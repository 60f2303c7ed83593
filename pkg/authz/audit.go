package authz

import (
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"sync/atomic"

	"golang.org/x/time/rate"

	"github.com/extauthz/extauthz/pkg/session"
)

// Event names a security event of the audit trail. Audit lines go to
// Options.Audit, a logger whose every line carries "audit": true, so they
// can be routed apart from operational logs. Each carries: the event, the
// tenant, the subject and the session's fingerprint when known, the client
// address (Envoy's source address, or x-forwarded-for with
// Options.XFFTrustedHops) and x-request-id when present. Never a token, a
// cookie value or a secret.
type Event string

// The events.
const (
	EventLogin              Event = "login"                      // a login completed: a new session
	EventLoginFailed        Event = "login_failed"               // the identity provider answered the callback with an error, or refused the code
	EventLogout             Event = "logout"                     // a session ended: by the user (via=user), the identity provider (via=backchannel) or an operator (via=admin)
	EventSessionExpired     Event = "session_expired"            // a session past its absolute lifetime was presented
	EventRefreshFailed      Event = "refresh_failed"             // the identity provider refused a refresh: the session ended
	EventScopeRefused       Event = "scope_refused"              // a route needed a scope the session lacks
	EventCSRFRefused        Event = "csrf_refused"               // a state-changing request without the session's CSRF token
	EventOtherTenant        Event = "other_tenant"               // a session used on another tenant's host
	EventForgedCookie       Event = "forged_cookie"              // a session cookie whose tag does not verify
	EventBackchannelRefused Event = "backchannel_logout_refused" // a logout token that does not verify, or replayed
)

// Events anyone can set off, as often as they like (a forged cookie, a bad
// logout token, a login callback with an error: no session needed), and
// those any signed-in user can (a refused scope or CSRF token, another
// tenant's host, an expired session presented again and again: in a SaaS
// anyone may sign up) are limited, so that they cannot flood the log: per
// event, bursts of auditBurst, then auditRate a second; the lines dropped
// are counted into the next line written ("suppressed": n). Logins and
// logouts each need the identity provider, and are all written.
const (
	auditRate  = 20
	auditBurst = 100
)

// The warning that the identity provider cannot be reached is written at
// most idpWarnRate a second after a burst of idpWarnBurst, with the count of
// those dropped: during an outage every login and refresh meets it.
const (
	idpWarnRate  = 1
	idpWarnBurst = 10
)

type auditLimit struct {
	lim     *rate.Limiter
	dropped atomic.Int64
}

func newAuditLimits() map[Event]*auditLimit {
	m := map[Event]*auditLimit{}
	for _, ev := range []Event{EventForgedCookie, EventBackchannelRefused, EventLoginFailed,
		EventScopeRefused, EventCSRFRefused, EventOtherTenant, EventSessionExpired} {
		m[ev] = &auditLimit{lim: rate.NewLimiter(auditRate, auditBurst)}
	}
	return m
}

// audit writes one audit line for a request; s may be nil.
func (e *Engine) audit(ctx context.Context, r *in, ev Event, s *session.Session, attrs ...slog.Attr) {
	if l := e.auditLimits[ev]; l != nil {
		if !l.lim.Allow() {
			l.dropped.Add(1)
			return
		}
		if n := l.dropped.Swap(0); n > 0 {
			attrs = append(attrs, slog.Int64("suppressed", n))
		}
	}
	a := make([]slog.Attr, 0, 8+len(attrs))
	a = append(a, slog.String("event", string(ev)), slog.String("tenant", r.tenant))
	if s != nil {
		a = append(a, slog.String("subject", s.Record.GetSubject()), slog.String("session", s.Fingerprint()))
	}
	if c := e.clientAddr(r); c != "" {
		a = append(a, slog.String("client", c))
	}
	if id := r.headers["x-request-id"]; id != "" && len(id) <= 128 {
		a = append(a, slog.String("request_id", id))
	}
	a = append(a, attrs...)
	e.opt.Audit.LogAttrs(ctx, slog.LevelInfo, "audit", a...)
}

// clientAddr is the client's address: the XFFTrustedHops-th address from
// the right of x-forwarded-for when configured (and there is one), else
// the proxy's source address. Only an IP address is returned.
func (e *Engine) clientAddr(r *in) string {
	if n := e.opt.XFFTrustedHops; n > 0 {
		parts := strings.Split(r.headers["x-forwarded-for"], ",")
		if len(parts) >= n {
			if a, err := netip.ParseAddr(strings.TrimSpace(parts[len(parts)-n])); err == nil {
				return a.String()
			}
		}
	}
	if ap, err := netip.ParseAddrPort(r.clientAddr); err == nil {
		return ap.Addr().String()
	}
	if a, err := netip.ParseAddr(r.clientAddr); err == nil {
		return a.String()
	}
	return ""
}
