package config

import (
	"bytes"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/extauthz/extauthz/pkg/session"
)

var secret64 = strings.Repeat("s3cr3t-0123456789", 4)

// approuter's documentation example, with a redis-cache binding as the broker writes it.
const vcapDocs = `{"redis-cache":[{"name":"my-redis","instance_name":"my-redis","label":"redis-cache","tags":["cache"],
 "credentials":{"hostname":"redis.example","port":3283,"password":"pw","tls":true,"cluster_mode":false,
 "uri":"rediss://no-user-name-for-redis:pw@redis.example:3283"}}]}`

func env(kv ...string) Getenv {
	m := map[string]string{}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return func(k string) string { return m[k] }
}

func mgtJSON(extra string) string {
	return `{"instanceName":"my-redis","storageType":"redis","sessionSecret":"` + secret64 + `"` + extra + `}`
}

func TestDefaults(t *testing.T) {
	c, err := Load(nil, env(), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if c.GRPCAddr != ":9001" || c.AdminAddr != ":9003" || c.CookieName != "JSESSIONID" ||
		c.SessionTimeout != 15*time.Minute || c.JWTRefresh != 5*time.Minute || c.Redis != nil ||
		c.SameSite != http.SameSiteLaxMode || c.SecureCookie != session.SecureAlways || c.CallbackPath != "/login/callback" ||
		c.LogoutPath != "/logout" || c.StoreTimeout != 250*time.Millisecond {
		t.Fatalf("defaults: %+v", c)
	}
	if got := c.Origin("grpc-addr"); got != "default grpc-addr" {
		t.Fatalf("origin = %q", got)
	}
}

func TestApprouterEnvironment(t *testing.T) {
	c, err := Load(nil, env(
		"EXT_SESSION_MGT", mgtJSON(`,"defaultRetryTimeout":3000,"backOffMultiplier":20,"rejectUnauthorized":false,"skipCertHostnameValidation":true`),
		"VCAP_SERVICES", vcapDocs,
		"SESSION_TIMEOUT", "30", "SESSION_COOKIE_NAME", "MYSESSION", "JWT_REFRESH", "0",
		"SECURE_SESSION_COOKIE", "true", "COOKIES", `{"SameSite":"None","Partitioned":true}`,
	), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	r := c.Redis
	if r == nil || r.Addrs[0] != "redis.example:3283" || string(r.Password) != "pw" || !r.TLS || r.Username != "" ||
		r.RetryTimeout != 3*time.Second || r.BackOffMultiplier != 20*time.Millisecond ||
		r.RejectUnauthorized || !r.SkipCertHostnameValidation {
		t.Fatalf("redis: %+v", r)
	}
	if string(c.SessionSecrets[0]) != secret64 || c.Origin("session-secrets") != "EXT_SESSION_MGT.sessionSecret" {
		t.Fatalf("secret from %q", c.Origin("session-secrets"))
	}
	if c.SessionTimeout != 30*time.Minute || c.CookieName != "MYSESSION" || c.JWTRefresh != 0 ||
		c.SecureCookie != session.SecureAlways || c.SameSite != http.SameSiteNoneMode || !c.Partitioned {
		t.Fatalf("approuter variables not applied: %+v", c)
	}
}

func TestBindingFoldersOnKyma(t *testing.T) {
	c, err := Load(nil, env("SERVICE_BINDING_ROOT", "../binding/testdata/bindings", "EXT_SESSION_MGT", mgtJSON("")), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if c.Redis == nil || c.Redis.Addrs[0] != "redis.example.internal:6379" || !c.Redis.TLS || c.Redis.Source != `SERVICE_BINDING_ROOT binding "my-redis"` {
		t.Fatalf("redis from the binding folder: %+v", c.Redis)
	}
	if c.XSUAA == nil || c.XSUAA.ClientID != "sb-myapp!t123" || c.XSUAA.TenantMode != "shared" || c.Origin("xsuaa") != `SERVICE_BINDING_ROOT xsuaa binding "my-xsuaa"` {
		t.Fatalf("xsuaa from the binding folder: %+v (%s)", c.XSUAA, c.Origin("xsuaa"))
	}
}

func TestIdentityBinding(t *testing.T) {
	vcap := `{"identity":[{"name":"my-ias","label":"identity","credentials":{"url":"https://tenant.accounts.ondemand.com",
		"clientid":"ias-client","clientsecret":"ias-secret","domains":["accounts.ondemand.com"],"app_tid":"t1"}}]}`
	c, err := Load(nil, env("VCAP_SERVICES", vcap), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	if c.OIDC.Issuer != "https://tenant.accounts.ondemand.com" || c.OIDC.ClientID != "ias-client" || string(c.OIDC.ClientSecret) != "ias-secret" {
		t.Fatalf("oidc from the identity binding: %+v", c.OIDC)
	}
	if o := c.Origin("oidc-issuer"); o != `VCAP_SERVICES identity binding "my-ias"` {
		t.Fatalf("origin %q", o)
	}
	c, err = Load(nil, env("VCAP_SERVICES", vcap, "EXTAUTHZ_OIDC_CLIENT_ID", "override"), &bytes.Buffer{})
	if err != nil || c.OIDC.ClientID != "override" {
		t.Fatalf("EXTAUTHZ_OIDC_CLIENT_ID must override the binding: %v %+v", err, c)
	}
	_, err = Load(nil, env("VCAP_SERVICES", vcap, "IAS_SERVICE_NAME", "other"), &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), `IAS_SERVICE_NAME: no such service binding named "other" (bound: my-ias)`) {
		t.Fatalf("err = %v", err)
	}
	_, err = Load(nil, env("VCAP_SERVICES", `{"identity":[{"name":"x509-ias","credentials":{"url":"https://t.example","clientid":"c","credential-type":"X509_GENERATED"}}]}`), &bytes.Buffer{})
	if err == nil || !strings.Contains(err.Error(), `VCAP_SERVICES identity binding "x509-ias": credentials.credential-type: X509_GENERATED (mutual TLS) is not supported yet`) {
		t.Fatalf("err = %v", err)
	}
}

func TestPrecedence(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "extauthz.yaml")
	os.WriteFile(file, []byte("grpc-addr: 127.0.0.1:1\nadmin-addr: 127.0.0.1:2\nsession-timeout: 20m\noidc-scopes: [openid, email]\n"), 0o600)
	secretFile := filepath.Join(dir, "secrets")
	os.WriteFile(secretFile, []byte(secret64+"\n"+strings.Repeat("old-0123456789ab", 4)+"\n"), 0o600)
	c, err := Load([]string{"--config", file, "--grpc-addr", "127.0.0.1:3"},
		env("EXTAUTHZ_ADMIN_ADDR", "127.0.0.1:4", "EXTAUTHZ_SESSION_SECRETS_FILE", secretFile), &bytes.Buffer{})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ got, want, origin, wantOrigin string }{
		{c.GRPCAddr, "127.0.0.1:3", c.Origin("grpc-addr"), "--grpc-addr"},
		{c.AdminAddr, "127.0.0.1:4", c.Origin("admin-addr"), "EXTAUTHZ_ADMIN_ADDR"},
		{c.SessionTimeout.String(), "20m0s", c.Origin("session-timeout"), file + ": session-timeout"},
		{strings.Join(c.OIDC.Scopes, " "), "openid email", c.Origin("oidc-scopes"), file + ": oidc-scopes"},
		{fmt.Sprint(len(c.SessionSecrets)), "2", c.Origin("session-secrets"), "EXTAUTHZ_SESSION_SECRETS_FILE"},
	} {
		if tc.got != tc.want || tc.origin != tc.wantOrigin {
			t.Errorf("got %q from %q, want %q from %q", tc.got, tc.origin, tc.want, tc.wantOrigin)
		}
	}
}

func TestRedisURL(t *testing.T) {
	for _, tc := range []struct {
		url  string
		want Redis
	}{
		{"redis://127.0.0.1:6379", Redis{Addrs: []string{"127.0.0.1:6379"}}},
		{"rediss://u:p@r.example/2", Redis{Addrs: []string{"r.example:6379"}, Username: "u", Password: "p", TLS: true, DB: 2}},
		{"redis://a:1,b:2?cluster=true", Redis{Addrs: []string{"a:1", "b:2"}, Cluster: true}},
		{"redis://:pw@s1:26379,s2:26379?master=mymaster", Redis{Addrs: []string{"s1:26379", "s2:26379"}, Password: "pw", MasterName: "mymaster"}},
	} {
		c, err := Load(nil, env("EXTAUTHZ_REDIS_URL", tc.url, "EXTAUTHZ_SESSION_SECRETS", secret64), &bytes.Buffer{})
		if err != nil {
			t.Errorf("%s: %v", tc.url, err)
			continue
		}
		r := *c.Redis
		got := Redis{Addrs: r.Addrs, Username: r.Username, Password: r.Password, TLS: r.TLS, DB: r.DB, Cluster: r.Cluster, MasterName: r.MasterName}
		if fmt.Sprintf("%#v", got) != fmt.Sprintf("%#v", tc.want) {
			t.Errorf("%s:\n got %#v\nwant %#v", tc.url, got, tc.want)
		}
	}
}

func TestAllowedHostsSources(t *testing.T) {
	vcapApp := `{"application_uris":["my-app.cfapps.eu10.hana.ondemand.com","My-App.example.com/api"],"name":"my-app"}`
	c, err := Load(nil, env("VCAP_APPLICATION", vcapApp), &bytes.Buffer{})
	if err != nil || strings.Join(c.AllowedHosts, ",") != "my-app.cfapps.eu10.hana.ondemand.com,my-app.example.com" || c.Origin("allowed-hosts") != "VCAP_APPLICATION.application_uris" {
		t.Fatalf("from VCAP_APPLICATION: %v %v", c, err)
	}
	c, err = Load(nil, env("VCAP_APPLICATION", vcapApp, "EXTAUTHZ_ALLOWED_HOSTS", "a.example.com *.b.example.com"), &bytes.Buffer{})
	if err != nil || strings.Join(c.AllowedHosts, ",") != "a.example.com,*.b.example.com" {
		t.Fatalf("EXTAUTHZ_ALLOWED_HOSTS over VCAP_APPLICATION: %v %v", c, err)
	}
	// Multitenant on Cloud Foundry: the pattern decides; the routes are not an error.
	if _, err := Load(nil, env("VCAP_APPLICATION", vcapApp, "TENANT_HOST_PATTERN", `^(.*)\.example\.com$`), &bytes.Buffer{}); err != nil {
		t.Fatal(err)
	}
}

func TestInvalid(t *testing.T) {
	dir := t.TempDir()
	badYAML := filepath.Join(dir, "bad.yaml")
	os.WriteFile(badYAML, []byte("grpc-adr: :1\nsession-timeout: soon\n"), 0o600)
	tests := []struct {
		name string
		args []string
		env  Getenv
		want []string
	}{
		{"flag value", []string{"--grpc-addr", "nonsense"}, env(),
			[]string{`--grpc-addr: "nonsense" is not host:port`}},
		{"every problem at once", nil, env("SESSION_TIMEOUT", "abc", "SECURE_SESSION_COOKIE", "maybe", "EXTAUTHZ_STORE_TIMEOUT", "5"),
			[]string{`SESSION_TIMEOUT: "abc" is neither minutes nor a duration such as 30m`,
				`SECURE_SESSION_COOKIE: "maybe" is not one of auto, true, false`,
				`EXTAUTHZ_STORE_TIMEOUT: "5" is not a duration such as 250ms or 15s`}},
		{"yaml file", []string{"--config", badYAML}, env(),
			[]string{badYAML + ": grpc-adr: unknown setting",
				badYAML + `: session-timeout: "soon" is neither minutes nor a duration such as 30m`}},
		{"missing file", []string{"--config", filepath.Join(dir, "none.yaml")}, env(),
			[]string{"--config: open " + filepath.Join(dir, "none.yaml") + ": no such file or directory"}},
		{"EXT_SESSION_MGT short secret", nil, env("EXT_SESSION_MGT", `{"instanceName":"my-redis","storageType":"redis","sessionSecret":"short"}`, "VCAP_SERVICES", vcapDocs),
			[]string{"EXT_SESSION_MGT.sessionSecret: must be at least 64 characters"}},
		{"EXT_SESSION_MGT unknown key", nil, env("EXT_SESSION_MGT", `{"instanceName":"x","storagetype":"redis"}`),
			[]string{`EXT_SESSION_MGT: unknown field "storagetype" (known: instanceName, storageType, sessionSecret, defaultRetryTimeout, backOffMultiplier, skipCertHostnameValidation, rejectUnauthorized)`}},
		{"EXT_SESSION_MGT required fields", nil, env("EXT_SESSION_MGT", `{}`),
			[]string{"EXT_SESSION_MGT.instanceName: required", "EXT_SESSION_MGT.storageType: required", "EXT_SESSION_MGT.sessionSecret: required"}},
		{"EXT_SESSION_MGT wrong type", nil, env("EXT_SESSION_MGT", `{"instanceName":"x","storageType":"redis","sessionSecret":"`+secret64+`","backOffMultiplier":"50"}`),
			[]string{"EXT_SESSION_MGT.backOffMultiplier: must be a number, not a string"}},
		{"EXT_SESSION_MGT storage type", nil, env("EXT_SESSION_MGT", mgtJSON("")[:len(mgtJSON(""))-1]+`,"storageType":"memcached"}`, "VCAP_SERVICES", vcapDocs),
			[]string{`EXT_SESSION_MGT.storageType: "memcached" is not supported (only redis)`}},
		{"EXT_SESSION_MGT not JSON", nil, env("EXT_SESSION_MGT", `{instanceName: x}`),
			[]string{"EXT_SESSION_MGT: not valid JSON"}},
		{"instance not bound", nil, env("EXT_SESSION_MGT", mgtJSON(""), "VCAP_SERVICES", `{"redis-cache":[{"name":"other","credentials":{"hostname":"h"}}]}`),
			[]string{`EXT_SESSION_MGT.instanceName: no such service binding named "my-redis" (bound: other)`}},
		{"no VCAP_SERVICES", nil, env("EXT_SESSION_MGT", mgtJSON("")),
			[]string{`EXT_SESSION_MGT.instanceName: "my-redis" names a binding, but neither VCAP_SERVICES nor SERVICE_BINDING_ROOT is set`}},
		{"binding folder missing", nil, env("EXT_SESSION_MGT", mgtJSON(""), "SERVICE_BINDING_ROOT", "/nonexistent/bindings"),
			[]string{"SERVICE_BINDING_ROOT: open /nonexistent/bindings: no such file or directory"}},
		{"bad binding credentials", nil, env("EXT_SESSION_MGT", mgtJSON(""), "VCAP_SERVICES", `{"redis-cache":[{"name":"my-redis","credentials":{"hostname":"h","port":"x","tls":"perhaps"}}]}`),
			[]string{`VCAP_SERVICES my-redis: credentials.port: "x" is not a port`, `VCAP_SERVICES my-redis: credentials.tls: "perhaps" is not true or false`}},
		{"redis without secret", nil, env("EXTAUTHZ_REDIS_URL", "redis://127.0.0.1:6379"),
			[]string{"session-secrets: a session secret is required with a shared store (EXT_SESSION_MGT.sessionSecret or EXTAUTHZ_SESSION_SECRETS): without one each replica makes its own and cookies break"}},
		{"redis url scheme", nil, env("EXTAUTHZ_REDIS_URL", "http://h", "EXTAUTHZ_SESSION_SECRETS", secret64),
			[]string{`EXTAUTHZ_REDIS_URL: scheme "http": must be redis or rediss`}},
		{"second secret short", nil, env("EXTAUTHZ_SESSION_SECRETS", secret64+",short"),
			[]string{"EXTAUTHZ_SESSION_SECRETS: secret 2: must be at least 64 characters"}},
		{"SameSite None without Secure", nil, env("COOKIES", `{"SameSite":"None"}`, "SECURE_SESSION_COOKIE", "false"),
			[]string{"COOKIES: SameSite=None needs Secure cookies, but SECURE_SESSION_COOKIE is false"}},
		{"COOKIES unknown field", nil, env("COOKIES", `{"Domain":"x"}`),
			[]string{`COOKIES: must be JSON such as {"SameSite":"None","Partitioned":true}: json: unknown field "Domain"`}},
		{"cookie name", nil, env("SESSION_COOKIE_NAME", "a b"), []string{`SESSION_COOKIE_NAME: "a b" is not a valid cookie name`}},
		{"__Host- cookie without Secure", nil, env("SESSION_COOKIE_NAME", "__Host-sid", "SECURE_SESSION_COOKIE", "false"),
			[]string{`SESSION_COOKIE_NAME: "__Host-sid": browsers keep a cookie whose name starts with __Host- or __Secure- only when it is Secure, but SECURE_SESSION_COOKIE is false`}},
		{"plain http issuer", nil, env("EXTAUTHZ_OIDC_ISSUER", "http://idp.example", "EXTAUTHZ_OIDC_CLIENT_ID", "c"),
			[]string{`EXTAUTHZ_OIDC_ISSUER: "http://idp.example": plain http is accepted only on loopback addresses`}},
		{"issuer without client", []string{"--oidc-issuer", "https://idp.example"}, env(),
			[]string{"oidc-client-id: required with an issuer (EXTAUTHZ_OIDC_CLIENT_ID)"}},
		{"paths", nil, env("EXTAUTHZ_LOGIN_CALLBACK_PATH", "login"),
			[]string{`EXTAUTHZ_LOGIN_CALLBACK_PATH: "login" must be an absolute path such as /logout`}},
		{"same paths", nil, env("EXTAUTHZ_LOGOUT_PATH", "/login/callback"),
			[]string{`EXTAUTHZ_LOGOUT_PATH: "/login/callback" is also the login callback path`}},
		{"unexpected argument", []string{"serve"}, env(), []string{`arguments: unexpected ["serve"] (settings are flags: --name=value)`}},
		{"tenant pattern without group", nil, env("TENANT_HOST_PATTERN", `^.*\.app\.example\.com$`),
			[]string{`TENANT_HOST_PATTERN: needs a capture group for the tenant, e.g. ^(.*)\.app\.example\.com$`}},
		{"tenant pattern broken", nil, env("TENANT_HOST_PATTERN", `^(.*\.app$`),
			[]string{"TENANT_HOST_PATTERN: not a regular expression: error parsing regexp: missing closing ): `^(.*\\.app$`"}},
		{"issuer template without pattern", nil, env("EXTAUTHZ_OIDC_ISSUER", "https://{tenant}.idp.example", "EXTAUTHZ_OIDC_CLIENT_ID", "c"),
			[]string{"EXTAUTHZ_OIDC_ISSUER: has {tenant} but TENANT_HOST_PATTERN is not set"}},
		{"VCAP_SERVICES malformed, nothing asks for a binding yet", nil, env("VCAP_SERVICES", "{not json"),
			[]string{"VCAP_SERVICES: not a JSON object of service lists: invalid character 'n' looking for beginning of object key string"}},
		{"IAS_SERVICE_NAME names no binding", nil, env("VCAP_SERVICES", `{"identity":[{"name":"ias","credentials":{}}]}`, "IAS_SERVICE_NAME", "other"),
			[]string{`IAS_SERVICE_NAME: no such service binding named "other" (bound: ias)`}},
		{"cache bounds", nil, env("EXTAUTHZ_SESSION_CACHE_STALENESS", "24h", "EXTAUTHZ_SESSION_TOUCH_INTERVAL", "20m"),
			[]string{"EXTAUTHZ_SESSION_CACHE_STALENESS: 24h0m0s: at most 1m (it bounds how long a logged-out session may be served while the invalidation channel is down)",
				"EXTAUTHZ_SESSION_TOUCH_INTERVAL: 20m0s is longer than the idle timeout 15m0s (a session would outlive its idle timeout by more than the timeout itself)"}},
		{"example secret", nil, env("EXTAUTHZ_SESSION_SECRETS", "CHANGE-ME-to-64-random-characters-CHANGE-ME-to-64-random-characters"),
			[]string{"EXTAUTHZ_SESSION_SECRETS: secret 1 is a placeholder from extauthz's own examples, which anyone can read: generate one (openssl rand -hex 32)"}},
		{"allowed host with port", nil, env("EXTAUTHZ_ALLOWED_HOSTS", "app.example.com:443"),
			[]string{`EXTAUTHZ_ALLOWED_HOSTS: "app.example.com:443" is not a host name (a DNS name, an IP address or *.<domain>, without port or path)`}},
		{"allowed hosts with a pattern", nil, env("EXTAUTHZ_ALLOWED_HOSTS", "app.example.com", "TENANT_HOST_PATTERN", `^(.*)\.app\.example\.com$`),
			[]string{"EXTAUTHZ_ALLOWED_HOSTS: set together with TENANT_HOST_PATTERN, which decides the hosts in multitenant mode"}},
		{"VCAP_APPLICATION malformed", nil, env("VCAP_APPLICATION", `{"application_uris":"x"}`),
			[]string{"VCAP_APPLICATION: not a JSON object with application_uris: json: cannot unmarshal string into Go struct field .application_uris of type []string"}},
		{"xsuaa binding incomplete", nil, env("VCAP_SERVICES", `{"xsuaa":[{"name":"uaa","tags":["xsuaa"],"credentials":{"clientid":"c","url":"https://p.a","uaadomain":"a"}}]}`),
			[]string{`VCAP_SERVICES xsuaa binding "uaa": credentials.clientsecret: missing`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Load(tt.args, tt.env, &bytes.Buffer{})
			var p Problems
			if !errors.As(err, &p) {
				t.Fatalf("err = %v, want Problems", err)
			}
			if strings.Join(p, "\n") != strings.Join(tt.want, "\n") {
				t.Fatalf("problems:\n%s\nwant:\n%s", strings.Join(p, "\n"), strings.Join(tt.want, "\n"))
			}
		})
	}
}

func TestErrorsNeverShowSecrets(t *testing.T) {
	_, err := Load(nil, env("EXTAUTHZ_REDIS_URL", "redis://user:hunter2-password@%zz", "EXT_SESSION_MGT", `{"sessionSecret":"hunter2-password",`), &bytes.Buffer{})
	if err == nil || strings.Contains(err.Error(), "hunter2") {
		t.Fatalf("err = %v", err)
	}
	if s := fmt.Sprintf("%v %+v %#v %s", Secret("hunter2"), Secret("hunter2"), Secret("hunter2"), Secret("hunter2")); strings.Contains(s, "hunter2") {
		t.Fatalf("Secret printed: %s", s)
	}
}

func TestHelpListsEverySetting(t *testing.T) {
	var out bytes.Buffer
	if _, err := Load([]string{"--help"}, env(), &out); !errors.Is(err, ErrHelp) {
		t.Fatalf("err = %v, want ErrHelp", err)
	}
	for _, s := range settings {
		for _, want := range []string{"--" + s.name, "env " + s.env} {
			if !strings.Contains(out.String(), want) {
				t.Errorf("--help lacks %q", want)
			}
		}
	}
	if !strings.Contains(out.String(), `default ":9001"`) || !strings.Contains(out.String(), "EXT_SESSION_MGT") {
		t.Errorf("--help lacks defaults or approuter variables:\n%s", out.String())
	}
}

// TestREADMEDocumentsEverySetting keeps the README's reference true.
func TestREADMEDocumentsEverySetting(t *testing.T) {
	readme, err := os.ReadFile("../../README.md")
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range settings {
		if !strings.Contains(string(readme), "| `--"+s.name+"` | `"+s.env+"`") {
			t.Errorf("README.md's setting table lacks --%s / %s", s.name, s.env)
		}
	}
}

// TestNginxAddr: the nginx listener is off unless asked for.
func TestNginxAddr(t *testing.T) {
	c, err := Load(nil, env(), &bytes.Buffer{})
	if err != nil || c.NginxAddr != "" {
		t.Fatalf("default nginx-addr: %q %v, want off", c.NginxAddr, err)
	}
	if c, err = Load(nil, env("EXTAUTHZ_NGINX_ADDR", "127.0.0.1:9004"), &bytes.Buffer{}); err != nil || c.NginxAddr != "127.0.0.1:9004" {
		t.Fatalf("EXTAUTHZ_NGINX_ADDR: %+v %v", c, err)
	}
	if _, err = Load([]string{"--nginx-addr", "9004"}, env(), &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), `--nginx-addr: "9004" is not host:port`) {
		t.Fatalf("bad --nginx-addr: %v", err)
	}
}

// TestDrainDelay: 5s unless set; 0 turns it off; negative is refused.
func TestDrainDelay(t *testing.T) {
	for _, tc := range []struct {
		env  Getenv
		want time.Duration
		err  string
	}{
		{env(), 5 * time.Second, ""},
		{env("EXTAUTHZ_DRAIN_DELAY", "0"), 0, ""},
		{env("EXTAUTHZ_DRAIN_DELAY", "12s"), 12 * time.Second, ""},
		{env("EXTAUTHZ_DRAIN_DELAY", "-1s"), 0, `EXTAUTHZ_DRAIN_DELAY: "-1s": must not be negative`},
	} {
		c, err := Load(nil, tc.env, &bytes.Buffer{})
		switch {
		case tc.err != "":
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("err = %v, want %q", err, tc.err)
			}
		case err != nil:
			t.Errorf("err = %v, want %v", err, tc.want)
		case c.DrainDelay != tc.want:
			t.Errorf("drain delay %v, want %v", c.DrainDelay, tc.want)
		}
	}
}

func TestCheckIssuer(t *testing.T) {
	for issuer, ok := range map[string]bool{
		"https://idp.example": true, "http://127.0.0.1:4444": true, "http://localhost:4444": true, "http://[::1]:1": true,
		"http://idp.example": false, "ftp://idp.example": false, "idp.example": false, "": false, "http://10.0.0.1": false,
	} {
		if err := checkIssuer(issuer); (err == nil) != ok {
			t.Errorf("checkIssuer(%q) = %v, want ok=%v", issuer, err, ok)
		}
	}
}

func TestWeakSecretsRefused(t *testing.T) {
	for _, s := range []string{strings.Repeat("k", 64), strings.Repeat("ab", 40), "demo-session-secret-" + strings.Repeat("0123456789", 5)} {
		if _, err := Load(nil, env("EXTAUTHZ_SESSION_SECRETS", s), &bytes.Buffer{}); err == nil {
			t.Errorf("%q accepted", s)
		}
	}
}

func TestShortIdleTimeoutShortensTheDefaultTouch(t *testing.T) {
	c, err := Load(nil, env("SESSION_TIMEOUT", "10s"), &bytes.Buffer{})
	if err != nil || c.SessionTouchInterval != 5*time.Second {
		t.Fatalf("%v %v", c, err)
	}
}
