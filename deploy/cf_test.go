package deploy_test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/extauthz/extauthz/internal/envoyconfig"
	"github.com/extauthz/extauthz/pkg/config"
)

type cfApp struct {
	Name            string                   `json:"name"`
	Path            string                   `json:"path"`
	Buildpacks      []string                 `json:"buildpacks,omitempty"`
	Command         string                   `json:"command,omitempty"`
	Memory          string                   `json:"memory"`
	Instances       int                      `json:"instances,omitempty"`
	Routes          []struct{ Route string } `json:"routes"`
	HealthCheckType string                   `json:"health-check-type,omitempty"`
	Services        []string                 `json:"services,omitempty"`
	Env             map[string]string        `json:"env,omitempty"`
	Sidecars        []struct {
		Name         string   `json:"name"`
		ProcessTypes []string `json:"process_types"`
		Command      string   `json:"command"`
		Memory       string   `json:"memory"`
	} `json:"sidecars,omitempty"`
}

// vcapFor is VCAP_SERVICES binding the named services as a broker would.
func vcapFor(names ...string) string {
	var redis, xsuaa []string
	for _, n := range names {
		if strings.Contains(n, "redis") {
			redis = append(redis, fmt.Sprintf(`{"name":%q,"label":"redis-cache","tags":["cache"],"credentials":{"hostname":"redis.internal","port":6379,"password":"pw","tls":true}}`, n))
		} else {
			xsuaa = append(xsuaa, fmt.Sprintf(`{"name":%q,"label":"xsuaa","tags":["xsuaa"],"credentials":{"clientid":"c","clientsecret":"s","url":"https://p.authentication.example","uaadomain":"authentication.example","xsappname":"my-app"}}`, n))
		}
	}
	return `{"redis-cache":[` + strings.Join(redis, ",") + `],"xsuaa":[` + strings.Join(xsuaa, ",") + `]}`
}

func TestCloudFoundry(t *testing.T) {
	var manifest struct {
		Applications []cfApp `json:"applications"`
	}
	strict(t, "cf/manifest.yml", docs(t, "cf/manifest.yml")[0], &manifest)
	router := manifest.Applications[0]
	if len(router.Sidecars) != 1 || router.Sidecars[0].Command != "./extauthz" || !strings.HasPrefix(router.Command, "./envoy -c envoy.yaml") {
		t.Fatalf("router app: want Envoy as the web process and extauthz as its sidecar: %+v", router)
	}
	env := map[string]string{}
	for k, v := range router.Env {
		env[k] = strings.ReplaceAll(v, "((session-secret))", secret64)
	}
	env["VCAP_SERVICES"] = vcapFor(router.Services...)
	cfg := loadEnv(t, "manifest.yml", env)
	if cfg.Redis == nil || cfg.GRPCAddr != "127.0.0.1:9001" {
		t.Fatalf("manifest.yml's configuration: redis %+v, grpc %s", cfg.Redis, cfg.GRPCAddr)
	}
	doc, err := os.ReadFile(filepath.Join("cf", router.Path, "envoy.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := envoyconfig.Validate(doc); err != nil {
		t.Fatalf("cf/router/envoy.yaml: %v", err)
	}
	if fi, err := os.Stat("cf/router/start.sh"); err != nil || fi.Mode()&0o111 == 0 {
		t.Fatal("cf/router/start.sh must exist and be executable")
	}

	var mta struct {
		SchemaVersion string `json:"_schema-version"`
		ID            string `json:"ID"`
		Version       string `json:"version"`
		Modules       []struct {
			Name       string            `json:"name"`
			Type       string            `json:"type"`
			Path       string            `json:"path"`
			Parameters map[string]any    `json:"parameters"`
			Properties map[string]string `json:"properties"`
			Requires   []struct {
				Name string `json:"name"`
			} `json:"requires"`
		} `json:"modules"`
		Resources []struct {
			Name       string         `json:"name"`
			Type       string         `json:"type"`
			Parameters map[string]any `json:"parameters"`
		} `json:"resources"`
		Parameters map[string]string `json:"parameters"`
	}
	strict(t, "cf/mta.yaml", docs(t, "cf/mta.yaml")[0], &mta)
	var resources []string
	for _, r := range mta.Resources {
		resources = append(resources, r.Name)
	}
	m := mta.Modules[0]
	var required []string
	for _, r := range m.Requires {
		required = append(required, r.Name)
		if !slices.Contains(resources, r.Name) {
			t.Errorf("mta.yaml: module %s requires %s, which is not a resource", m.Name, r.Name)
		}
	}
	if m.Parameters["command"] != "./start.sh" {
		t.Errorf("mta.yaml: the router must start extauthz and Envoy (./start.sh), not %v", m.Parameters["command"])
	}
	env = map[string]string{}
	for k, v := range m.Properties {
		env[k] = strings.ReplaceAll(v, "${session-secret}", mta.Parameters["session-secret"])
	}
	env["VCAP_SERVICES"] = vcapFor(required...)
	// Deployed as shipped, the placeholder secret stops extauthz.
	if _, err := config.Load(nil, func(k string) string { return env[k] }, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "placeholder") {
		t.Errorf("mta.yaml's placeholder session secret was accepted: %v", err)
	}
	for k, v := range m.Properties {
		env[k] = strings.ReplaceAll(v, "${session-secret}", secret64)
	}
	loadEnv(t, "mta.yaml", env)
}
