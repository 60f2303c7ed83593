package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"runtime/debug"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/extauthz/extauthz/pkg/admin"
	"github.com/extauthz/extauthz/pkg/authz"
	"github.com/extauthz/extauthz/pkg/config"
	"github.com/extauthz/extauthz/pkg/envoy"
	"github.com/extauthz/extauthz/pkg/idp"
	"github.com/extauthz/extauthz/pkg/metrics"
	"github.com/extauthz/extauthz/pkg/policy"
	"github.com/extauthz/extauthz/pkg/server"
	"github.com/extauthz/extauthz/pkg/session"
	"github.com/extauthz/extauthz/pkg/session/redisstore"
	"github.com/extauthz/extauthz/pkg/tenant"
	"github.com/extauthz/extauthz/pkg/tracing"
)

// version is set at build time (-ldflags "-X main.version=…").
var version = "dev"

// run is the whole program: configuration in, servers up until ctx ends.
func run(ctx context.Context, args []string, getenv config.Getenv, stderr io.Writer) error {
	cfg, err := config.Load(args, getenv, stderr)
	switch {
	case errors.Is(err, config.ErrHelp):
		return nil
	case errors.Is(err, config.ErrVersion):
		fmt.Fprintln(stderr, "extauthz", version)
		return nil
	case err != nil:
		return err
	}
	log := newLogger(cfg, stderr)
	if getenv("GOGC") == "" {
		// Checks allocate short-lived garbage at a high rate and the heap is
		// small: trading some memory for a quarter of the GC work pays.
		debug.SetGCPercent(400)
	}
	if getenv("GOMEMLIMIT") == "" {
		// GOGC=400 lets the heap grow to five times what is live (the
		// session cache included); under a container's memory limit, the
		// collector works harder before the limit instead of the kernel
		// killing the process at it.
		if limit, ok := cgroupMemoryLimit(cgroupMemoryFiles); ok {
			debug.SetMemoryLimit(limit / 10 * 7)
			log.Info("memory limit from the container", "limit_bytes", limit, "gomemlimit_bytes", limit/10*7)
		}
	}
	m := metrics.New(metrics.Options{MaxTenants: cfg.MetricsMaxTenants})
	// OpenTelemetry: nil (off, nothing wrapped) without an OTLP endpoint.
	tracer, stopTracing, err := tracing.New(ctx, getenv, version)
	if err != nil {
		return err
	}
	defer func() {
		sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
		defer cancel()
		if err := stopTracing(sctx); err != nil {
			log.Warn("OpenTelemetry: spans not exported at exit", "error", err)
		}
	}()
	if tracer != nil {
		endpoint := firstSet(getenv, "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")
		if u, err := url.Parse(endpoint); err == nil && u.User != nil {
			u.User = nil // never log a password
			endpoint = u.String()
		}
		log.Info("tracing: OpenTelemetry, OTLP", "endpoint", endpoint)
	}

	store, closeStore, err := newStore(cfg, log)
	if err != nil {
		return err
	}
	defer closeStore()
	cache := sessionCache(cfg, store, log)
	store = tracer.InstrumentStore(m.InstrumentStore(store))

	secrets := make([][]byte, 0, len(cfg.SessionSecrets))
	for _, s := range cfg.SessionSecrets {
		secrets = append(secrets, []byte(s))
	}
	if len(secrets) == 0 {
		log.Warn("no session secret configured: using a random one; sessions do not survive a restart")
		secrets = append(secrets, []byte(session.RandomString(48)))
	}
	keys, err := session.NewKeys(secrets...)
	if err != nil {
		return err
	}
	if p := cfg.Policy; p != nil {
		log.Info("xs-app.json", "file", cfg.XSApp, "routes", len(p.Routes), "public", p.Public)
		if len(p.Ignored) > 0 {
			log.Info("xs-app.json fields left to Envoy (routing and proxying)", "fields", strings.Join(p.Ignored, ", "))
		}
	}
	sessions := session.NewManager(store, keys, session.Options{
		Prefix: cfg.KeyPrefix, IdleTimeout: cfg.SessionTimeout, MaxLifetime: cfg.SessionMaxLifetime, Cache: cache,
	})
	defer sessions.Start(ctx)()
	if cache != nil {
		m.WatchSessionCache(sessions.CacheStats)
	}

	providers, err := newProviders(cfg, log, tracer)
	if err != nil {
		return err
	}
	tenants, err := tenant.New(tenant.Options{Pattern: cfg.TenantHostPattern, AllowedHosts: cfg.AllowedHosts, TrustForwardedHost: cfg.TrustForwardedHost})
	if err != nil {
		return fmt.Errorf("TENANT_HOST_PATTERN: %w", err)
	}
	switch {
	case tenants.MultiTenant():
		log.Info("multitenant", "tenant_host_pattern", cfg.TenantHostPattern)
	case tenants.LoopbackOnly():
		log.Warn("no host configured (EXTAUTHZ_ALLOWED_HOSTS, VCAP_APPLICATION or TENANT_HOST_PATTERN): only loopback hosts (localhost, 127.0.0.1, ::1) are served; every other host gets 404")
	default:
		log.Info("hosts served", "allowed_hosts", strings.Join(cfg.AllowedHosts, ","), "source", cfg.Origin("allowed-hosts"))
	}

	// Security events, apart from operational lines by their "audit": true.
	audit := log.With("audit", true)
	engine := authz.New(sessions, providers, tenants, authz.Options{
		CookieName: cfg.CookieName, SecureCookie: cfg.SecureCookie, TrustForwardedProto: cfg.TrustForwardedProto,
		SameSite: cfg.SameSite, Partitioned: cfg.Partitioned,
		CallbackPath: cfg.CallbackPath, LogoutPath: cfg.LogoutPath, PostLogoutRedirect: cfg.PostLogoutRedirect,
		BackchannelLogoutPath: cfg.BackchannelLogoutPath, Audit: audit, XFFTrustedHops: cfg.XFFTrustedHops,
		RefreshAhead: cfg.JWTRefresh, RefreshLockTTL: cfg.IDPTimeout + 5*time.Second,
		Policy: cfg.Policy, LogoutMethod: logoutMethod(cfg.Policy),
	}, log)

	var lc net.ListenConfig
	grpcLis, err := lc.Listen(ctx, "tcp", cfg.GRPCAddr)
	if err != nil {
		return fmt.Errorf("grpc listener: %w", err)
	}
	httpLis, err := lc.Listen(ctx, "tcp", cfg.HTTPAddr)
	if err != nil {
		grpcLis.Close()
		return fmt.Errorf("http listener: %w", err)
	}
	adminLis, err := lc.Listen(ctx, "tcp", cfg.AdminAddr)
	if err != nil {
		grpcLis.Close()
		httpLis.Close()
		return fmt.Errorf("admin listener: %w", err)
	}
	var nginxLis net.Listener // nginx's auth_request, only when asked for
	if cfg.NginxAddr != "" {
		if nginxLis, err = lc.Listen(ctx, "tcp", cfg.NginxAddr); err != nil {
			grpcLis.Close()
			httpLis.Close()
			adminLis.Close()
			return fmt.Errorf("nginx listener: %w", err)
		}
	}
	svc := envoy.NewService(engine, m, log).LimitHeaderBytes(cfg.MaxHeaderBytes)
	var adminAPI http.Handler // off without a token
	if cfg.AdminToken != "" {
		adminAPI = admin.New(string(cfg.AdminToken), sessions, audit, log)
		log.Info("admin API on the admin listener", "path", "/admin/sessions")
	}
	httpHandler := envoy.NewHTTPHandler(engine, m, log, cfg.HTTPPathPrefix).LimitHeaderBytes(cfg.MaxHeaderBytes)
	nginxHandler := envoy.NewNginxHandler(engine, m, log).LimitHeaderBytes(cfg.MaxHeaderBytes)
	if tracer != nil { // never a nil *Tracer in the interface
		svc.Trace(tracer)
		httpHandler.Trace(tracer)
		nginxHandler.Trace(tracer)
	}
	return server.Run(ctx, server.Options{
		GRPC: grpcLis, HTTP: httpLis, Admin: adminLis, Nginx: nginxLis,
		HTTPHandler:     httpHandler,
		NginxHandler:    nginxHandler,
		Register:        svc.Register,
		GRPCOptions:     svc.ServerOptions(),
		MaxHeaderBytes:  cfg.MaxHeaderBytes,
		MaxConnections:  cfg.MaxConnections,
		Timeouts:        server.Timeouts{ReadHeader: cfg.HTTPReadHeaderTimeout, Idle: cfg.HTTPIdleTimeout},
		Ready:           store.Ping,
		Metrics:         m.Handler(),
		AdminAPI:        adminAPI,
		DrainDelay:      cfg.DrainDelay,
		ShutdownTimeout: cfg.ShutdownTimeout,
		Pprof:           cfg.Pprof,
		Log:             log,
	})
}

// firstSet is the first of the variables that is set.
func firstSet(getenv config.Getenv, names ...string) string {
	for _, n := range names {
		if v := getenv(n); v != "" {
			return v
		}
	}
	return ""
}

func logoutMethod(p *policy.Policy) string {
	if p == nil {
		return http.MethodGet
	}
	return p.LogoutMethod
}

// newProviders builds the identity provider config.Load chose: one for
// every tenant, or one per tenant, built on first use and kept in a
// registry. nil: nobody can log in.
func newProviders(cfg *config.Config, log *slog.Logger, tracer *tracing.Tracer) (authz.Providers, error) {
	o, p := cfg.OIDC, cfg.IDP
	var build func(tenant string) (idp.Client, error)
	switch p.Kind {
	case config.NoIDP:
		log.Warn("no identity provider configured (EXTAUTHZ_OIDC_ISSUER, or an xsuaa or identity binding): requests without a session get 401")
		return nil, nil
	case config.XSUAAProvider:
		x := *p.XSUAA
		log.Info("identity provider: xsuaa", "binding", p.Source, "url", x.URL, "tenantmode", x.TenantMode, "credential_type", x.CredentialType)
		if _, err := idp.NewXSUAA(idp.XSUAAConfig{Credentials: x, Timeout: cfg.IDPTimeout}); err != nil {
			return nil, fmt.Errorf("%s: %w", p.Source, err)
		}
		build = func(tenant string) (idp.Client, error) {
			return idp.NewXSUAA(idp.XSUAAConfig{Credentials: x, Tenant: tenant, Timeout: cfg.IDPTimeout})
		}
	case config.OIDCProvider:
		log.Info("identity provider: oidc", "issuer", p.Issuer, "source", p.Source, "client_id", o.ClientID)
		build = func(tenant string) (idp.Client, error) {
			return idp.New(idp.Config{Issuer: strings.ReplaceAll(p.Issuer, "{tenant}", tenant), ClientID: o.ClientID,
				ClientSecret: string(o.ClientSecret), Scopes: o.Scopes, Timeout: cfg.IDPTimeout, ScopeClaim: o.ScopeClaim, ClientAuth: o.ClientAuth})
		}
	}
	build = tracer.InstrumentIDP(build)
	if !p.PerTenant() {
		c, err := build("")
		if err != nil {
			return nil, fmt.Errorf("identity provider: %w", err)
		}
		return authz.StaticProvider{P: c}, nil
	}
	return idp.NewRegistry(build, 0, 0), nil
}

func newLogger(cfg *config.Config, w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: cfg.LogLevel}
	if cfg.LogFormat == "text" {
		return slog.New(slog.NewTextHandler(w, opts))
	}
	return slog.New(slog.NewJSONHandler(w, opts))
}

// sessionCache is the configuration of the cache of opened sessions, with
// its invalidation channel on the Redis store; nil when it is off, or when
// sessions live in memory (nothing to save there).
func sessionCache(cfg *config.Config, store session.Store, log *slog.Logger) *session.CacheOptions {
	rs, ok := store.(*redisstore.Store)
	if !cfg.SessionCache || !ok {
		return nil
	}
	log.Info("session cache", "entries", cfg.SessionCacheEntries, "bytes", cfg.SessionCacheBytes,
		"staleness", cfg.SessionCacheStaleness, "touch_interval", cfg.SessionTouchInterval)
	return &session.CacheOptions{
		Entries: cfg.SessionCacheEntries, Bytes: int64(cfg.SessionCacheBytes),
		Staleness: cfg.SessionCacheStaleness, TouchInterval: cfg.SessionTouchInterval,
		Peers: rs.Peers(redisstore.PeersOptions{Prefix: cfg.KeyPrefix, Log: log}),
	}
}

// newStore returns the Redis store, or the memory store when none is
// configured.
func newStore(cfg *config.Config, log *slog.Logger) (session.Store, func(), error) {
	r := cfg.Redis
	if r == nil {
		log.Warn("NO SESSION STORE CONFIGURED: sessions are kept in memory and are lost on restart, and replicas do not share them. Set EXT_SESSION_MGT with a redis-cache binding, or EXTAUTHZ_REDIS_URL.")
		return session.NewMemoryStore(nil), func() {}, nil
	}
	opt := redisstore.Options{
		Addrs: r.Addrs, Username: r.Username, Password: string(r.Password), DB: r.DB,
		Cluster: r.Cluster, MasterName: r.MasterName, Timeout: cfg.StoreTimeout,
		BackOffMultiplier: r.BackOffMultiplier, RetryCap: r.RetryTimeout,
	}
	if r.MasterName != "" {
		opt.SentinelUsername, opt.SentinelPassword = r.Username, string(r.Password)
	}
	if r.TLS {
		tc, err := redisstore.TLSConfig(redisstore.TLSOptions{
			CA: r.CA, CertFile: r.CertFile, KeyFile: r.KeyFile,
			RejectUnauthorized: r.RejectUnauthorized, SkipCertHostnameValidation: r.SkipCertHostnameValidation,
		})
		if err != nil {
			return nil, nil, err
		}
		opt.TLS = tc
	}
	redis.SetLogger(redisstore.SlogLogger{Log: log})
	s, err := redisstore.New(opt)
	if err != nil {
		return nil, nil, err
	}
	mode := "standalone"
	switch {
	case r.Cluster:
		mode = "cluster"
	case r.MasterName != "":
		mode = "sentinel"
	}
	log.Info("session store: redis", "source", r.Source, "addrs", strings.Join(r.Addrs, ","), "mode", mode, "tls", r.TLS)
	return s, func() { s.Close() }, nil
}

// cgroupMemoryFiles hold the container's memory limit: cgroup v2, then v1.
var cgroupMemoryFiles = []string{"/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"}

// cgroupMemoryLimit reads the first limit set in files ("max", or v1's huge
// "no limit" value, count as none).
func cgroupMemoryLimit(files []string) (int64, bool) {
	for _, f := range files {
		b, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSpace(string(b)), 10, 64)
		if err != nil || n <= 0 || n >= 1<<60 {
			return 0, false
		}
		return n, true
	}
	return 0, false
}
