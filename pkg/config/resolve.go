package config

import (
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/extauthz/extauthz/pkg/binding"
	"github.com/extauthz/extauthz/pkg/policy"
)

// IDPKind says which identity provider extauthz logs users in with.
type IDPKind int

const (
	// NoIDP: nobody can log in; requests without a session get 401.
	NoIDP IDPKind = iota
	// OIDCProvider: an OpenID Connect provider found by discovery at Issuer.
	OIDCProvider
	// XSUAAProvider: SAP's XSUAA from its binding.
	XSUAAProvider
)

// IdentityProvider is the resolved choice of identity provider: an explicit
// EXTAUTHZ_OIDC_ISSUER, else the xsuaa binding, else the identity (IAS)
// binding.
type IdentityProvider struct {
	Kind IDPKind
	// Issuer (OIDCProvider) may hold "{tenant}": each tenant has its own, e.g.
	// https://{tenant}.accounts.ondemand.com for IAS with TENANT_HOST_PATTERN.
	Issuer string
	// XSUAA holds the binding's credentials (XSUAAProvider).
	XSUAA *binding.XSUAA
	// Source names where the choice came from, for the start-up log.
	Source string
}

// PerTenant says whether each tenant gets its own provider.
func (p IdentityProvider) PerTenant() bool {
	return p.Kind == XSUAAProvider || strings.Contains(p.Issuer, "{tenant}")
}

// resolve derives what depends on more than one setting, after every source
// has been read and before Validate: xs-app.json's settings, then the
// identity provider.
func (c *Config) resolve(apply func(setting, string, string)) Problems {
	probs := c.loadXSApp(apply)
	c.IDP = c.identityProvider()
	if c.SessionTouchInterval > c.SessionTimeout/2 && strings.HasPrefix(c.origin["session-touch-interval"], "default ") {
		// A short idle timeout (tests, kiosks) keeps its meaning with the
		// default touch interval: at most half the timeout.
		c.SessionTouchInterval = max(c.SessionTimeout/2, time.Second)
	}
	return probs
}

// loadXSApp compiles xs-app.json and lets its login, logout and
// sessionTimeout fill the settings no other source set: xs-app.json ranks
// just above the defaults. Its values go through the settings' own parsers.
func (c *Config) loadXSApp(apply func(setting, string, string)) Problems {
	if c.XSApp == "" {
		return nil
	}
	xsappname := ""
	if c.XSUAA != nil {
		xsappname = c.XSUAA.XSAppName
	}
	p, err := policy.LoadFile(c.XSApp, xsappname, c.RequireAuthForUnknownRoutes)
	if err != nil {
		var probs Problems
		for _, line := range strings.Split(err.Error(), "\n") {
			probs = append(probs, c.origin["xs-app"]+": "+line)
		}
		return probs
	}
	c.Policy = p
	for _, f := range []struct{ name, value, field string }{
		{"login-callback-path", p.CallbackEndpoint, "login.callbackEndpoint"},
		{"logout-path", p.LogoutEndpoint, "logout.logoutEndpoint"},
		{"post-logout-redirect", p.LogoutPage, "logout.logoutPage"},
		{"session-timeout", minutes(p.SessionTimeout), "sessionTimeout"},
	} {
		if f.value != "" && strings.HasPrefix(c.origin[f.name], "default ") {
			apply(settingNamed(f.name), f.value, c.XSApp+" "+f.field)
		}
	}
	return nil
}

func minutes(n int) string {
	if n == 0 {
		return ""
	}
	return strconv.Itoa(n)
}

func settingNamed(name string) setting {
	for _, s := range settings {
		if s.name == name {
			return s
		}
	}
	panic("config: no setting " + name)
}

// identityProvider picks the identity provider: EXTAUTHZ_OIDC_ISSUER when
// set explicitly, else the xsuaa binding, else the identity (IAS) binding
// (per tenant, https://<tenant>.<domain>, with TENANT_HOST_PATTERN).
func (c *Config) identityProvider() IdentityProvider {
	o := c.OIDC
	fromBinding := strings.Contains(c.origin["oidc-issuer"], " identity binding ")
	explicit := o.Issuer != "" && !fromBinding
	switch {
	case c.XSUAA != nil && !explicit:
		return IdentityProvider{Kind: XSUAAProvider, XSUAA: c.XSUAA, Source: c.origin["xsuaa"]}
	case o.Issuer == "":
		return IdentityProvider{Kind: NoIDP}
	case fromBinding && o.IASDomain != "" && c.TenantHostPattern != "":
		return IdentityProvider{Kind: OIDCProvider, Issuer: "https://{tenant}." + o.IASDomain, Source: c.origin["oidc-issuer"] + " domain, per tenant"}
	}
	return IdentityProvider{Kind: OIDCProvider, Issuer: o.Issuer, Source: c.origin["oidc-issuer"]}
}

// String describes the choice for logs.
func (p IdentityProvider) String() string {
	switch p.Kind {
	case XSUAAProvider:
		return fmt.Sprintf("xsuaa (%s)", p.Source)
	case OIDCProvider:
		return fmt.Sprintf("oidc %s (%s)", p.Issuer, p.Source)
	}
	return "none"
}
