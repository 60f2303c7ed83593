package config

import (
	"fmt"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/extauthz/extauthz/pkg/session"
)

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
		} else if n := distinct(string(s)); n < 8 && len(s) >= 64 {
			bad("session-secrets", "secret %d has only %d distinct characters: generate one (openssl rand -hex 32)", i+1, n)
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
	if c.SameSite == http.SameSiteNoneMode && c.SecureCookie == session.SecureNever {
		bad("cookies", "SameSite=None needs Secure cookies, but SECURE_SESSION_COOKIE is false")
	}
	if c.SecureCookie == session.SecureNever && (hasPrefixFold(c.CookieName, "__Host-") || hasPrefixFold(c.CookieName, "__Secure-")) {
		bad("session-cookie-name", "%q: browsers keep a cookie whose name starts with __Host- or __Secure- only when it is Secure, but SECURE_SESSION_COOKIE is false", c.CookieName)
	}
	if c.SessionTimeout <= 0 {
		bad("session-timeout", "must be positive")
	}
	if c.SessionCacheStaleness > time.Minute {
		bad("session-cache-staleness", "%v: at most 1m (it bounds how long a logged-out session may be served while the invalidation channel is down)", c.SessionCacheStaleness)
	}
	if c.SessionTouchInterval > c.SessionTimeout {
		bad("session-touch-interval", "%v is longer than the idle timeout %v (a session would outlive its idle timeout by more than the timeout itself)", c.SessionTouchInterval, c.SessionTimeout)
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
	if c.BackchannelLogoutPath == c.LogoutPath || c.BackchannelLogoutPath == c.CallbackPath {
		bad("backchannel-logout-path", "%q is also the login callback or the logout path", c.BackchannelLogoutPath)
	}
	if n := len(c.AdminToken); n > 0 && n < 32 {
		bad("admin-token", "must be at least 32 characters")
	}
	if c.OIDC.Issuer != "" {
		if err := checkIssuer(strings.ReplaceAll(c.OIDC.Issuer, "{tenant}", "tenant")); err != nil {
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

// distinct counts the different bytes of s: a secret of one repeated
// character has the length of a good one and none of its strength.
func distinct(s string) int {
	var seen [256]bool
	n := 0
	for i := 0; i < len(s); i++ {
		if !seen[s[i]] {
			seen[s[i]], n = true, n+1
		}
	}
	return n
}

// examplePlaceholder says whether a secret is one that extauthz's own
// examples and documentation show: published, so never secret.
func examplePlaceholder(s string) bool {
	l := strings.ToLower(s)
	return strings.Contains(l, "change-me") || strings.Contains(l, "changeme") || strings.Contains(l, "quickstart-only-secret") ||
		strings.Contains(l, "demo-session-secret") ||
		strings.Contains(l, "64-random-characters") || strings.Contains(l, "<64+")
}

// checkIssuer accepts https issuers, and plain-http ones only on loopback
// addresses (development against a local provider).
func checkIssuer(issuer string) error {
	u, err := url.Parse(issuer)
	if err != nil || u.Host == "" {
		return fmt.Errorf("%q is not an absolute URL", issuer)
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		h := u.Hostname()
		if ip := net.ParseIP(h); (ip != nil && ip.IsLoopback()) || h == "localhost" {
			return nil
		}
		return fmt.Errorf("%q: plain http is accepted only on loopback addresses", issuer)
	default:
		return fmt.Errorf("%q: scheme must be https", issuer)
	}
}

// hasPrefixFold is strings.HasPrefix without regard to ASCII case (as
// browsers match cookie name prefixes).
func hasPrefixFold(s, prefix string) bool {
	return len(s) >= len(prefix) && strings.EqualFold(s[:len(prefix)], prefix)
}
