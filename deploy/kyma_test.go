package deploy_test

import (
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	networkingv1alpha3 "istio.io/api/networking/v1alpha3"
	securityv1beta1 "istio.io/api/security/v1beta1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"sigs.k8s.io/yaml"

	"github.com/extauthz/extauthz/internal/deploycheck"
)

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
		exempt       []string // paths the AuthorizationPolicies do not check
		backchannel  bool     // the back-channel logout is routed to extauthz's HTTP port
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
				var obj deploycheck.Raw
				strict(t, f, d, &obj)
				var ap securityv1beta1.AuthorizationPolicy
				if err := protojson.Unmarshal(obj.Spec, &ap); err != nil {
					t.Fatalf("%s: spec is not an Istio AuthorizationPolicy: %v", f, err)
				}
				if ap.GetAction() != securityv1beta1.AuthorizationPolicy_CUSTOM {
					t.Fatalf("%s: action %v, want CUSTOM", f, ap.GetAction())
				}
				policyUses = append(policyUses, ap.GetProvider().GetName())
				for _, r := range ap.GetRules() {
					for _, to := range r.GetTo() {
						exempt = append(exempt, to.GetOperation().GetNotPaths()...)
					}
				}
				policyPods = append(policyPods, ap.GetSelector().GetMatchLabels())
			case "networking.istio.io/v1alpha3 EnvoyFilter":
				var obj deploycheck.Raw
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
			case "networking.istio.io/v1 VirtualService":
				var obj deploycheck.Raw
				strict(t, f, d, &obj)
				var vs networkingv1alpha3.VirtualService
				if err := protojson.Unmarshal(obj.Spec, &vs); err != nil {
					t.Fatalf("%s: spec is not an Istio VirtualService: %v", f, err)
				}
				for _, h := range vs.GetHttp() {
					for _, m := range h.GetMatch() {
						if m.GetUri().GetExact() == "/logout/backchannel" && len(h.GetRoute()) == 1 &&
							strings.HasPrefix(h.GetRoute()[0].GetDestination().GetHost(), "extauthz.") &&
							h.GetRoute()[0].GetDestination().GetPort().GetNumber() == 9002 {
							backchannel = true
						}
					}
				}
			default:
				t.Errorf("%s: unexpected %s", f, kind)
			}
		}
	}
	// The back-channel logout reaches extauthz's HTTP listener with its
	// body, unchecked (a 200 from the HTTP ext_authz protocol would mean
	// "allow").
	if !backchannel || !slices.Contains(exempt, "/logout/backchannel") {
		t.Errorf("the back-channel logout is not routed to extauthz (VirtualService to port 9002: %v) or is checked by the AuthorizationPolicy (notPaths %v)", backchannel, exempt)
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

	// The pod: probes, security, resources, ports (the checks the Helm
	// chart's Deployment passes too).
	for _, p := range deploycheck.PodProblems(deployment) {
		t.Error(p)
	}
	c := deployment.Spec.Template.Spec.Containers[0]
	var ports []int32
	for _, p := range service.Spec.Ports {
		ports = append(ports, p.Port)
	}
	if !slices.Equal(ports, []int32{9001, 9002, 9003}) {
		t.Errorf("service ports %v", ports)
	}

	// The configuration the Deployment gives extauthz, with the bindings
	// mounted where it mounts them.
	env := deploycheck.Env(c, func(sel *corev1.SecretKeySelector) string {
		if sel.Name != "extauthz-session" || sel.Key != "secret" {
			t.Errorf("a variable comes from Secret %s key %s, want extauthz-session key secret (README)", sel.Name, sel.Key)
		}
		return secret64 // the extauthz-session Secret, created apart (README)
	})
	root := t.TempDir()
	mounted, err := deploycheck.MountBindings(c, env["SERVICE_BINDING_ROOT"], root, func(rel, dir string) error {
		if strings.Contains(rel, "redis") {
			return deploycheck.WriteRedisBinding(dir)
		}
		return os.MkdirAll(dir, 0o755)
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(mounted) != len(c.VolumeMounts) {
		t.Errorf("bindings mounted %v, not all under SERVICE_BINDING_ROOT: %v", mounted, c.VolumeMounts)
	}
	for name, b := range bindings {
		if !slices.Contains(slices.Collect(maps.Values(mounted)), b.Spec.SecretName) {
			t.Errorf("the Secret of ServiceBinding %s (%s) is not mounted as a binding folder", name, b.Spec.SecretName)
		}
	}
	env["SERVICE_BINDING_ROOT"] = root
	cfg := loadEnv(t, "deployment.yaml", env)
	if cfg.Redis == nil || cfg.Redis.Addrs[0] != "redis.internal:6379" {
		t.Fatalf("the Deployment's EXT_SESSION_MGT does not find the redis binding: %+v", cfg.Redis)
	}
	if p := deploycheck.GraceProblem(deployment, cfg); p != "" {
		t.Error(p)
	}
}

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
		"underscore headers kept":   func(s string) string { return strings.Replace(s, "DROP_HEADER", "ALLOW", 1) },
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
