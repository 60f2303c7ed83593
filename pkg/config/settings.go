package config

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/extauthz/extauthz/pkg/session"
	"github.com/extauthz/extauthz/pkg/tenant"
)

// setting is one configuration knob with its flag, environment name and default.
type setting struct {
	name   string // flag name and YAML key
	env    string // environment variable ("" if none)
	def    string
	help   string
	secret bool // also read from <env>_FILE; never printed
	set    func(c *Config, v string) error
}

var settings = []setting{
	{"grpc-addr", "EXTAUTHZ_GRPC_ADDR", ":9001", "listen address of the Envoy ext_authz gRPC service", false,
		func(c *Config, v string) error { return addr(&c.GRPCAddr, v) }},
	{"http-addr", "EXTAUTHZ_HTTP_ADDR", ":9002", "listen address of the HTTP ext_authz protocol (Envoy http_service, Istio envoyExtAuthzHttp)", false,
		func(c *Config, v string) error { return addr(&c.HTTPAddr, v) }},
	{"http-path-prefix", "EXTAUTHZ_HTTP_PATH_PREFIX", "", "path prefix the proxy puts before the checked path (Envoy http_service path_prefix, Istio pathPrefix), cut before deciding", false,
		func(c *Config, v string) error {
			if v != "" {
				return path(&c.HTTPPathPrefix, v)
			}
			c.HTTPPathPrefix = ""
			return nil
		}},
	{"nginx-addr", "EXTAUTHZ_NGINX_ADDR", "", "listen address of nginx's auth_request protocol (deploy/nginx); only nginx may reach it, as it trusts the X-Extauthz-Subrequest and X-Original-Method headers nginx sets. Unset: off", false,
		func(c *Config, v string) error {
			if v == "" {
				c.NginxAddr = ""
				return nil
			}
			return addr(&c.NginxAddr, v)
		}},
	{"admin-addr", "EXTAUTHZ_ADMIN_ADDR", ":9003", "listen address of /healthz, /readyz and /metrics", false,
		func(c *Config, v string) error { return addr(&c.AdminAddr, v) }},
	{"log-level", "EXTAUTHZ_LOG_LEVEL", "info", "debug, info, warn or error (debug logs one line per decision)", false,
		func(c *Config, v string) error { return c.LogLevel.UnmarshalText([]byte(v)) }},
	{"log-format", "EXTAUTHZ_LOG_FORMAT", "json", "json or text", false,
		func(c *Config, v string) error { return oneOf(&c.LogFormat, v, "json", "text") }},
	{"shutdown-timeout", "EXTAUTHZ_SHUTDOWN_TIMEOUT", "15s", "on SIGTERM, how long in-flight checks may take to finish", false,
		func(c *Config, v string) error { return duration(&c.ShutdownTimeout, v, false) }},
	{"drain-delay", "EXTAUTHZ_DRAIN_DELAY", "5s", "on SIGTERM, how long readiness fails (/readyz 503, gRPC health NOT_SERVING) while checks are still answered, before the listeners close: the time Kubernetes and Envoy take to stop sending; 0 = none", false,
		func(c *Config, v string) error { return duration(&c.DrainDelay, v, false) }},

	{"admin-token", "EXTAUTHZ_ADMIN_TOKEN", "", "bearer token of the admin API on the admin listener (/admin/sessions: list and end a user's sessions); at least 32 characters. Unset: the admin API is off", true,
		func(c *Config, v string) error { c.AdminToken = Secret(v); return nil }},
	{"xff-trusted-hops", "EXTAUTHZ_XFF_TRUSTED_HOPS", "0", "audit log: the client address is the n-th address from the right of x-forwarded-for (1: the one the proxy in front of extauthz appended); 0: Envoy's source address, x-forwarded-for unread", false,
		func(c *Config, v string) error { return integer(&c.XFFTrustedHops, v, 0, 10) }},
	{"pprof", "EXTAUTHZ_PPROF", "false", "serve Go's /debug/pprof on the admin listener", false,
		func(c *Config, v string) error { return boolean(&c.Pprof, v) }},
	{"max-header-bytes", "EXTAUTHZ_MAX_HEADER_BYTES", "61440", "most bytes of header names and values one check may carry, on both protocols; more: 431 (Envoy's max_request_headers_kb is 60 KiB by default)", false,
		func(c *Config, v string) error { return integer(&c.MaxHeaderBytes, v, 1<<10, 8<<20) }},
	{"max-connections", "EXTAUTHZ_MAX_CONNECTIONS", "4096", "each check listener's open connections (gRPC, HTTP, nginx); beyond, new ones wait for one to close, and once half are open one source gets at most a quarter: keep it at least twice what the proxies open. With the gRPC port reachable by more than the proxy, this bounds memory: a gRPC connection carries at most 256 calls of at most max-header-bytes + 128 KiB each", false,
		func(c *Config, v string) error { return integer(&c.MaxConnections, v, 16, 1<<20) }},
	{"metrics-max-tenants", "EXTAUTHZ_METRICS_MAX_TENANTS", "500", "most tenants named in metric labels: verified tenants (a session opened or a login completed), first come; others are counted as (unverified) or (overflow)", false,
		func(c *Config, v string) error { return integer(&c.MetricsMaxTenants, v, 1, 100_000) }},
	{"http-read-header-timeout", "EXTAUTHZ_HTTP_READ_HEADER_TIMEOUT", "5s", "HTTP, nginx and admin listeners: how long a client may take to send a request's headers (a connection that sends nothing is closed then)", false,
		func(c *Config, v string) error { return positiveDuration(&c.HTTPReadHeaderTimeout, v) }},
	{"http-idle-timeout", "EXTAUTHZ_HTTP_IDLE_TIMEOUT", "2m", "HTTP, nginx and admin listeners: how long a kept-alive connection may stay idle between requests", false,
		func(c *Config, v string) error { return positiveDuration(&c.HTTPIdleTimeout, v) }},

	{"session-cookie-name", "SESSION_COOKIE_NAME", "JSESSIONID", "name of the session cookie (approuter); `__Host-…` binds it to the exact host (no cookie from a sibling subdomain can shadow it; the login's state cookie is then `__Secure-…`, sealed to a `__Host-…_b` cookie of the browser so that none planted from a sibling opens a login)", false,
		func(c *Config, v string) error { return cookieName(&c.CookieName, v) }},
	{"session-timeout", "SESSION_TIMEOUT", "15", "idle timeout: minutes, or a duration such as 30m (approuter)", false,
		func(c *Config, v string) error { return duration(&c.SessionTimeout, v, true) }},
	{"session-max-lifetime", "EXTAUTHZ_SESSION_MAX_LIFETIME", "12h", "absolute lifetime of a session, however active", false,
		func(c *Config, v string) error { return duration(&c.SessionMaxLifetime, v, false) }},
	{"session-secrets", "EXTAUTHZ_SESSION_SECRETS", "", "session secrets, comma-separated, at least 64 characters each; the first signs and seals, all are accepted (rotation). Overrides EXT_SESSION_MGT.sessionSecret; the _FILE form takes one per line", true,
		func(c *Config, v string) error { return secrets(&c.SessionSecrets, v) }},
	{"secure-session-cookie", "SECURE_SESSION_COOKIE", "true", "Secure cookie attribute: true, false (plain-http development only), or auto (Secure when the browser came over https: the proxy's scheme, or x-forwarded-proto with --trust-forwarded-proto) (approuter)", false,
		func(c *Config, v string) error {
			m, err := session.ParseSecureMode(strings.ToLower(v))
			c.SecureCookie = m
			return err
		}},
	{"cookies", "COOKIES", "", `cookie attributes as JSON, e.g. {"SameSite":"None","Partitioned":true} (approuter)`, false,
		func(c *Config, v string) error { return c.cookies(v) }},
	{"session-key-prefix", "EXTAUTHZ_SESSION_KEY_PREFIX", "extauthz", "prefix of every key in Redis", false,
		func(c *Config, v string) error { return nonEmpty(&c.KeyPrefix, v) }},
	{"jwt-refresh", "JWT_REFRESH", "5", "refresh the access token this long before it expires: minutes or a duration; 0 = off (approuter)", false,
		func(c *Config, v string) error { return duration(&c.JWTRefresh, v, true) }},

	{"redis-url", "EXTAUTHZ_REDIS_URL", "", "redis://[user:password@]host:port[/db] or rediss://…; several hosts comma-separated; ?cluster=true for Cluster, ?master=<name> for Sentinel (hosts are then sentinels). Overrides the redis-cache binding", true,
		func(c *Config, v string) error { return c.redisURL(v) }},
	{"redis-ca-file", "EXTAUTHZ_REDIS_CA_FILE", "", "PEM file of the CA that signed Redis's certificate", false,
		func(c *Config, v string) error { return c.redisFile(func(r *Redis, b []byte) { r.CA = b }, v) }},
	{"redis-cert-file", "EXTAUTHZ_REDIS_CERT_FILE", "", "PEM client certificate for mutual TLS to Redis", false,
		func(c *Config, v string) error { return c.redisPath(func(r *Redis) *string { return &r.CertFile }, v) }},
	{"redis-key-file", "EXTAUTHZ_REDIS_KEY_FILE", "", "PEM private key of the client certificate", false,
		func(c *Config, v string) error { return c.redisPath(func(r *Redis) *string { return &r.KeyFile }, v) }},
	{"store-timeout", "EXTAUTHZ_STORE_TIMEOUT", "250ms", "deadline of every session store call; keep it well under Envoy's ext_authz timeout", false,
		func(c *Config, v string) error { return duration(&c.StoreTimeout, v, false) }},
	{"session-cache", "EXTAUTHZ_SESSION_CACHE", "true", "keep opened sessions in memory in front of Redis: a check of a cached session costs no Redis call; replicas drop a session within milliseconds when another logs it out or refreshes it (Redis pub/sub), and serve nothing older than --session-cache-staleness when that channel is down. Needs Redis (no effect on the in-memory store)", false,
		func(c *Config, v string) error { return boolean(&c.SessionCache, v) }},
	{"session-cache-entries", "EXTAUTHZ_SESSION_CACHE_ENTRIES", "10000", "most sessions the cache holds (least recently used out first)", false,
		func(c *Config, v string) error { return integer(&c.SessionCacheEntries, v, 1, 10_000_000) }},
	{"session-cache-bytes", "EXTAUTHZ_SESSION_CACHE_BYTES", "33554432", "most bytes of sessions the cache holds (32 MiB; a session with its tokens is a few KB)", false,
		func(c *Config, v string) error { return integer(&c.SessionCacheBytes, v, 1<<16, 1<<40) }},
	{"session-cache-staleness", "EXTAUTHZ_SESSION_CACHE_STALENESS", "1s", "when the invalidation channel is down or lags (or Redis is unreachable), no cached session older than this is used: it is read from Redis again, or refused with 503", false,
		func(c *Config, v string) error { return positiveDuration(&c.SessionCacheStaleness, v) }},
	{"session-touch-interval", "EXTAUTHZ_SESSION_TOUCH_INTERVAL", "15s", "with the cache, a session's idle expiry in Redis is extended at most once per interval: a session idle for SESSION_TIMEOUT expires between SESSION_TIMEOUT and SESSION_TIMEOUT plus this", false,
		func(c *Config, v string) error { return positiveDuration(&c.SessionTouchInterval, v) }},

	{"tenant-host-pattern", "TENANT_HOST_PATTERN", "", "regular expression on the request host whose first capture group is the tenant (approuter); unset: one tenant", false,
		func(c *Config, v string) error {
			if _, err := tenant.New(tenant.Options{Pattern: v}); err != nil {
				return err
			}
			c.TenantHostPattern = v
			return nil
		}},
	{"allowed-hosts", "EXTAUTHZ_ALLOWED_HOSTS", "", "single-tenant: the host names served, comma-separated (*.example.com for every subdomain); other hosts get 404 and no login. Default: Cloud Foundry's VCAP_APPLICATION application_uris, else loopback names only (localhost, *.localhost, 127.0.0.1, ::1). With TENANT_HOST_PATTERN the pattern decides", false,
		func(c *Config, v string) error {
			c.AllowedHosts = nil
			for _, h := range strings.FieldsFunc(v, isListSep) {
				name, err := tenant.AllowedHost(h)
				if err != nil {
					return err
				}
				c.AllowedHosts = append(c.AllowedHosts, name)
			}
			return nil
		}},
	{"trust-forwarded-host", "EXTAUTHZ_TRUST_FORWARDED_HOST", "false", "the request's host is x-forwarded-host, its last value (only behind a proxy that sets it or appends to it)", false,
		func(c *Config, v string) error { return boolean(&c.TrustForwardedHost, v) }},
	{"trust-forwarded-proto", "EXTAUTHZ_TRUST_FORWARDED_PROTO", "false", "the browser's scheme is x-forwarded-proto, its last value, for URLs and SECURE_SESSION_COOKIE=auto (only behind a proxy that sets it or appends to it)", false,
		func(c *Config, v string) error { return boolean(&c.TrustForwardedProto, v) }},
	{"xs-app", "EXTAUTHZ_XS_APP", "", "approuter's xs-app.json: routes, authenticationType, scopes, CSRF, login and logout (default: ./xs-app.json when present)", false,
		func(c *Config, v string) error {
			if v == "" {
				if _, err := os.Stat("xs-app.json"); err == nil {
					v = "xs-app.json"
				}
			} else if _, err := os.Stat(v); err != nil {
				return err
			}
			c.XSApp = v
			return nil
		}},
	{"require-auth-for-unknown-routes", "REQUIRE_AUTH_FOR_UNKNOWN_ROUTES", "false", "with xs-app.json: a request matching no route is authenticated before its 404 (approuter)", false,
		func(c *Config, v string) error { return boolean(&c.RequireAuthForUnknownRoutes, v) }},
	{"oidc-issuer", "EXTAUTHZ_OIDC_ISSUER", "", "OpenID Connect issuer URL (discovery at <issuer>/.well-known/openid-configuration); {tenant} is replaced by the tenant, e.g. https://{tenant}.idp.example", false,
		func(c *Config, v string) error { c.OIDC.Issuer = v; return nil }},
	{"oidc-client-id", "EXTAUTHZ_OIDC_CLIENT_ID", "", "OAuth2 client id", false,
		func(c *Config, v string) error { c.OIDC.ClientID = v; return nil }},
	{"oidc-client-secret", "EXTAUTHZ_OIDC_CLIENT_SECRET", "", "OAuth2 client secret", true,
		func(c *Config, v string) error { c.OIDC.ClientSecret = Secret(v); return nil }},
	{"oidc-scopes", "EXTAUTHZ_OIDC_SCOPES", "openid", "scopes to request, space- or comma-separated (add offline_access where the IdP needs it for refresh tokens)", false,
		func(c *Config, v string) error { c.OIDC.Scopes = strings.FieldsFunc(v, isListSep); return nil }},
	{"oidc-client-auth", "EXTAUTHZ_OIDC_CLIENT_AUTH", "", "how the client authenticates at the token endpoint: client_secret_basic or client_secret_post; unset: client_secret_basic unless discovery offers only client_secret_post", false,
		func(c *Config, v string) error {
			if v == "" {
				c.OIDC.ClientAuth = ""
				return nil
			}
			return oneOf(&c.OIDC.ClientAuth, v, "client_secret_basic", "client_secret_post")
		}},
	{"oidc-scope-claim", "EXTAUTHZ_OIDC_SCOPE_CLAIM", "", "ID token claim whose values count as scopes for xs-app.json routes (e.g. groups with IAS)", false,
		func(c *Config, v string) error { c.OIDC.ScopeClaim = v; return nil }},
	{"idp-timeout", "EXTAUTHZ_IDP_TIMEOUT", "5s", "deadline of every call to the identity provider", false,
		func(c *Config, v string) error { return duration(&c.IDPTimeout, v, false) }},
	{"login-callback-path", "EXTAUTHZ_LOGIN_CALLBACK_PATH", "/login/callback", "path of the OAuth2 redirect URI (approuter login.callbackEndpoint)", false,
		func(c *Config, v string) error { return path(&c.CallbackPath, v) }},
	{"logout-path", "EXTAUTHZ_LOGOUT_PATH", "/logout", "path that logs the user out (approuter logout.logoutEndpoint)", false,
		func(c *Config, v string) error { return path(&c.LogoutPath, v) }},
	{"backchannel-logout-path", "EXTAUTHZ_BACKCHANNEL_LOGOUT_PATH", "/logout/backchannel", "path that receives the identity provider's logout tokens (OpenID Connect Back-Channel Logout, POST); the proxy must pass the body there (see README)", false,
		func(c *Config, v string) error { return path(&c.BackchannelLogoutPath, v) }},
	{"post-logout-redirect", "EXTAUTHZ_POST_LOGOUT_REDIRECT", "/", "where the IdP sends the browser after logout: a path on the request's host, or an absolute URL", false,
		func(c *Config, v string) error { return nonEmpty(&c.PostLogoutRedirect, v) }},
}

// usage prints every setting with its flag, environment name and default.
func usage(out io.Writer) {
	fmt.Fprint(out, `extauthz: login sessions for Envoy's ext_authz, kept in Redis.

Usage: extauthz [--config file.yaml] [--name=value ...]

Sources, lowest to highest: defaults, the --config YAML file (keys are the
flag names), approuter's EXT_SESSION_MGT and VCAP_SERVICES, other environment
variables, flags. Secrets can also come from a file: <ENV>_FILE.

Settings:
`)
	for _, s := range settings {
		def := s.def
		if def == "" {
			def = "none"
		} else {
			def = strconv.Quote(def)
		}
		env := s.env
		if s.secret {
			env += " (or " + s.env + "_FILE)"
		}
		fmt.Fprintf(out, "  --%s\n      env %s, default %s\n      %s\n", s.name, env, def, s.help)
	}
	fmt.Fprint(out, `  --config
      env EXTAUTHZ_CONFIG, default none
      YAML file of settings
  --version
      print the version and exit

approuter environment:
  EXT_SESSION_MGT   JSON: {"instanceName":"<redis-cache binding name>","storageType":"redis",
                    "sessionSecret":"<64+ characters>", "defaultRetryTimeout":2000,
                    "backOffMultiplier":50, "rejectUnauthorized":true,
                    "skipCertHostnameValidation":false}
  VCAP_SERVICES     Cloud Foundry service bindings; the redis-cache binding named by
                    EXT_SESSION_MGT.instanceName is the session store.
Without a store (no EXT_SESSION_MGT, no EXTAUTHZ_REDIS_URL) sessions live in
memory and die with the process.
`)
}

// --- value parsers ---------------------------------------------------------
