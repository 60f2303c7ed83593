// Package config builds extauthz's one typed configuration from, lowest to
// highest: defaults, a YAML file (--config), environment variables (approuter's
// names and EXTAUTHZ_*), service bindings (VCAP_SERVICES), and flags.
package config

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/url"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/extauthz/extauthz/pkg/binding"
	"github.com/extauthz/extauthz/pkg/idp"
	"github.com/extauthz/extauthz/pkg/tenant"
)

// Config is everything extauthz needs to run.
type Config struct {
	GRPCAddr        string
	HTTPAddr        string
	HTTPPathPrefix  string
	NginxAddr       string // "" = no nginx auth_request listener
	AdminAddr       string
	LogLevel        slog.Level
	LogFormat       string // json or text
	ShutdownTimeout time.Duration
	Pprof           bool

	// MaxHeaderBytes bounds the header names and values of one check;
	// MetricsMaxTenants the tenants named in metric labels.
	MaxHeaderBytes    int
	MetricsMaxTenants int
	// HTTP and admin listeners: the time to send a request's headers, and
	// the time a kept-alive connection may stay idle.
	HTTPReadHeaderTimeout time.Duration
	HTTPIdleTimeout       time.Duration

	CookieName         string
	SessionTimeout     time.Duration // idle
	SessionMaxLifetime time.Duration // absolute
	SessionSecrets     []Secret      // first seals, all open
	SecureCookie       string        // true, false, auto (from the request's scheme)
	SameSite           string        // Lax, Strict, None
	Partitioned        bool
	KeyPrefix          string
	JWTRefresh         time.Duration // refresh this long before expiry; 0 = off

	// Redis is nil when no store is configured: sessions then live in memory.
	Redis        *Redis
	StoreTimeout time.Duration

	OIDC               OIDC
	XSUAA              *binding.XSUAA // from the xsuaa binding
	TenantHostPattern  string
	TrustForwardedHost bool
	// AllowedHosts are the hosts served in single-tenant mode (none:
	// loopback names only); TrustForwardedProto believes x-forwarded-proto.
	AllowedHosts        []string
	TrustForwardedProto bool
	// XSApp is the xs-app.json to enforce ("" = none); RequireAuthForUnknownRoutes is approuter's flag.
	XSApp                       string
	RequireAuthForUnknownRoutes bool
	IDPTimeout                  time.Duration
	CallbackPath                string
	LogoutPath                  string
	PostLogoutRedirect          string

	// origin records where each setting's value came from, for messages.
	origin map[string]string
}

// Redis says how to reach the session store.
type Redis struct {
	Addrs      []string
	Username   string
	Password   Secret
	DB         int
	TLS        bool
	CA         []byte // PEM
	CertFile   string // client certificate (mutual TLS)
	KeyFile    string
	Cluster    bool
	MasterName string // Sentinel
	// EXT_SESSION_MGT: rejectUnauthorized (default true) and
	// skipCertHostnameValidation (default false).
	RejectUnauthorized         bool
	SkipCertHostnameValidation bool
	// EXT_SESSION_MGT: reconnect delay = min(attempt × BackOffMultiplier, RetryTimeout).
	RetryTimeout      time.Duration
	BackOffMultiplier time.Duration
	// Source names where the connection came from (a binding or a URL).
	Source string
}

// OIDC is a generic OpenID Connect provider.
type OIDC struct {
	// Issuer may hold "{tenant}", replaced by the request's tenant.
	Issuer       string
	ClientID     string
	ClientSecret Secret
	Scopes       []string
	// ClientAuth: client_secret_basic or client_secret_post ("": from discovery).
	ClientAuth string
	// ScopeClaim names an ID token claim whose values count as scopes for
	// xs-app.json (e.g. IAS "groups").
	ScopeClaim string
	// IASDomain, from an identity binding: with TENANT_HOST_PATTERN each
	// tenant logs in at https://<tenant>.<domain>.
	IASDomain string
}

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

	{"pprof", "EXTAUTHZ_PPROF", "false", "serve Go's /debug/pprof on the admin listener", false,
		func(c *Config, v string) error { return boolean(&c.Pprof, v) }},
	{"max-header-bytes", "EXTAUTHZ_MAX_HEADER_BYTES", "61440", "most bytes of header names and values one check may carry, on both protocols; more: 431 (Envoy's max_request_headers_kb is 60 KiB by default)", false,
		func(c *Config, v string) error { return integer(&c.MaxHeaderBytes, v, 1<<10, 8<<20) }},
	{"metrics-max-tenants", "EXTAUTHZ_METRICS_MAX_TENANTS", "500", "most tenants named in metric labels: verified tenants (a session opened or a login completed), first come; others are counted as (unverified) or (overflow)", false,
		func(c *Config, v string) error { return integer(&c.MetricsMaxTenants, v, 1, 100_000) }},
	{"http-read-header-timeout", "EXTAUTHZ_HTTP_READ_HEADER_TIMEOUT", "5s", "HTTP, nginx and admin listeners: how long a client may take to send a request's headers (a connection that sends nothing is closed then)", false,
		func(c *Config, v string) error { return positiveDuration(&c.HTTPReadHeaderTimeout, v) }},
	{"http-idle-timeout", "EXTAUTHZ_HTTP_IDLE_TIMEOUT", "2m", "HTTP, nginx and admin listeners: how long a kept-alive connection may stay idle between requests", false,
		func(c *Config, v string) error { return positiveDuration(&c.HTTPIdleTimeout, v) }},

	{"session-cookie-name", "SESSION_COOKIE_NAME", "JSESSIONID", "name of the session cookie (approuter)", false,
		func(c *Config, v string) error { return cookieName(&c.CookieName, v) }},
	{"session-timeout", "SESSION_TIMEOUT", "15", "idle timeout: minutes, or a duration such as 30m (approuter)", false,
		func(c *Config, v string) error { return duration(&c.SessionTimeout, v, true) }},
	{"session-max-lifetime", "EXTAUTHZ_SESSION_MAX_LIFETIME", "12h", "absolute lifetime of a session, however active", false,
		func(c *Config, v string) error { return duration(&c.SessionMaxLifetime, v, false) }},
	{"session-secrets", "EXTAUTHZ_SESSION_SECRETS", "", "session secrets, comma-separated, at least 64 characters each; the first signs and seals, all are accepted (rotation). Overrides EXT_SESSION_MGT.sessionSecret; the _FILE form takes one per line", true,
		func(c *Config, v string) error { return secrets(&c.SessionSecrets, v) }},
	{"secure-session-cookie", "SECURE_SESSION_COOKIE", "true", "Secure cookie attribute: true, false (plain-http development only), or auto (Secure when the browser came over https: the proxy's scheme, or x-forwarded-proto with --trust-forwarded-proto) (approuter)", false,
		func(c *Config, v string) error {
			return oneOf(&c.SecureCookie, strings.ToLower(v), "auto", "true", "false")
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
	{"trust-forwarded-host", "EXTAUTHZ_TRUST_FORWARDED_HOST", "false", "the request's host is x-forwarded-host (only behind a proxy that sets it and drops the client's)", false,
		func(c *Config, v string) error { return boolean(&c.TrustForwardedHost, v) }},
	{"trust-forwarded-proto", "EXTAUTHZ_TRUST_FORWARDED_PROTO", "false", "the browser's scheme is x-forwarded-proto, for URLs and SECURE_SESSION_COOKIE=auto (only behind a proxy that sets it and drops the client's)", false,
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
	{"post-logout-redirect", "EXTAUTHZ_POST_LOGOUT_REDIRECT", "/", "where the IdP sends the browser after logout: a path on the request's host, or an absolute URL", false,
		func(c *Config, v string) error { return nonEmpty(&c.PostLogoutRedirect, v) }},
}

func isListSep(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\t' }

// Getenv looks up an environment variable (os.Getenv in production).
type Getenv func(string) string

// ErrHelp is returned by Load when --help was asked for; the help has been
// written to the output.
var ErrHelp = flag.ErrHelp

// ErrVersion is returned by Load for --version.
var ErrVersion = errors.New("version requested")

// Problems is every problem found in a configuration, each naming its source.
type Problems []string

func (p Problems) Error() string {
	return "invalid configuration:\n  " + strings.Join(p, "\n  ")
}

// Load builds the configuration from args (without the program name) and the
// environment. Help and usage go to out. The error is Problems, ErrHelp or
// ErrVersion.
func Load(args []string, getenv Getenv, out io.Writer) (*Config, error) {
	c := &Config{origin: map[string]string{}}
	var probs Problems
	apply := func(s setting, v, origin string) {
		if err := s.set(c, v); err != nil {
			probs = append(probs, fmt.Sprintf("%s: %v", origin, err))
			return
		}
		c.origin[s.name] = origin
	}
	for _, s := range settings {
		apply(s, s.def, "default "+s.name)
	}

	fs := flag.NewFlagSet("extauthz", flag.ContinueOnError)
	fs.SetOutput(out)
	fs.Usage = func() { usage(out) }
	configFile := fs.String("config", getenv("EXTAUTHZ_CONFIG"), "YAML file of settings (keys are the flag names); env EXTAUTHZ_CONFIG")
	version := fs.Bool("version", false, "print the version and exit")
	flagValues := map[string]*string{}
	for _, s := range settings {
		flagValues[s.name] = fs.String(s.name, "", s.help)
	}
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if *version {
		return nil, ErrVersion
	}
	if fs.NArg() > 0 {
		return nil, Problems{fmt.Sprintf("arguments: unexpected %q (settings are flags: --name=value)", fs.Args())}
	}

	// 1. YAML file.
	if *configFile != "" {
		c.loadFile(*configFile, apply, func(p string) { probs = append(probs, p) })
	}

	// 2. approuter's JSON environment and service bindings.
	probs = append(probs, c.loadApprouterEnv(getenv)...)

	// 3. Environment variables (and <NAME>_FILE for secrets).
	for _, s := range settings {
		if s.env == "" {
			continue
		}
		if v, ok := lookup(getenv, s.env); ok {
			apply(s, v, s.env)
		}
		if !s.secret {
			continue
		}
		if f, ok := lookup(getenv, s.env+"_FILE"); ok {
			b, err := os.ReadFile(f)
			if err != nil {
				probs = append(probs, fmt.Sprintf("%s_FILE: %v", s.env, err))
				continue
			}
			v := strings.TrimRight(string(b), "\r\n")
			if s.name == "session-secrets" {
				v = strings.Join(strings.Fields(v), ",")
			}
			apply(s, v, s.env+"_FILE")
		}
	}

	// 4. Flags.
	fs.Visit(func(f *flag.Flag) {
		for _, s := range settings {
			if s.name == f.Name {
				apply(s, *flagValues[s.name], "--"+s.name)
			}
		}
	})

	probs = append(probs, c.Validate()...)
	if len(probs) > 0 {
		return nil, probs
	}
	return c, nil
}

// lookup treats an empty variable as unset, as shells and manifests often
// leave variables empty.
func lookup(getenv Getenv, name string) (string, bool) {
	v := getenv(name)
	return v, v != ""
}

func (c *Config) loadFile(file string, apply func(setting, string, string), report func(string)) {
	b, err := os.ReadFile(file)
	if err != nil {
		report(fmt.Sprintf("--config: %v", err))
		return
	}
	var m map[string]any
	if err := yaml.Unmarshal(b, &m); err != nil {
		report(fmt.Sprintf("%s: not a YAML map of settings: %v", file, err))
		return
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		i := slices.IndexFunc(settings, func(s setting) bool { return s.name == k })
		if i < 0 {
			report(fmt.Sprintf("%s: %s: unknown setting", file, k))
			continue
		}
		var v string
		switch x := m[k].(type) {
		case string:
			v = x
		case []any:
			parts := make([]string, len(x))
			for j, p := range x {
				parts[j] = fmt.Sprint(p)
			}
			v = strings.Join(parts, ",")
		case map[string]any:
			j, _ := json.Marshal(x)
			v = string(j)
		case nil:
			continue
		default:
			v = fmt.Sprint(x)
		}
		apply(settings[i], v, file+": "+k)
	}
}

// IssuerFromBinding says whether the OIDC issuer came from an identity
// (IAS) binding rather than from EXTAUTHZ_OIDC_ISSUER, a flag or the file.
func (c *Config) IssuerFromBinding() bool {
	return strings.Contains(c.origin["oidc-issuer"], " identity binding ")
}

// Origin says where a setting's value came from.
func (c *Config) Origin(name string) string { return c.origin[name] }

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

func addr(dst *string, v string) error {
	_, port, err := net.SplitHostPort(v)
	if err != nil {
		return fmt.Errorf("%q is not host:port", v)
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return fmt.Errorf("%q: bad port", v)
	}
	*dst = v
	return nil
}

func boolean(dst *bool, v string) error {
	b, err := strconv.ParseBool(v)
	if err != nil {
		return fmt.Errorf("%q is not true or false", v)
	}
	*dst = b
	return nil
}

func oneOf(dst *string, v string, allowed ...string) error {
	if !slices.Contains(allowed, v) {
		return fmt.Errorf("%q is not one of %s", v, strings.Join(allowed, ", "))
	}
	*dst = v
	return nil
}

func nonEmpty(dst *string, v string) error {
	if strings.TrimSpace(v) == "" {
		return errors.New("must not be empty")
	}
	*dst = v
	return nil
}

// duration parses a Go duration; with minutes, a plain number is minutes
// (approuter's SESSION_TIMEOUT and JWT_REFRESH).
func duration(dst *time.Duration, v string, minutes bool) error {
	v = strings.TrimSpace(v)
	if minutes {
		if n, err := strconv.ParseFloat(v, 64); err == nil {
			if n < 0 {
				return fmt.Errorf("%q: must not be negative", v)
			}
			*dst = time.Duration(n * float64(time.Minute))
			return nil
		}
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		if minutes {
			return fmt.Errorf("%q is neither minutes nor a duration such as 30m", v)
		}
		return fmt.Errorf("%q is not a duration such as 250ms or 15s", v)
	}
	if d < 0 {
		return fmt.Errorf("%q: must not be negative", v)
	}
	*dst = d
	return nil
}

func path(dst *string, v string) error {
	if !strings.HasPrefix(v, "/") || strings.HasPrefix(v, "//") || strings.ContainsAny(v, "?# \\") {
		return fmt.Errorf("%q must be an absolute path such as /logout", v)
	}
	*dst = v
	return nil
}

// cookieName accepts an RFC 6265 token.
func cookieName(dst *string, v string) error {
	if v == "" {
		return errors.New("must not be empty")
	}
	for _, r := range v {
		if r <= ' ' || r >= 0x7f || strings.ContainsRune(`()<>@,;:\"/[]?={}`, r) {
			return fmt.Errorf("%q is not a valid cookie name", v)
		}
	}
	*dst = v
	return nil
}

func secrets(dst *[]Secret, v string) error {
	var out []Secret
	for _, s := range strings.Split(v, ",") {
		if s = strings.TrimSpace(s); s != "" {
			out = append(out, Secret(s))
		}
	}
	*dst = out
	return nil
}

// cookies reads approuter's COOKIES JSON.
func (c *Config) cookies(v string) error {
	c.SameSite, c.Partitioned = "Lax", false
	if strings.TrimSpace(v) == "" {
		return nil
	}
	var raw struct {
		SameSite    *string `json:"SameSite"`
		Partitioned *bool   `json:"Partitioned"`
	}
	d := json.NewDecoder(strings.NewReader(v))
	d.DisallowUnknownFields()
	if err := d.Decode(&raw); err != nil {
		return fmt.Errorf(`must be JSON such as {"SameSite":"None","Partitioned":true}: %v`, err)
	}
	if raw.SameSite != nil {
		s := *raw.SameSite
		switch strings.ToLower(s) {
		case "lax":
			c.SameSite = "Lax"
		case "strict":
			c.SameSite = "Strict"
		case "none":
			c.SameSite = "None"
		default:
			return fmt.Errorf("SameSite: %q is not None, Lax or Strict", s)
		}
	}
	if raw.Partitioned != nil {
		c.Partitioned = *raw.Partitioned
	}
	return nil
}

func (c *Config) redisOrNew() *Redis {
	if c.Redis == nil {
		c.Redis = &Redis{RejectUnauthorized: true, RetryTimeout: 2 * time.Second, BackOffMultiplier: 50 * time.Millisecond}
	}
	return c.Redis
}

func (c *Config) redisFile(set func(*Redis, []byte), file string) error {
	if file == "" {
		return nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return err
	}
	set(c.redisOrNew(), b)
	return nil
}

func (c *Config) redisPath(field func(*Redis) *string, file string) error {
	if file == "" {
		return nil
	}
	if _, err := os.Stat(file); err != nil {
		return err
	}
	*field(c.redisOrNew()) = file
	return nil
}

// redisURL reads EXTAUTHZ_REDIS_URL. It replaces what a binding said about
// where Redis is, and keeps the TLS and retry settings.
func (c *Config) redisURL(v string) error {
	if v == "" {
		return nil
	}
	u, err := url.Parse(v)
	if err != nil {
		return errors.New("not a URL (the value is not shown: it may hold a password)")
	}
	if u.Scheme != "redis" && u.Scheme != "rediss" {
		return fmt.Errorf("scheme %q: must be redis or rediss", u.Scheme)
	}
	var addrs []string
	for _, h := range strings.Split(u.Host, ",") {
		if _, _, err := net.SplitHostPort(h); err != nil {
			h = net.JoinHostPort(h, "6379")
		}
		if strings.HasPrefix(h, ":") {
			return errors.New("missing host")
		}
		addrs = append(addrs, h)
	}
	r := c.redisOrNew()
	r.Addrs = addrs
	r.Username = u.User.Username()
	pw, _ := u.User.Password()
	r.Password = Secret(pw)
	r.TLS = u.Scheme == "rediss"
	r.DB = 0
	if db := strings.Trim(u.Path, "/"); db != "" {
		n, err := strconv.Atoi(db)
		if err != nil || n < 0 {
			return fmt.Errorf("database %q: must be a number", db)
		}
		r.DB = n
	}
	q := u.Query()
	r.Cluster, r.MasterName = false, q.Get("master")
	if cl := q.Get("cluster"); cl != "" {
		if r.Cluster, err = strconv.ParseBool(cl); err != nil {
			return fmt.Errorf("cluster=%q: must be true or false", cl)
		}
	}
	for k := range q {
		if k != "cluster" && k != "master" {
			return fmt.Errorf("unknown parameter %q (known: cluster, master)", k)
		}
	}
	r.Source = "EXTAUTHZ_REDIS_URL"
	return nil
}

// extSessionMgt is approuter's EXT_SESSION_MGT.
type extSessionMgt struct {
	InstanceName               *string  `json:"instanceName"`
	StorageType                *string  `json:"storageType"`
	SessionSecret              *string  `json:"sessionSecret"`
	DefaultRetryTimeout        *float64 `json:"defaultRetryTimeout"`
	BackOffMultiplier          *float64 `json:"backOffMultiplier"`
	SkipCertHostnameValidation *bool    `json:"skipCertHostnameValidation"`
	RejectUnauthorized         *bool    `json:"rejectUnauthorized"`
}

func (c *Config) loadApprouterEnv(getenv Getenv) Problems {
	probs := append(c.identityBinding(getenv), c.xsuaaBinding(getenv)...)
	probs = append(probs, c.vcapApplication(getenv)...)
	raw, ok := lookup(getenv, "EXT_SESSION_MGT")
	if !ok {
		return probs
	}
	mgt := c.extSessionMgt(raw, getenv)
	if len(mgt) > 0 && c.Redis != nil && len(c.Redis.Addrs) == 0 {
		c.Redis = nil // reported already; don't add "no Redis" on top
	}
	return append(probs, mgt...)
}

// vcapApplication takes the hosts served from Cloud Foundry's
// VCAP_APPLICATION: application_uris are the app's routes ("host" or
// "host/path"), as approuter knows them.
func (c *Config) vcapApplication(getenv Getenv) Problems {
	raw, ok := lookup(getenv, "VCAP_APPLICATION")
	if !ok {
		return nil
	}
	var app struct {
		URIs []string `json:"application_uris"`
	}
	if err := json.Unmarshal([]byte(raw), &app); err != nil {
		return Problems{fmt.Sprintf("VCAP_APPLICATION: not a JSON object with application_uris: %v", err)}
	}
	var hosts []string
	for _, u := range app.URIs {
		host, _, _ := strings.Cut(u, "/")
		name, err := tenant.AllowedHost(host)
		if err != nil {
			return Problems{fmt.Sprintf("VCAP_APPLICATION.application_uris: %v", err)}
		}
		hosts = append(hosts, name)
	}
	if len(hosts) > 0 {
		c.AllowedHosts = hosts
		c.origin["allowed-hosts"] = "VCAP_APPLICATION.application_uris"
	}
	return nil
}

// bindings reads the service bindings: VCAP_SERVICES on Cloud Foundry, else
// the binding folders under SERVICE_BINDING_ROOT on Kubernetes (Kyma). where
// names the source, "" when there is none.
func bindings(getenv Getenv) (bs []binding.Binding, where string, err error) {
	if vcap, ok := lookup(getenv, "VCAP_SERVICES"); ok {
		bs, err = binding.ParseVCAP(vcap)
		return bs, "VCAP_SERVICES", err
	}
	if root, ok := lookup(getenv, "SERVICE_BINDING_ROOT"); ok {
		bs, err = binding.ParseDir(root)
		return bs, "SERVICE_BINDING_ROOT", err
	}
	return nil, "", nil
}

// xsuaaBinding takes XSUAA from the binding named by UAA_SERVICE_NAME, else
// the first tagged "xsuaa". It is the identity provider unless
// EXTAUTHZ_OIDC_ISSUER names another.
func (c *Config) xsuaaBinding(getenv Getenv) Problems {
	bs, where, err := bindings(getenv)
	if err != nil || where == "" {
		return nil
	}
	var b binding.Binding
	var ok bool
	if name, named := lookup(getenv, "UAA_SERVICE_NAME"); named {
		if b, err = binding.ByName(bs, name); err != nil {
			return Problems{fmt.Sprintf("UAA_SERVICE_NAME: %v", err)}
		}
	} else if b, ok = binding.ByTag(bs, "xsuaa"); !ok {
		if b, ok = binding.ByLabel(bs, "xsuaa"); !ok {
			return nil
		}
	}
	x, err := binding.XSUAACredentials(b)
	if err != nil {
		var probs Problems
		for _, line := range strings.Split(err.Error(), "\n") {
			probs = append(probs, where+" xsuaa binding "+strconv.Quote(b.Name)+": "+line)
		}
		return probs
	}
	c.XSUAA = &x
	c.origin["xsuaa"] = where + " xsuaa binding " + strconv.Quote(b.Name)
	return nil
}

// identityBinding takes the identity provider from an IAS binding in
// VCAP_SERVICES: the one named by IAS_SERVICE_NAME, else the first with
// label "identity". EXTAUTHZ_OIDC_* variables override it.
func (c *Config) identityBinding(getenv Getenv) Problems {
	bs, where, err := bindings(getenv)
	if err != nil || where == "" {
		return nil // reported with the Redis binding when it matters
	}
	var b binding.Binding
	var ok bool
	if name, named := lookup(getenv, "IAS_SERVICE_NAME"); named {
		if b, err = binding.ByName(bs, name); err != nil {
			return Problems{fmt.Sprintf("IAS_SERVICE_NAME: %v", err)}
		}
	} else if b, ok = binding.ByLabel(bs, "identity"); !ok {
		return nil
	}
	id, err := binding.IdentityCredentials(b)
	src := where + " identity binding " + strconv.Quote(b.Name)
	if err != nil {
		var probs Problems
		for _, line := range strings.Split(err.Error(), "\n") {
			probs = append(probs, src+": "+line)
		}
		return probs
	}
	c.OIDC.Issuer, c.OIDC.ClientID, c.OIDC.ClientSecret, c.OIDC.IASDomain = id.URL, id.ClientID, Secret(id.ClientSecret), id.Domain
	for _, name := range []string{"oidc-issuer", "oidc-client-id", "oidc-client-secret"} {
		c.origin[name] = src
	}
	return nil
}

func (c *Config) extSessionMgt(raw string, getenv Getenv) Problems {
	const src = "EXT_SESSION_MGT"
	// Never echo the value: it holds the session secret.
	var keys map[string]json.RawMessage
	if err := json.Unmarshal([]byte(raw), &keys); err != nil {
		return Problems{fmt.Sprintf("%s: not valid JSON", src)}
	}
	known := []string{"instanceName", "storageType", "sessionSecret", "defaultRetryTimeout", "backOffMultiplier", "skipCertHostnameValidation", "rejectUnauthorized"}
	var probs Problems
	for k := range keys { // exact names: approuter's schema is case-sensitive
		if !slices.Contains(known, k) {
			probs = append(probs, fmt.Sprintf("%s: unknown field %q (known: %s)", src, k, strings.Join(known, ", ")))
		}
	}
	if len(probs) > 0 {
		sort.Strings(probs)
		return probs
	}
	var e extSessionMgt
	if err := json.Unmarshal([]byte(raw), &e); err != nil {
		var te *json.UnmarshalTypeError
		if errors.As(err, &te) {
			return Problems{fmt.Sprintf("%s.%s: must be a %s, not a %s", src, te.Field, jsonKind(te.Type.Kind().String()), te.Value)}
		}
		return Problems{fmt.Sprintf("%s: not valid JSON", src)}
	}
	req := func(field string, v *string) string {
		if v == nil || strings.TrimSpace(*v) == "" {
			probs = append(probs, fmt.Sprintf("%s.%s: required", src, field))
			return ""
		}
		return *v
	}
	name := req("instanceName", e.InstanceName)
	if st := req("storageType", e.StorageType); st != "" && st != "redis" {
		probs = append(probs, fmt.Sprintf("%s.storageType: %q is not supported (only redis)", src, st))
	}
	if secret := req("sessionSecret", e.SessionSecret); secret != "" {
		c.SessionSecrets = []Secret{Secret(secret)}
		c.origin["session-secrets"] = src + ".sessionSecret"
	}
	r := c.redisOrNew()
	if e.DefaultRetryTimeout != nil {
		if *e.DefaultRetryTimeout <= 0 {
			probs = append(probs, fmt.Sprintf("%s.defaultRetryTimeout: must be a positive number of milliseconds", src))
		}
		r.RetryTimeout = time.Duration(*e.DefaultRetryTimeout * float64(time.Millisecond))
	}
	if e.BackOffMultiplier != nil {
		if *e.BackOffMultiplier <= 0 {
			probs = append(probs, fmt.Sprintf("%s.backOffMultiplier: must be a positive number", src))
		}
		r.BackOffMultiplier = time.Duration(*e.BackOffMultiplier * float64(time.Millisecond))
	}
	if e.SkipCertHostnameValidation != nil {
		r.SkipCertHostnameValidation = *e.SkipCertHostnameValidation
	}
	if e.RejectUnauthorized != nil {
		r.RejectUnauthorized = *e.RejectUnauthorized
	}
	if name == "" {
		return probs
	}
	bs, where, err := bindings(getenv)
	if err != nil {
		return append(probs, fmt.Sprintf("%s: %v", where, err))
	}
	if where == "" {
		return append(probs, fmt.Sprintf("%s.instanceName: %q names a binding, but neither VCAP_SERVICES nor SERVICE_BINDING_ROOT is set", src, name))
	}
	b, err := binding.ByName(bs, name)
	if err != nil {
		return append(probs, fmt.Sprintf("%s.instanceName: %v", src, err))
	}
	creds, err := binding.RedisCredentials(b)
	if err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			probs = append(probs, fmt.Sprintf("%s %s: %s", where, name, line))
		}
		return probs
	}
	r.Addrs, r.Username, r.Password = creds.Addrs, creds.Username, Secret(creds.Password)
	r.TLS, r.CA, r.Cluster, r.MasterName = creds.TLS, creds.CA, creds.Cluster, creds.MasterName
	r.Source = where + " binding " + strconv.Quote(name)
	return probs
}

func jsonKind(k string) string {
	switch k {
	case "float64":
		return "number"
	case "ptr", "string":
		return "string"
	case "bool":
		return "boolean"
	}
	return k
}

// Validate checks the configuration as a whole and returns every problem,
// each naming the source of the value. It changes nothing.
func (c *Config) Validate() Problems {
	var probs Problems
	bad := func(name, format string, args ...any) {
		probs = append(probs, c.origin[name]+": "+fmt.Sprintf(format, args...))
	}
	for i, s := range c.SessionSecrets {
		if examplePlaceholder(string(s)) {
			bad("session-secrets", "secret %d is a placeholder from extauthz's own examples, which anyone can read: generate one (openssl rand -hex 32)", i+1)
		}
		if len(s) < 64 {
			if len(c.SessionSecrets) == 1 {
				bad("session-secrets", "must be at least 64 characters")
			} else {
				bad("session-secrets", "secret %d: must be at least 64 characters", i+1)
			}
		}
	}
	if c.Redis != nil && len(c.Redis.Addrs) > 0 && len(c.SessionSecrets) == 0 {
		probs = append(probs, "session-secrets: a session secret is required with a shared store (EXT_SESSION_MGT.sessionSecret or EXTAUTHZ_SESSION_SECRETS): without one each replica makes its own and cookies break")
	}
	if c.Redis != nil && len(c.Redis.Addrs) == 0 {
		probs = append(probs, "redis: TLS or retry settings given, but no Redis (EXT_SESSION_MGT.instanceName or EXTAUTHZ_REDIS_URL)")
	}
	if c.Redis != nil && (c.Redis.CertFile == "") != (c.Redis.KeyFile == "") {
		probs = append(probs, "redis-cert-file, redis-key-file: give both or neither")
	}
	if c.Redis != nil && c.Redis.Cluster && c.Redis.MasterName != "" {
		probs = append(probs, c.Redis.Source+": Cluster and Sentinel cannot be combined")
	}
	if len(c.AllowedHosts) > 0 && c.TenantHostPattern != "" && c.origin["allowed-hosts"] != "VCAP_APPLICATION.application_uris" {
		bad("allowed-hosts", "set together with TENANT_HOST_PATTERN, which decides the hosts in multitenant mode")
	}
	if c.SameSite == "None" && c.SecureCookie == "false" {
		bad("cookies", "SameSite=None needs Secure cookies, but SECURE_SESSION_COOKIE is false")
	}
	if c.SessionTimeout <= 0 {
		bad("session-timeout", "must be positive")
	}
	if c.SessionMaxLifetime < c.SessionTimeout {
		bad("session-max-lifetime", "%v is shorter than the idle timeout %v", c.SessionMaxLifetime, c.SessionTimeout)
	}
	if c.StoreTimeout <= 0 || c.StoreTimeout > 10*time.Second {
		bad("store-timeout", "%v: must be between 1ms and 10s", c.StoreTimeout)
	}
	if c.IDPTimeout <= 0 {
		bad("idp-timeout", "must be positive")
	}
	if c.CallbackPath == c.LogoutPath {
		bad("logout-path", "%q is also the login callback path", c.LogoutPath)
	}
	if c.OIDC.Issuer != "" {
		if err := idp.CheckIssuer(strings.ReplaceAll(c.OIDC.Issuer, "{tenant}", "tenant")); err != nil {
			bad("oidc-issuer", "%v", err)
		}
		if strings.Contains(c.OIDC.Issuer, "{tenant}") && c.TenantHostPattern == "" {
			bad("oidc-issuer", "has {tenant} but TENANT_HOST_PATTERN is not set")
		}
		if c.OIDC.ClientID == "" {
			probs = append(probs, "oidc-client-id: required with an issuer (EXTAUTHZ_OIDC_CLIENT_ID)")
		}
		if !slices.Contains(c.OIDC.Scopes, "openid") {
			bad("oidc-scopes", "must include openid")
		}
	} else if c.OIDC.ClientID != "" {
		bad("oidc-client-id", "set without an issuer (EXTAUTHZ_OIDC_ISSUER)")
	}
	if r := c.PostLogoutRedirect; !strings.HasPrefix(r, "/") || strings.HasPrefix(r, "//") {
		if u, err := url.Parse(r); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			bad("post-logout-redirect", "%q: must be a path or an absolute http(s) URL", r)
		}
	}
	return probs
}

// examplePlaceholder says whether a secret is one that extauthz's own
// examples and documentation show: published, so never secret.
func examplePlaceholder(s string) bool {
	l := strings.ToLower(s)
	return strings.Contains(l, "change-me") || strings.Contains(l, "changeme") || strings.Contains(l, "quickstart-only-secret") ||
		strings.Contains(l, "64-random-characters") || strings.Contains(l, "<64+")
}
