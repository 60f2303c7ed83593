package authz

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"time"

	"golang.org/x/sync/singleflight"
	"google.golang.org/protobuf/proto"

	"github.com/extauthz/extauthz/pkg/idp"
	"github.com/extauthz/extauthz/pkg/session"
)

// refreshIfDue refreshes the access token when it expires within
// RefreshAhead. One request per session refreshes, under the session's lock
// in the store, whatever the number of replicas; the others keep using the
// still-valid token, or wait for the refresh when the token has expired.
func (e *Engine) refreshIfDue(ctx context.Context, r *in, s *session.Session) (*session.Session, *Decision) {
	exp := s.Record.GetAccessTokenExpiry()
	if exp == 0 {
		return s, nil
	}
	now := e.opt.Now()
	expiry := time.Unix(exp, 0)
	if now.Before(expiry.Add(-e.refreshAhead(s))) {
		return s, nil // the path of almost every request
	}
	valid := now.Before(expiry)
	tenant := s.Record.GetTenant()
	if s.Record.GetRefreshToken() == "" || e.providers == nil {
		if valid {
			return s, nil
		}
		return nil, e.unauthenticated(ctx, r, ReasonTokenExpired)
	}
	release, locked, err := e.sessions.TryLock(ctx, s, e.opt.RefreshLockTTL)
	if err != nil {
		if valid {
			return s, nil
		}
		return nil, e.storeError(ctx, err)
	}
	if !locked {
		if valid {
			return s, nil // another request is refreshing
		}
		return e.waitForRefresh(ctx, r, s)
	}
	defer release(context.WithoutCancel(ctx))

	// Between our read and our lock another request may have refreshed.
	cur, err := e.sessions.Reload(ctx, s)
	switch {
	case errors.Is(err, session.ErrNoSession):
		return nil, e.unauthenticated(ctx, r, ReasonInvalidSession) // logged out meanwhile
	case err != nil && valid:
		return s, nil
	case err != nil:
		return nil, e.storeError(ctx, err)
	case cur.Record.GetAccessToken() != s.Record.GetAccessToken():
		return cur, nil
	}

	p, err := e.sessionProvider(ctx, tenant)
	if err != nil {
		if valid {
			return s, nil
		}
		return nil, e.idpUnavailable(ctx, r, err, false)
	}
	tok, err := p.Refresh(ctx, s.Record.GetRefreshToken(), s.Record.GetSubject())
	if err != nil {
		if valid {
			e.log.WarnContext(ctx, "token refresh failed; the current token is still valid and a later request retries", "error", err)
			return s, nil
		}
		if errors.Is(err, idp.ErrRejected) {
			e.log.InfoContext(ctx, "refresh rejected; session ended", "error", err)
			if err := e.sessions.Delete(ctx, s); err != nil {
				return nil, e.storeError(ctx, err)
			}
			e.audit(ctx, r, EventRefreshFailed, s, slog.String("error", err.Error()))
			return nil, e.unauthenticated(ctx, r, ReasonRefreshRejected)
		}
		return nil, e.idpUnavailable(ctx, r, err, false)
	}
	rec := proto.CloneOf(s.Record) // s is shared (cache): change a copy
	rec.AccessToken = tok.AccessToken
	setTokenTimes(rec, tok, e.opt.Now().Unix())
	if tok.RefreshToken != "" {
		rec.RefreshToken = tok.RefreshToken
	}
	if tok.IDToken != "" {
		rec.IdToken = tok.IDToken
	}
	if len(tok.Scopes) > 0 {
		rec.Scopes = tok.Scopes
	}
	s = s.WithRecord(rec)
	switch err := e.sessions.Save(ctx, s); {
	case errors.Is(err, session.ErrNoSession):
		return nil, e.unauthenticated(ctx, r, ReasonInvalidSession) // logged out during the refresh: it stays so
	case err != nil:
		e.log.WarnContext(ctx, "refreshed tokens could not be saved", "error", err)
		return nil, e.storeError(ctx, err)
	}
	e.log.DebugContext(ctx, "token refreshed", "subject", rec.GetSubject())
	return s, nil
}

// refreshAhead is how long before its expiry a session's access token is
// refreshed: RefreshAhead, but never more than half the token's lifetime,
// so that a token shorter-lived than JWT_REFRESH (Keycloak's five minutes
// against approuter's default of five) is refreshed once per rotation, not
// on every request.
func (e *Engine) refreshAhead(s *session.Session) time.Duration {
	ahead := e.opt.RefreshAhead
	if got := s.Record.GetAccessTokenObtainedAt(); got > 0 {
		if half := time.Duration(s.Record.GetAccessTokenExpiry()-got) * time.Second / 2; half < ahead {
			ahead = max(half, 0)
		}
	}
	return ahead
}

// waitForRefresh waits, a bounded time, for another request to store a new
// token for a session whose token has expired. The requests of one process
// that wait for the same session share one wait (one Redis poll every 50 ms
// per session, however many requests wait).
func (e *Engine) waitForRefresh(ctx context.Context, r *in, s *session.Session) (*session.Session, *Decision) {
	ch := e.waits.DoChan(s.Key(), func() (any, error) {
		return e.pollRefresh(context.WithoutCancel(ctx), s)
	})
	var res singleflight.Result
	select {
	case <-ctx.Done():
		return nil, e.refreshBusy()
	case res = <-ch:
	}
	switch {
	case errors.Is(res.Err, session.ErrNoSession):
		return nil, e.unauthenticated(ctx, r, ReasonRefreshRejected)
	case errors.Is(res.Err, errRefreshWait):
		return nil, e.refreshBusy()
	case res.Err != nil:
		return nil, e.storeError(ctx, res.Err)
	}
	return res.Val.(*session.Session), nil
}

var errRefreshWait = errors.New("no new token within the wait")

// refreshWait bounds how long a request with an expired token waits for
// another request's refresh.
const refreshWait = 3 * time.Second

// pollRefresh reads the session every 50 ms until its access token changes,
// for at most refreshWait.
func (e *Engine) pollRefresh(ctx context.Context, s *session.Session) (*session.Session, error) {
	deadline := time.NewTimer(refreshWait)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		select {
		case <-deadline.C:
			return nil, errRefreshWait
		case <-tick.C:
		}
		cur, err := e.sessions.Reload(ctx, s)
		if err != nil {
			return nil, err
		}
		if cur.Record.GetAccessToken() != s.Record.GetAccessToken() {
			return cur, nil
		}
	}
}

func (e *Engine) refreshBusy() *Decision {
	d := deny(http.StatusServiceUnavailable, ReasonRefreshWait, "Service unavailable: the session's token is being refreshed. Try again.\n")
	d.Response = append(d.Response, Header{"retry-after", "1"})
	return d
}
