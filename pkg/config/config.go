// Package config builds extauthz's one typed configuration, in one place:
// Load reads every source, lowest to highest — defaults, xs-app.json (its
// login, logout and sessionTimeout), a YAML file (--config), approuter's
// environment (EXT_SESSION_MGT and the service bindings, VCAP_APPLICATION),
// environment variables (approuter's names and EXTAUTHZ_*, then <ENV>_FILE),
// flags —, resolves what depends on several settings (the identity
// provider), and validates the result, reporting every problem at once with
// its source. Nothing after Load changes a setting.
package config

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"slices"
	"sort"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/extauthz/extauthz/pkg/binding"
	"github.com/extauthz/extauthz/pkg/policy"
	"github.com/extauthz/extauthz/pkg/session"
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
	DrainDelay      time.Duration // on SIGTERM, not ready but still answering, before the drain
	Pprof           bool
	// AdminToken protects the admin API ("": off); XFFTrustedHops says
	// which x-forwarded-for address audit lines name (0: Envoy's source).
	AdminToken     Secret
	XFFTrustedHops int

	// MaxHeaderBytes bounds the header names and values of one check;
	// MaxConnections each check listener's open connections;
	// MetricsMaxTenants the tenants named in metric labels.
	MaxHeaderBytes    int
	MaxConnections    int
	MetricsMaxTenants int
	// HTTP and admin listeners: the time to send a request's headers, and
	// the time a kept-alive connection may stay idle.
	HTTPReadHeaderTimeout time.Duration
	HTTPIdleTimeout       time.Duration

	CookieName         string
	SessionTimeout     time.Duration // idle
	SessionMaxLifetime time.Duration // absolute
	SessionSecrets     []Secret      // first seals, all open
	SecureCookie       session.SecureMode
	SameSite           http.SameSite // Lax (default), Strict or None
	Partitioned        bool
	KeyPrefix          string
	JWTRefresh         time.Duration // refresh this long before expiry; 0 = off

	// Redis is nil when no store is configured: sessions then live in memory.
	Redis        *Redis
	StoreTimeout time.Duration
	// The cache of opened sessions in front of Redis (pkg/session CacheOptions).
	SessionCache          bool
	SessionCacheEntries   int
	SessionCacheBytes     int
	SessionCacheStaleness time.Duration
	SessionTouchInterval  time.Duration

	OIDC OIDC
	// IDP is the identity provider chosen from OIDC, XSUAA and the bindings.
	IDP                IdentityProvider
	XSUAA              *binding.XSUAA // from the xsuaa binding
	TenantHostPattern  string
	TrustForwardedHost bool
	// AllowedHosts are the hosts served in single-tenant mode (none:
	// loopback names only); TrustForwardedProto believes x-forwarded-proto.
	AllowedHosts        []string
	TrustForwardedProto bool
	// XSApp is the xs-app.json to enforce ("" = none); RequireAuthForUnknownRoutes is approuter's flag.
	// Policy is XSApp compiled (nil without one).
	XSApp                       string
	Policy                      *policy.Policy
	RequireAuthForUnknownRoutes bool
	IDPTimeout                  time.Duration
	CallbackPath                string
	LogoutPath                  string
	BackchannelLogoutPath       string
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

	// 5. What depends on several settings: xs-app.json (its login, logout
	// and sessionTimeout rank just above the defaults), the identity
	// provider. Then every check, on the final values.
	probs = append(probs, c.resolve(apply)...)
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

// Origin says where a setting's value came from.
func (c *Config) Origin(name string) string { return c.origin[name] }
