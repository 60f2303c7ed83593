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

// serviceBindings are the service bindings, read once: VCAP_SERVICES on
// Cloud Foundry, else the binding folders under SERVICE_BINDING_ROOT on
// Kubernetes (Kyma). where names the source, "" when there is none.
type serviceBindings struct {
	list  []binding.Binding
	where string
}

// loadApprouterEnv reads approuter's environment: the identity (IAS) and
// xsuaa bindings, VCAP_APPLICATION, and EXT_SESSION_MGT with its redis-cache
// binding. A malformed VCAP_SERVICES or binding folder is an error, whether
// or not anything asked for a binding yet: extauthz would otherwise start
// and log nobody in.
func (c *Config) loadApprouterEnv(getenv Getenv) Problems {
	var probs Problems
	bs, err := readBindings(getenv)
	if err != nil {
		probs = append(probs, fmt.Sprintf("%s: %v", bs.where, err))
		bs.list = nil
	}
	probs = append(probs, c.identityBinding(getenv, bs)...)
	probs = append(probs, c.xsuaaBinding(getenv, bs)...)
	probs = append(probs, c.vcapApplication(getenv)...)
	raw, ok := lookup(getenv, "EXT_SESSION_MGT")
	if !ok {
		return probs
	}
	mgt := c.extSessionMgt(raw, bs, err != nil)
	if (len(mgt) > 0 || err != nil) && c.Redis != nil && len(c.Redis.Addrs) == 0 {
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

func readBindings(getenv Getenv) (serviceBindings, error) {
	if vcap, ok := lookup(getenv, "VCAP_SERVICES"); ok {
		bs, err := binding.ParseVCAP(vcap)
		return serviceBindings{bs, "VCAP_SERVICES"}, err
	}
	if root, ok := lookup(getenv, "SERVICE_BINDING_ROOT"); ok {
		bs, err := binding.ParseDir(root)
		return serviceBindings{bs, "SERVICE_BINDING_ROOT"}, err
	}
	return serviceBindings{}, nil
}

// pick finds the binding of a kind ("xsuaa", "identity"): the one named by
// the variable nameEnv (approuter's UAA_SERVICE_NAME, IAS_SERVICE_NAME),
// else the first tagged, else the first labelled with the kind. ok is false
// when there is none; a name that matches no binding is a problem.
func (bs serviceBindings) pick(getenv Getenv, nameEnv, kind string) (b binding.Binding, ok bool, probs Problems) {
	if name, named := lookup(getenv, nameEnv); named {
		b, err := binding.ByName(bs.list, name)
		if err != nil {
			return b, false, Problems{fmt.Sprintf("%s: %v", nameEnv, err)}
		}
		return b, true, nil
	}
	if b, ok = binding.ByTag(bs.list, kind); ok {
		return b, true, nil
	}
	b, ok = binding.ByLabel(bs.list, kind)
	return b, ok, nil
}

// read picks the binding of a kind and reads its credentials with creds;
// every problem names the binding. src is where the credentials came from.
func read[T any](getenv Getenv, bs serviceBindings, nameEnv, kind string, creds func(binding.Binding) (T, error)) (v T, src string, ok bool, probs Problems) {
	b, ok, probs := bs.pick(getenv, nameEnv, kind)
	if !ok {
		return v, "", false, probs
	}
	src = bs.where + " " + kind + " binding " + strconv.Quote(b.Name)
	v, err := creds(b)
	if err != nil {
		for _, line := range strings.Split(err.Error(), "\n") {
			probs = append(probs, src+": "+line)
		}
		return v, src, false, probs
	}
	return v, src, true, nil
}

// xsuaaBinding takes XSUAA from the binding named by UAA_SERVICE_NAME, else
// the first tagged or labelled "xsuaa". It is the identity provider unless
// EXTAUTHZ_OIDC_ISSUER names another.
func (c *Config) xsuaaBinding(getenv Getenv, bs serviceBindings) Problems {
	x, src, ok, probs := read(getenv, bs, "UAA_SERVICE_NAME", "xsuaa", binding.XSUAACredentials)
	if ok {
		c.XSUAA = &x
		c.origin["xsuaa"] = src
	}
	return probs
}

// identityBinding takes the identity provider from an IAS binding: the one
// named by IAS_SERVICE_NAME, else the first tagged or labelled "identity".
// EXTAUTHZ_OIDC_* variables override it.
func (c *Config) identityBinding(getenv Getenv, bs serviceBindings) Problems {
	id, src, ok, probs := read(getenv, bs, "IAS_SERVICE_NAME", "identity", binding.IdentityCredentials)
	if ok {
		c.OIDC.Issuer, c.OIDC.ClientID, c.OIDC.ClientSecret, c.OIDC.IASDomain = id.URL, id.ClientID, Secret(id.ClientSecret), id.Domain
		for _, name := range []string{"oidc-issuer", "oidc-client-id", "oidc-client-secret"} {
			c.origin[name] = src
		}
	}
	return probs
}

// extSessionMgt reads EXT_SESSION_MGT and the redis-cache binding it names;
// bindingsBroken: the bindings did not parse (reported already).
func (c *Config) extSessionMgt(raw string, bs serviceBindings, bindingsBroken bool) Problems {
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
	if name == "" || bindingsBroken {
		return probs
	}
	where := bs.where
	if where == "" {
		return append(probs, fmt.Sprintf("%s.instanceName: %q names a binding, but neither VCAP_SERVICES nor SERVICE_BINDING_ROOT is set", src, name))
	}
	b, err := binding.ByName(bs.list, name)
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
