package tracing

import (
	"context"
	"errors"
	"time"

	"go.opentelemetry.io/otel/attribute"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"

	"github.com/extauthz/extauthz/pkg/idp"
	"github.com/extauthz/extauthz/pkg/session"
)

// InstrumentStore traces the session store's calls made during a check
// (one span each: "session.store get", ...). Keys and values are never
// attributes. A nil Tracer returns s.
func (t *Tracer) InstrumentStore(s session.Store) session.Store {
	if t == nil {
		return s
	}
	return &tracedStore{s: s, t: t}
}

type tracedStore struct {
	s session.Store
	t *Tracer
}

var storeSystem = semconv.DBSystemNameRedis

func (ts *tracedStore) start(ctx context.Context, op string) (context.Context, func(error)) {
	ctx, span, ok := ts.t.child(ctx, "session.store "+op, storeSystem, semconv.DBOperationName(op))
	if !ok {
		return ctx, func(error) {}
	}
	return ctx, func(err error) {
		if errors.Is(err, session.ErrNotFound) {
			span.SetAttributes(attribute.Bool("extauthz.store.found", false))
			err = nil
		}
		end(span, err)
	}
}

func (ts *tracedStore) Get(ctx context.Context, key string, idle time.Duration) ([]byte, error) {
	ctx, done := ts.start(ctx, "get")
	v, err := ts.s.Get(ctx, key, idle)
	done(err)
	return v, err
}

func (ts *tracedStore) Set(ctx context.Context, key string, value []byte, ttl time.Duration) error {
	ctx, done := ts.start(ctx, "set")
	err := ts.s.Set(ctx, key, value, ttl)
	done(err)
	return err
}

func (ts *tracedStore) SetNX(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	ctx, done := ts.start(ctx, "setnx")
	ok, err := ts.s.SetNX(ctx, key, value, ttl)
	done(err)
	return ok, err
}

func (ts *tracedStore) Replace(ctx context.Context, key string, value []byte, ttl time.Duration) (bool, error) {
	ctx, done := ts.start(ctx, "replace")
	ok, err := ts.s.Replace(ctx, key, value, ttl)
	done(err)
	return ok, err
}

func (ts *tracedStore) Delete(ctx context.Context, key string) error {
	ctx, done := ts.start(ctx, "delete")
	err := ts.s.Delete(ctx, key)
	done(err)
	return err
}

func (ts *tracedStore) DeleteIf(ctx context.Context, key string, value []byte) (bool, error) {
	ctx, done := ts.start(ctx, "deleteif")
	ok, err := ts.s.DeleteIf(ctx, key, value)
	done(err)
	return ok, err
}

func (ts *tracedStore) Ping(ctx context.Context) error { return ts.s.Ping(ctx) } // readiness: never traced

func (ts *tracedStore) IndexAdd(ctx context.Context, indexes []string, e session.IndexEntry, now time.Time, max int) ([]string, error) {
	ctx, done := ts.start(ctx, "index_add")
	capped, err := ts.s.IndexAdd(ctx, indexes, e, now, max)
	done(err)
	return capped, err
}

func (ts *tracedStore) IndexRange(ctx context.Context, index string, now time.Time) ([]session.IndexEntry, error) {
	ctx, done := ts.start(ctx, "index_range")
	es, err := ts.s.IndexRange(ctx, index, now)
	done(err)
	return es, err
}

func (ts *tracedStore) TTLs(ctx context.Context, keys []string) ([]time.Duration, error) {
	ctx, done := ts.start(ctx, "ttls")
	ds, err := ts.s.TTLs(ctx, keys)
	done(err)
	return ds, err
}

// InstrumentIDP traces an identity provider's calls: discovery ("idp.discovery",
// when the registry has a tenant's provider discovered), the authorize URL
// (which discovers on first use), the code exchange ("idp.exchange", with
// the ID token's verification and key fetch) and the refresh
// ("idp.refresh"). A nil Tracer returns build.
func (t *Tracer) InstrumentIDP(build func(tenant string) (idp.Client, error)) func(tenant string) (idp.Client, error) {
	if t == nil {
		return build
	}
	return func(tenant string) (idp.Client, error) {
		c, err := build(tenant)
		if err != nil {
			return nil, err
		}
		tc := tracedIDP{c: c, t: t, tenant: tenant}
		if d, ok := c.(interface{ Discover(context.Context) error }); ok {
			return tracedDiscoverer{tc, d}, nil
		}
		return tc, nil
	}
}

type tracedIDP struct {
	c      idp.Client
	t      *Tracer
	tenant string
}

func (ti tracedIDP) start(ctx context.Context, name string) (context.Context, func(error)) {
	ctx, span, ok := ti.t.child(ctx, name, attribute.String("extauthz.tenant", ti.tenant))
	if !ok {
		return ctx, func(error) {}
	}
	return ctx, func(err error) {
		if errors.Is(err, idp.ErrRejected) {
			span.SetAttributes(attribute.Bool("extauthz.idp.rejected", true))
		}
		end(span, err)
	}
}

func (ti tracedIDP) AuthCodeURL(ctx context.Context, state, nonce, verifier, redirectURI string) (string, error) {
	ctx, done := ti.start(ctx, "idp.authorize_url")
	u, err := ti.c.AuthCodeURL(ctx, state, nonce, verifier, redirectURI)
	done(err)
	return u, err
}

func (ti tracedIDP) Exchange(ctx context.Context, code, verifier, redirectURI, nonce string) (*idp.Tokens, error) {
	ctx, done := ti.start(ctx, "idp.exchange")
	tok, err := ti.c.Exchange(ctx, code, verifier, redirectURI, nonce)
	done(err)
	return tok, err
}

func (ti tracedIDP) Refresh(ctx context.Context, refreshToken, subject string) (*idp.Tokens, error) {
	ctx, done := ti.start(ctx, "idp.refresh")
	tok, err := ti.c.Refresh(ctx, refreshToken, subject)
	done(err)
	return tok, err
}

func (ti tracedIDP) LogoutURL(ctx context.Context, idTokenHint, postLogoutRedirect string) (string, error) {
	ctx, done := ti.start(ctx, "idp.logout_url")
	u, err := ti.c.LogoutURL(ctx, idTokenHint, postLogoutRedirect)
	done(err)
	return u, err
}

func (ti tracedIDP) VerifyLogoutToken(ctx context.Context, raw string) (*idp.Logout, error) {
	ctx, done := ti.start(ctx, "idp.verify_logout_token")
	lo, err := ti.c.VerifyLogoutToken(ctx, raw)
	done(err)
	return lo, err
}

// tracedDiscoverer keeps the Discover method the registry looks for.
type tracedDiscoverer struct {
	tracedIDP
	d interface{ Discover(context.Context) error }
}

func (td tracedDiscoverer) Discover(ctx context.Context) error {
	ctx, done := td.start(ctx, "idp.discovery")
	err := td.d.Discover(ctx)
	done(err)
	return err
}
