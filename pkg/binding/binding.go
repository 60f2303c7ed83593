// Package binding reads service bindings: VCAP_SERVICES on Cloud Foundry.
// It turns the credentials of the services extauthz uses into typed values.
package binding

import (
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sort"
	"strings"
)

// Binding is one bound service instance.
type Binding struct {
	// Name is what approuter's EXT_SESSION_MGT.instanceName matches: the
	// binding name when the binding has one, else the instance name.
	Name         string
	BindingName  string
	InstanceName string
	Label        string
	Plan         string
	Tags         []string
	Credentials  map[string]any
}

// ErrNotFound is returned when no binding matches.
var ErrNotFound = errors.New("no such service binding")

// ParseVCAP parses the VCAP_SERVICES JSON document.
func ParseVCAP(doc string) ([]Binding, error) {
	var raw map[string][]struct {
		Name         string         `json:"name"`
		BindingName  *string        `json:"binding_name"`
		InstanceName string         `json:"instance_name"`
		Label        string         `json:"label"`
		Plan         string         `json:"plan"`
		Tags         []string       `json:"tags"`
		Credentials  map[string]any `json:"credentials"`
	}
	if err := json.Unmarshal([]byte(doc), &raw); err != nil {
		return nil, fmt.Errorf("not a JSON object of service lists: %w", err)
	}
	labels := make([]string, 0, len(raw))
	for l := range raw {
		labels = append(labels, l)
	}
	sort.Strings(labels) // deterministic order
	var out []Binding
	for _, l := range labels {
		for i, e := range raw[l] {
			b := Binding{
				Name: e.Name, InstanceName: e.InstanceName, Label: e.Label,
				Plan: e.Plan, Tags: e.Tags, Credentials: e.Credentials,
			}
			if e.BindingName != nil {
				b.BindingName = *e.BindingName
			}
			if b.Label == "" {
				b.Label = l
			}
			if b.Name == "" {
				b.Name = firstNonEmpty(b.BindingName, b.InstanceName)
			}
			if b.Name == "" {
				return nil, fmt.Errorf("%s[%d]: entry has no name", l, i)
			}
			if b.Credentials == nil {
				b.Credentials = map[string]any{}
			}
			out = append(out, b)
		}
	}
	return out, nil
}

// ByName returns the binding whose name, binding name or instance name is name.
func ByName(bs []Binding, name string) (Binding, error) {
	for _, b := range bs {
		if b.Name == name || b.BindingName == name || b.InstanceName == name {
			return b, nil
		}
	}
	names := make([]string, 0, len(bs))
	for _, b := range bs {
		names = append(names, b.Name)
	}
	return Binding{}, fmt.Errorf("%w named %q (bound: %s)", ErrNotFound, name, strings.Join(names, ", "))
}

// HasTag says whether the binding carries tag.
func (b Binding) HasTag(tag string) bool { return slices.Contains(b.Tags, tag) }

func firstNonEmpty(s ...string) string {
	for _, v := range s {
		if v != "" {
			return v
		}
	}
	return ""
}

// Identity is the typed credentials of an SAP Cloud Identity Services (IAS)
// binding, label "identity".
type Identity struct {
	URL          string // the issuer; discovery at <url>/.well-known/openid-configuration
	ClientID     string
	ClientSecret string
	Domain       string // e.g. accounts.ondemand.com: a tenant's issuer is https://<tenant>.<domain>
}

// IdentityCredentials reads an identity (IAS) binding.
func IdentityCredentials(b Binding) (Identity, error) {
	c := b.Credentials
	var id Identity
	var errs []error
	str := func(field string, dst *string) {
		v, ok := c[field].(string)
		if !ok || v == "" {
			errs = append(errs, fmt.Errorf("credentials.%s: missing", field))
		}
		*dst = v
	}
	str("url", &id.URL)
	str("clientid", &id.ClientID)
	id.Domain, _ = c["domain"].(string)
	if ds, ok := c["domains"].([]any); ok && id.Domain == "" && len(ds) > 0 {
		id.Domain, _ = ds[0].(string)
	}
	if ct, _ := c["credential-type"].(string); ct == "X509_GENERATED" || ct == "X509_PROVIDED" || ct == "X509_ATTESTED" || ct == "x509" {
		errs = append(errs, fmt.Errorf("credentials.credential-type: %s (mutual TLS) is not supported yet; bind with credential-type binding-secret", ct))
	} else {
		str("clientsecret", &id.ClientSecret)
	}
	return id, errors.Join(errs...)
}

// ByLabel returns the first binding with the label.
func ByLabel(bs []Binding, label string) (Binding, bool) {
	for _, b := range bs {
		if b.Label == label {
			return b, true
		}
	}
	return Binding{}, false
}

// XSUAA is the typed credentials of an XSUAA binding (tag "xsuaa").
type XSUAA struct {
	ClientID       string
	ClientSecret   string // empty with credential-type x509
	URL            string // the provider subaccount's server
	UAADomain      string
	XSAppName      string
	TenantMode     string // "shared" for multitenant apps
	IdentityZone   string
	CredentialType string // binding-secret, instance-secret or x509
	Certificate    string // PEM, with x509
	Key            string // PEM, with x509
	CertURL        string // the server for mutual TLS, with x509
}

// XSUAACredentials reads an XSUAA binding.
func XSUAACredentials(b Binding) (XSUAA, error) {
	c := b.Credentials
	get := func(k string) string { v, _ := c[k].(string); return v }
	x := XSUAA{
		ClientID: get("clientid"), ClientSecret: get("clientsecret"), URL: get("url"), UAADomain: get("uaadomain"),
		XSAppName: get("xsappname"), TenantMode: get("tenantmode"), IdentityZone: get("identityzone"),
		CredentialType: get("credential-type"), Certificate: get("certificate"), Key: get("key"), CertURL: get("certurl"),
	}
	var errs []error
	for field, v := range map[string]string{"clientid": x.ClientID, "url": x.URL, "uaadomain": x.UAADomain} {
		if v == "" {
			errs = append(errs, fmt.Errorf("credentials.%s: missing", field))
		}
	}
	if x.CredentialType == "x509" {
		if x.Certificate == "" || x.Key == "" || x.CertURL == "" {
			errs = append(errs, errors.New("credentials: credential-type x509 needs certificate, key and certurl"))
		}
	} else if x.ClientSecret == "" {
		errs = append(errs, errors.New("credentials.clientsecret: missing"))
	}
	sort.Slice(errs, func(i, j int) bool { return errs[i].Error() < errs[j].Error() })
	return x, errors.Join(errs...)
}

// ByTag returns the first binding carrying the tag.
func ByTag(bs []Binding, tag string) (Binding, bool) {
	for _, b := range bs {
		if b.HasTag(tag) {
			return b, true
		}
	}
	return Binding{}, false
}
