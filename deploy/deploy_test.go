// Package deploy_test checks the deployment files we ship: every Kubernetes
// object decodes strictly into its Go type (unknown fields fail), Istio
// resources into Istio's protos, the rest against the fields the README
// promises; and the configuration each file gives extauthz is accepted by
// extauthz's own loader.
package deploy_test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	networkingv1alpha3 "istio.io/api/networking/v1alpha3"
	securityv1beta1 "istio.io/api/security/v1beta1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"github.com/extauthz/extauthz/internal/envoyconfig"
	"github.com/extauthz/extauthz/pkg/config"
)

// docs splits a YAML file into its documents.
func docs(t *testing.T, file string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var out [][]byte
	for _, d := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(b), -1) {
		if strings.TrimSpace(d) != "" {
			out = append(out, []byte(d))
		}
	}
	return out
}

// strict decodes YAML into v, failing on unknown fields.
func strict(t *testing.T, file string, doc []byte, v any) {
	t.Helper()
	if err := yaml.UnmarshalStrict(doc, v); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
}

func kindOf(t *testing.T, doc []byte) string {
	var tm struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		t.Fatal(err)
	}
	return tm.APIVersion + " " + tm.Kind
}

// objectMeta is the metadata the non-Kubernetes-core resources may carry.
type objectMeta struct {
	Name        string            `json:"name"`
	Namespace   string            `json:"namespace,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

type btpInstance struct {
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Metadata   objectMeta `json:"metadata"`
	Spec       struct {
		ServiceOfferingName string         `json:"serviceOfferingName"`
		ServicePlanName     string         `json:"servicePlanName"`
		Parameters          map[string]any `json:"parameters,omitempty"`
	} `json:"spec"`
}

type btpBinding struct {
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Metadata   objectMeta `json:"metadata"`
	Spec       struct {
		ServiceInstanceName string `json:"serviceInstanceName"`
		SecretName          string `json:"secretName"`
	} `json:"spec"`
}

type kymaIstio struct {
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Metadata   objectMeta `json:"metadata"`
	Spec       struct {
		Config struct {
			Authorizers []struct {
				Name    string `json:"name"`
				Service string `json:"service"`
				Port    int    `json:"port"`
				Timeout string `json:"timeout"`
				Headers struct {
					InCheck struct {
						Include []string          `json:"include"`
						Add     map[string]string `json:"add,omitempty"`
					} `json:"inCheck"`
					ToUpstream struct {
						OnAllow []string `json:"onAllow"`
					} `json:"toUpstream"`
					ToDownstream struct {
						OnAllow []string `json:"onAllow"`
						OnDeny  []string `json:"onDeny"`
					} `json:"toDownstream"`
				} `json:"headers"`
			} `json:"authorizers"`
		} `json:"config"`
	} `json:"spec"`
}

// loadEnv runs extauthz's configuration loader on env and fails on any problem.
func loadEnv(t *testing.T, where string, env map[string]string) *config.Config {
	t.Helper()
	c, err := config.Load(nil, func(k string) string { return env[k] }, &bytes.Buffer{})
	if err != nil {
		t.Fatalf("%s: extauthz rejects this configuration: %v", where, err)
	}
	return c
}

const secret64 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// writeRedisBinding writes a redis-cache binding folder as the BTP service operator does.
func writeRedisBinding(t *testing.T, dir string) {
	t.Helper()
	os.MkdirAll(dir, 0o755)
	for f, v := range map[string]string{"hostname": "redis.internal", "port": "6379", "password": "pw", "tls": "true", "type": "redis-cache"} {
		os.WriteFile(filepath.Join(dir, f), []byte(v), 0o644)
	}
	os.WriteFile(filepath.Join(dir, ".metadata"), []byte(`{"metaDataProperties":[{"name":"type","format":"text"}],
		"credentialProperties":[{"name":"hostname","format":"text"},{"name":"port","format":"json"},{"name":"password","format":"text"},{"name":"tls","format":"json"}]}`), 0o644)
}

// meshPathNormalization checks that an Istio mesh config gives every proxy
// one spelling of each path: DECODE_AND_MERGE_SLASHES.
func meshPathNormalization(mc *meshv1alpha1.MeshConfig) error {
	if got := mc.GetPathNormalization().GetNormalization(); got != meshv1alpha1.MeshConfig_ProxyPathNormalization_DECODE_AND_MERGE_SLASHES {
		return fmt.Errorf("meshConfig.pathNormalization.normalization is %v, want DECODE_AND_MERGE_SLASHES", got)
	}
	return nil
}

// envoyFilterNormalises decodes an EnvoyFilter's spec and checks that it
// merges path normalisation (envoyconfig.PathNormalization) into the
// HttpConnectionManager of the inbound sidecar listener of the workloads it
// selects, which it returns.
func envoyFilterNormalises(spec []byte) (map[string]string, error) {
	var ef networkingv1alpha3.EnvoyFilter
	if err := protojson.Unmarshal(spec, &ef); err != nil {
		return nil, fmt.Errorf("spec is not an Istio EnvoyFilter: %w", err)
	}
	labels := ef.GetWorkloadSelector().GetLabels()
	if len(labels) == 0 {
		return nil, fmt.Errorf("no workloadSelector: it must select the app's pods as the AuthorizationPolicy does")
	}
	for _, p := range ef.GetConfigPatches() {
		if p.GetApplyTo() != networkingv1alpha3.EnvoyFilter_NETWORK_FILTER || p.GetMatch().GetContext() != networkingv1alpha3.EnvoyFilter_SIDECAR_INBOUND ||
			p.GetMatch().GetListener().GetFilterChain().GetFilter().GetName() != "envoy.filters.network.http_connection_manager" ||
			p.GetPatch().GetOperation() != networkingv1alpha3.EnvoyFilter_Patch_MERGE {
			continue
		}
		j, err := protojson.Marshal(p.GetPatch().GetValue())
		if err != nil {
			return nil, err
		}
		var value struct {
			TypedConfig json.RawMessage `json:"typed_config"`
		}
		if err := json.Unmarshal(j, &value); err != nil {
			return nil, err
		}
		var a anypb.Any
		if err := protojson.Unmarshal(value.TypedConfig, &a); err != nil {
			return nil, fmt.Errorf("patch: typed_config: %w", err)
		}
		var hcm hcmv3.HttpConnectionManager
		if err := a.UnmarshalTo(&hcm); err != nil {
			return nil, fmt.Errorf("patch: typed_config is not an HttpConnectionManager: %w", err)
		}
		if err := envoyconfig.PathNormalization(&hcm); err != nil {
			return nil, fmt.Errorf("patch: %w", err)
		}
		return labels, nil
	}
	return nil, fmt.Errorf("no MERGE patch of the SIDECAR_INBOUND http_connection_manager")
}

func TestKyma(t *testing.T) {
	var kust struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
		Namespace  string `json:"namespace"`
		Labels     []struct {
			Pairs map[string]string `json:"pairs"`
		} `json:"labels"`
		Resources []string `json:"resources"`
	}
	strict(t, "kustomization.yaml", docs(t, "kyma/kustomization.yaml")[0], &kust)
	files, _ := filepath.Glob("kyma/*.yaml")
	for _, f := range files {
		base := filepath.Base(f)
		if base == "kustomization.yaml" || strings.HasPrefix(base, "istio-") {
			continue // cluster-wide Istio settings are applied apart (README)
		}
		if !slices.Contains(kust.Resources, base) {
			t.Errorf("kustomization.yaml does not list %s", base)
		}
	}
	var (
		instances    = map[string]string{} // name -> offering
		bindings     = map[string]btpBinding{}
		providers    []string // authorizer / extension provider names
		policyUses   []string
		policyPods   []map[string]string // the AuthorizationPolicies' selectors
		normalised   []map[string]string // pods whose sidecar normalises paths (EnvoyFilter)
		meshConfigs  int
		deployment   *appsv1.Deployment
		service      *corev1.Service
		sawPDB       bool
		checkedKinds []string
	)
	for _, f := range files {
		if filepath.Base(f) == "kustomization.yaml" {
			continue
		}
		for _, d := range docs(t, f) {
			kind := kindOf(t, d)
			checkedKinds = append(checkedKinds, kind)
			switch kind {
			case "apps/v1 Deployment":
				deployment = &appsv1.Deployment{}
				strict(t, f, d, deployment)
			case "v1 Service":
				service = &corev1.Service{}
				strict(t, f, d, service)
			case "v1 Secret":
				t.Errorf("%s: a Secret in the kustomization would overwrite the one created for the session secret on every apply", f)
			case "policy/v1 PodDisruptionBudget":
				var p policyv1.PodDisruptionBudget
				strict(t, f, d, &p)
				sawPDB = p.Spec.MinAvailable != nil && p.Spec.MinAvailable.IntValue() >= 1
			case "services.cloud.sap.com/v1 ServiceInstance":
				var si btpInstance
				strict(t, f, d, &si)
				instances[si.Metadata.Name] = si.Spec.ServiceOfferingName
			case "services.cloud.sap.com/v1 ServiceBinding":
				var sb btpBinding
				strict(t, f, d, &sb)
				bindings[sb.Metadata.Name] = sb
			case "security.istio.io/v1 AuthorizationPolicy":
				var obj struct {
					APIVersion string          `json:"apiVersion"`
					Kind       string          `json:"kind"`
					Metadata   objectMeta      `json:"metadata"`
					Spec       json.RawMessage `json:"spec"`
				}
				strict(t, f, d, &obj)
				var ap securityv1beta1.AuthorizationPolicy
				if err := protojson.Unmarshal(obj.Spec, &ap); err != nil {
					t.Fatalf("%s: spec is not an Istio AuthorizationPolicy: %v", f, err)
				}
				if ap.GetAction() != securityv1beta1.AuthorizationPolicy_CUSTOM {
					t.Fatalf("%s: action %v, want CUSTOM", f, ap.GetAction())
				}
				policyUses = append(policyUses, ap.GetProvider().GetName())
				policyPods = append(policyPods, ap.GetSelector().GetMatchLabels())
			case "networking.istio.io/v1alpha3 EnvoyFilter":
				var obj struct {
					APIVersion string          `json:"apiVersion"`
					Kind       string          `json:"kind"`
					Metadata   objectMeta      `json:"metadata"`
					Spec       json.RawMessage `json:"spec"`
				}
				strict(t, f, d, &obj)
				pods, err := envoyFilterNormalises(obj.Spec)
				if err != nil {
					t.Fatalf("%s: %v", f, err)
				}
				normalised = append(normalised, pods)
			case "operator.kyma-project.io/v1alpha2 Istio":
				var ki kymaIstio
				strict(t, f, d, &ki)
				for _, a := range ki.Spec.Config.Authorizers {
					if a.Port != 9002 || !slices.Contains(a.Headers.InCheck.Include, "cookie") ||
						!slices.Equal(a.Headers.ToUpstream.OnAllow, []string{"authorization", "cookie"}) ||
						!slices.Contains(a.Headers.ToDownstream.OnDeny, "location") || !slices.Contains(a.Headers.ToDownstream.OnDeny, "set-cookie") {
						t.Errorf("%s: authorizer %s does not pass what extauthz needs: %+v", f, a.Name, a)
					}
					providers = append(providers, a.Name)
				}
			case "install.istio.io/v1alpha1 IstioOperator":
				var obj struct {
					APIVersion string `json:"apiVersion"`
					Kind       string `json:"kind"`
					Spec       struct {
						MeshConfig json.RawMessage `json:"meshConfig"`
					} `json:"spec"`
				}
				strict(t, f, d, &obj)
				var mc meshv1alpha1.MeshConfig
				if err := protojson.Unmarshal(obj.Spec.MeshConfig, &mc); err != nil {
					t.Fatalf("%s: meshConfig is not Istio's MeshConfig: %v", f, err)
				}
				meshConfigs++
				if err := meshPathNormalization(&mc); err != nil {
					t.Errorf("%s: %v", f, err)
				}
				var kinds []string
				for _, p := range mc.GetExtensionProviders() {
					providers = append(providers, p.GetName())
					switch {
					case p.GetEnvoyExtAuthzHttp() != nil:
						h := p.GetEnvoyExtAuthzHttp()
						kinds = append(kinds, "http")
						if h.GetPort() != 9002 || h.GetFailOpen() || !slices.Equal(h.GetHeadersToUpstreamOnAllow(), []string{"authorization", "cookie"}) {
							t.Errorf("%s: %s: %v", f, p.GetName(), h)
						}
					case p.GetEnvoyExtAuthzGrpc() != nil:
						kinds = append(kinds, "grpc")
						if p.GetEnvoyExtAuthzGrpc().GetPort() != 9001 || p.GetEnvoyExtAuthzGrpc().GetFailOpen() {
							t.Errorf("%s: %s: %v", f, p.GetName(), p.GetEnvoyExtAuthzGrpc())
						}
					}
				}
				if !slices.Equal(kinds, []string{"http", "grpc"}) {
					t.Errorf("%s: extension providers %v, want an HTTP and a gRPC one", f, kinds)
				}
			default:
				t.Errorf("%s: unexpected %s", f, kind)
			}
		}
	}
	if deployment == nil || service == nil || !sawPDB {
		t.Fatalf("missing Deployment, Service or PodDisruptionBudget (saw %v)", checkedKinds)
	}
	for _, p := range policyUses {
		if !slices.Contains(providers, p) {
			t.Errorf("AuthorizationPolicy uses provider %q, declared: %v", p, providers)
		}
	}
	// Where extauthz decides, paths are normalised: on plain Istio by the
	// mesh config, on Kyma (whose Istio resource cannot set it) by an
	// EnvoyFilter on the same pods as the AuthorizationPolicy.
	if meshConfigs == 0 {
		t.Error("no IstioOperator meshConfig found (istio-meshconfig.yaml)")
	}
	for _, pods := range policyPods {
		if !slices.ContainsFunc(normalised, func(n map[string]string) bool { return maps.Equal(n, pods) }) {
			t.Errorf("the AuthorizationPolicy's pods %v have no EnvoyFilter normalising paths (path-normalization.yaml); found %v", pods, normalised)
		}
	}
	for name, b := range bindings {
		if _, ok := instances[b.Spec.ServiceInstanceName]; !ok {
			t.Errorf("ServiceBinding %s names instance %q, which is not defined", name, b.Spec.ServiceInstanceName)
		}
	}
	if instances["my-app-redis"] != "redis-cache" || instances["my-app-xsuaa"] != "xsuaa" {
		t.Errorf("service instances %v, want xsuaa and redis-cache", instances)
	}

	// The pod: probes, security, resources.
	pod := deployment.Spec.Template.Spec
	c := pod.Containers[0]
	if c.LivenessProbe.HTTPGet.Path != "/healthz" || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		t.Error("probes must be /healthz (liveness) and /readyz (readiness)")
	}
	if pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot || c.SecurityContext.ReadOnlyRootFilesystem == nil ||
		!*c.SecurityContext.ReadOnlyRootFilesystem || c.SecurityContext.AllowPrivilegeEscalation == nil || *c.SecurityContext.AllowPrivilegeEscalation {
		t.Error("the pod must run as non-root, read-only, without privilege escalation")
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
		t.Error("resource requests missing")
	}
	var ports []int32
	for _, p := range service.Spec.Ports {
		ports = append(ports, p.Port)
	}
	if !slices.Equal(ports, []int32{9001, 9002, 9003}) {
		t.Errorf("service ports %v", ports)
	}

	// The configuration the Deployment gives extauthz, with the bindings
	// mounted where it mounts them.
	root := t.TempDir()
	env := map[string]string{}
	for _, e := range c.Env {
		v := e.Value
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			v = secret64 // the extauthz-session Secret, created apart (README)
			if sel := e.ValueFrom.SecretKeyRef; sel.Name != "extauthz-session" || sel.Key != "secret" {
				t.Errorf("%s comes from Secret %s key %s, want extauthz-session key secret (README)", e.Name, sel.Name, sel.Key)
			}
		}
		// Kubernetes expands $(VAR) from earlier variables.
		for k, val := range env {
			v = strings.ReplaceAll(v, "$("+k+")", val)
		}
		env[e.Name] = v
	}
	var mounted []string
	for _, m := range c.VolumeMounts {
		rel, ok := strings.CutPrefix(m.MountPath, env["SERVICE_BINDING_ROOT"]+"/")
		if !ok {
			t.Errorf("binding %s is not mounted under SERVICE_BINDING_ROOT", m.Name)
		}
		mounted = append(mounted, rel)
		if strings.Contains(rel, "redis") {
			writeRedisBinding(t, filepath.Join(root, rel))
		} else {
			os.MkdirAll(filepath.Join(root, rel), 0o755)
		}
	}
	for name, b := range bindings {
		if !slices.Contains(mounted, b.Spec.SecretName) {
			t.Errorf("the Secret of ServiceBinding %s (%s) is not mounted as a binding folder", name, b.Spec.SecretName)
		}
	}
	env["SERVICE_BINDING_ROOT"] = root
	cfg := loadEnv(t, "deployment.yaml", env)
	if cfg.Redis == nil || cfg.Redis.Addrs[0] != "redis.internal:6379" {
		t.Fatalf("the Deployment's EXT_SESSION_MGT does not find the redis binding: %+v", cfg.Redis)
	}
	// SIGTERM to exit takes the drain delay, then at most the shutdown
	// timeout (and a second for the admin listener): Kubernetes must not
	// SIGKILL before.
	grace := time.Duration(30) * time.Second // Kubernetes' default
	if pod.TerminationGracePeriodSeconds != nil {
		grace = time.Duration(*pod.TerminationGracePeriodSeconds) * time.Second
	}
	if need := cfg.DrainDelay + cfg.ShutdownTimeout + time.Second; grace <= need {
		t.Errorf("terminationGracePeriodSeconds %v, not above drain delay %v + shutdown timeout %v + 1s", grace, cfg.DrainDelay, cfg.ShutdownTimeout)
	}
}

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

func TestDockerfileAndCompose(t *testing.T) {
	df, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var last string
	for _, line := range strings.Split(string(df), "\n") {
		if strings.HasPrefix(line, "FROM ") {
			last = line
		}
	}
	if !strings.Contains(last, "distroless/static") && !strings.Contains(last, "scratch") {
		t.Errorf("the final stage %q is not distroless static or scratch", last)
	}
	if !regexp.MustCompile(`(?m)^USER 65532`).Match(df) || !strings.Contains(string(df), "CGO_ENABLED=0") {
		t.Error("the image must run a static binary as a non-root user")
	}

	var compose struct {
		Name     string `json:"name"`
		Services map[string]struct {
			Image       string            `json:"image"`
			Build       string            `json:"build"`
			Command     []string          `json:"command"`
			Environment map[string]string `json:"environment"`
			Volumes     []string          `json:"volumes"`
			Ports       []string          `json:"ports"`
			DependsOn   []string          `json:"depends_on"`
			NetworkMode string            `json:"network_mode"`
			ExtraHosts  []string          `json:"extra_hosts"`
			Restart     string            `json:"restart"`
		} `json:"services"`
	}
	strict(t, "compose/docker-compose.yaml", docs(t, "compose/docker-compose.yaml")[0], &compose)
	for _, s := range []string{"envoy", "extauthz", "redis", "hydra", "app"} {
		if _, ok := compose.Services[s]; !ok {
			t.Errorf("docker-compose.yaml lacks the %s service", s)
		}
	}
	for name, s := range compose.Services {
		for _, d := range s.DependsOn {
			if _, ok := compose.Services[d]; !ok {
				t.Errorf("%s depends on %s, which is not a service", name, d)
			}
		}
		for _, v := range s.Volumes {
			src, _, _ := strings.Cut(v, ":")
			if strings.HasPrefix(src, "./") {
				doc, err := os.ReadFile(filepath.Join("compose", src))
				if err != nil {
					t.Fatalf("%s mounts %s: %v", name, src, err)
				}
				if strings.HasSuffix(src, "envoy.yaml") {
					if _, err := envoyconfig.Validate(doc); err != nil {
						t.Fatalf("compose/%s: %v", src, err)
					}
				}
			}
		}
	}
	if compose.Services["extauthz"].Build != "../.." {
		t.Error("the extauthz service must build the repository's Dockerfile")
	}
	env := compose.Services["extauthz"].Environment
	if v := env["EXTAUTHZ_SESSION_SECRETS"]; !strings.HasPrefix(v, "${EXTAUTHZ_SESSION_SECRETS:?") {
		t.Errorf("the quickstart must take its session secret from the user's environment, not %q", v)
	}
	env["EXTAUTHZ_SESSION_SECRETS"] = secret64
	loadEnv(t, "docker-compose.yaml", env)
}

// TestIstioPathNormalizationChecks: the checks above refuse Istio files
// that lack path normalisation.
func TestIstioPathNormalizationChecks(t *testing.T) {
	for _, mc := range []string{`{}`, `{"pathNormalization":{}}`, `{"pathNormalization":{"normalization":"BASE"}}`,
		`{"pathNormalization":{"normalization":"MERGE_SLASHES"}}`, `{"pathNormalization":{"normalization":"NONE"}}`} {
		var m meshv1alpha1.MeshConfig
		if err := protojson.Unmarshal([]byte(mc), &m); err != nil {
			t.Fatal(err)
		}
		if meshPathNormalization(&m) == nil {
			t.Errorf("meshConfig %s accepted", mc)
		}
	}

	var shipped struct {
		Spec json.RawMessage `json:"spec"`
	}
	if err := yaml.Unmarshal(docs(t, "kyma/path-normalization.yaml")[0], &shipped); err != nil {
		t.Fatal(err)
	}
	if _, err := envoyFilterNormalises(shipped.Spec); err != nil {
		t.Fatalf("the shipped EnvoyFilter: %v", err)
	}
	for name, change := range map[string]func(string) string{
		"no normalize_path":         func(s string) string { return strings.Replace(s, `"normalize_path":true,`, "", 1) },
		"no merge_slashes":          func(s string) string { return strings.Replace(s, `"merge_slashes":true,`, "", 1) },
		"escaped slashes forwarded": func(s string) string { return strings.Replace(s, "REJECT_REQUEST", "UNESCAPE_AND_FORWARD", 1) },
		"outbound only":             func(s string) string { return strings.Replace(s, "SIDECAR_INBOUND", "SIDECAR_OUTBOUND", 1) },
		"no workload selector":      func(s string) string { return strings.Replace(s, `"app":"my-app"`, "", 1) },
	} {
		spec := change(string(shipped.Spec))
		if spec == string(shipped.Spec) {
			t.Fatalf("%s: the change did not apply to %s", name, spec)
		}
		if _, err := envoyFilterNormalises([]byte(spec)); err == nil {
			t.Errorf("%s: accepted %s", name, spec)
		}
	}
}
