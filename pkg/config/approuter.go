package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/extauthz/extauthz/pkg/binding"
	"github.com/extauthz/extauthz/pkg/tenant"
)

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
