// Package admin is the operators' API on the admin listener: list a user's
// sessions and end them, on every replica. It is protected by a bearer
// token; without one it is not served.
package admin

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/json"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync/atomic"

	"github.com/extauthz/extauthz/pkg/session"
	"golang.org/x/time/rate"
)

// Sessions finds and ends sessions (*session.Manager).
type Sessions interface {
	Sessions(ctx context.Context, tenant, subject string) ([]session.SessionInfo, error)
	EndUser(ctx context.Context, tenant, subject string) ([]string, error)
	EndSession(ctx context.Context, tenant, subject, fingerprint string) (bool, error)
}

// Handler serves /admin/sessions:
//
//	GET    /admin/sessions?subject=S[&tenant=T]             the user's live sessions
//	DELETE /admin/sessions?subject=S[&tenant=T]             ends them all: {"revoked": N}
//	DELETE /admin/sessions?subject=S[&tenant=T]&session=FP  ends one: {"revoked": 0 or 1}
//
// tenant is "" in single-tenant mode. Every request needs
// "Authorization: Bearer <token>" (401 otherwise).
type Handler struct {
	token    [32]byte // SHA-256 of the token: compared in constant time, whatever the length
	sessions Sessions
	audit    *slog.Logger
	log      *slog.Logger
	// refused limits the admin_unauthorized lines (anyone who reaches the
	// admin listener can set them off): bursts of 100, then 20 a second;
	// the dropped ones are counted into the next line.
	refused *rate.Limiter
	dropped atomic.Int64
}

// New returns the handler; token must not be empty.
func New(token string, sessions Sessions, audit, log *slog.Logger) *Handler {
	if token == "" {
		panic("admin.New: empty token")
	}
	return &Handler{token: sha256.Sum256([]byte(token)), sessions: sessions, audit: audit, log: log, refused: rate.NewLimiter(20, 100)}
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("cache-control", "no-store")
	if !h.authorized(r) {
		if h.refused.Allow() {
			path := truncate(r.URL.Path, 128)
			attrs := []slog.Attr{slog.String("event", "admin_unauthorized"), slog.String("client", client(r)),
				slog.String("method", truncate(r.Method, 16)), slog.String("path", path)}
			if n := h.dropped.Swap(0); n > 0 {
				attrs = append(attrs, slog.Int64("suppressed", n))
			}
			h.audit.LogAttrs(r.Context(), slog.LevelInfo, "audit", attrs...)
		} else {
			h.dropped.Add(1)
		}
		w.Header().Set("www-authenticate", `Bearer realm="extauthz admin"`)
		writeJSON(w, http.StatusUnauthorized, map[string]string{"error": "a valid bearer token is required"})
		return
	}
	if r.URL.Path != "/admin/sessions" {
		writeJSON(w, http.StatusNotFound, map[string]string{"error": "not found"})
		return
	}
	q := r.URL.Query()
	tenant, subject, fp := q.Get("tenant"), q.Get("subject"), q.Get("session")
	if subject == "" {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "subject is required"})
		return
	}
	ctx := r.Context()
	switch r.Method {
	case http.MethodGet:
		infos, err := h.sessions.Sessions(ctx, tenant, subject)
		if err != nil {
			h.unavailable(w, r, err)
			return
		}
		if infos == nil {
			infos = []session.SessionInfo{}
		}
		writeJSON(w, http.StatusOK, map[string]any{"tenant": tenant, "subject": subject, "sessions": infos})
	case http.MethodDelete:
		var ended []string
		var err error
		if fp != "" {
			var ok bool
			if ok, err = h.sessions.EndSession(ctx, tenant, subject, fp); ok {
				ended = []string{fp}
			}
		} else {
			ended, err = h.sessions.EndUser(ctx, tenant, subject)
		}
		for _, e := range ended {
			h.audit.LogAttrs(ctx, slog.LevelInfo, "audit", slog.String("event", "logout"), slog.String("via", "admin"),
				slog.String("tenant", tenant), slog.String("subject", subject), slog.String("session", e), slog.String("client", client(r)))
		}
		if err != nil {
			h.unavailable(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]int{"revoked": len(ended)})
	default:
		w.Header().Set("allow", "GET, DELETE")
		writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "GET or DELETE"})
	}
}

func (h *Handler) authorized(r *http.Request) bool {
	scheme, tok, ok := strings.Cut(r.Header.Get("authorization"), " ")
	if !ok || !strings.EqualFold(scheme, "bearer") {
		return false
	}
	got := sha256.Sum256([]byte(strings.TrimSpace(tok)))
	return subtle.ConstantTimeCompare(got[:], h.token[:]) == 1
}

func (h *Handler) unavailable(w http.ResponseWriter, r *http.Request, err error) {
	h.log.WarnContext(r.Context(), "admin API: session store unavailable", "error", err)
	w.Header().Set("retry-after", "1")
	writeJSON(w, http.StatusServiceUnavailable, map[string]string{"error": "the session store cannot be reached"})
}

func client(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("content-type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}
