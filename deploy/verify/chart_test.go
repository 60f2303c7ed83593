package verify_test

import (
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	securityv1beta1 "istio.io/api/security/v1beta1"
	corev1 "k8s.io/api/core/v1"

	"github.com/extauthz/extauthz/internal/deploycheck"
	"github.com/extauthz/extauthz/pkg/config"
	"github.com/extauthz/extauthz/pkg/tracing"
)

// TestChart renders the chart for every ci/ values file, decodes every
// object strictly, and checks what extauthz and Istio need of them; then
// runs extauthz's own configuration loader on the Deployment's environment
// with the binding folders the BTP service operator would write.
func TestChart(t *testing.T) {
	for _, vf := range valuesFiles(t) {
		t.Run(strings.TrimSuffix(filepath.Base(vf), "-values.yaml"), func(t *testing.T) {
			userValues := release{valuesFile: vf}.userValues(t)
			in := decode(t, mustRender(t, release{valuesFile: vf}))
			checkInstalled(t, in, userValues)
		})
	}
}

func checkInstalled(t *testing.T, in *installed, vals map[string]any) {
	t.Helper()
	d := in.deployment
	for _, p := range deploycheck.PodProblems(d) {
		t.Error(p)
	}
	pod := d.Spec.Template.Spec
	c := pod.Containers[0]

	// Service and PDB select the pods; ports as in deploy/kyma.
	podLabels := d.Spec.Template.Labels
	selects := func(sel map[string]string) bool {
		for k, v := range sel {
			if podLabels[k] != v {
				return false
			}
		}
		return len(sel) > 0
	}
	if !selects(d.Spec.Selector.MatchLabels) || !selects(in.service.Spec.Selector) {
		t.Errorf("Deployment selector %v / Service selector %v do not select the pod labels %v", d.Spec.Selector.MatchLabels, in.service.Spec.Selector, podLabels)
	}
	var ports []string
	for _, p := range in.service.Spec.Ports {
		ports = append(ports, p.Name+":"+p.TargetPort.String())
	}
	if !slices.Equal(ports, []string{"grpc:grpc", "http:http", "admin:admin"}) {
		t.Errorf("service ports %v", ports)
	}
	if *d.Spec.Replicas > 1 {
		if in.pdb == nil || in.pdb.Spec.MinAvailable.IntValue() < 1 || !selects(in.pdb.Spec.Selector.MatchLabels) {
			t.Errorf("%d replicas and no PodDisruptionBudget keeping one of them", *d.Spec.Replicas)
		}
	} else if in.pdb != nil {
		t.Error("a PodDisruptionBudget of minAvailable 1 on one replica blocks every node drain")
	}
	if in.serviceAccount != nil && (pod.ServiceAccountName != in.serviceAccount.Name || in.serviceAccount.AutomountServiceAccountToken == nil || *in.serviceAccount.AutomountServiceAccountToken) {
		t.Errorf("the pod's service account %q: it must be the chart's, without an API token", pod.ServiceAccountName)
	}
	if pod.AutomountServiceAccountToken == nil || *pod.AutomountServiceAccountToken {
		t.Error("extauthz calls no Kubernetes API: automountServiceAccountToken must be false")
	}

	// The session secret: from the chart's generated Secret, or the one
	// named in the values; never a placeholder.
	var secretRef *corev1.SecretKeySelector
	env := deploycheck.Env(c, func(sel *corev1.SecretKeySelector) string {
		secretRef = sel
		for _, s := range in.secrets {
			if s.Name == sel.Name {
				return string(s.Data[sel.Key])
			}
		}
		return deploycheck.Secret64 // created apart
	})
	if secretRef == nil {
		t.Fatal("the session secret comes from no Secret")
	}
	if existing := nested(vals, "sessionSecret", "existingSecret"); existing != nil && existing != "" {
		if len(in.secrets) != 0 || secretRef.Name != existing || secretRef.Key != nested(vals, "sessionSecret", "key") {
			t.Errorf("sessionSecret.existingSecret %v: the pod reads %s/%s, the chart renders %d Secrets", existing, secretRef.Name, secretRef.Key, len(in.secrets))
		}
	} else {
		if len(in.secrets) != 1 || in.secrets[0].Name != secretRef.Name || in.secrets[0].Annotations["helm.sh/resource-policy"] != "keep" {
			t.Fatalf("want one generated session Secret, kept on uninstall, read by the pod; got %d (pod reads %s)", len(in.secrets), secretRef.Name)
		}
		if s := string(in.secrets[0].Data[secretRef.Key]); len(s) < 64 || !regexp.MustCompile(`^[A-Za-z0-9]+$`).MatchString(s) {
			t.Errorf("generated session secret %q: want 64 or more random alphanumerics", s)
		}
	}

	// The binding folders, as the BTP service operator writes them.
	root := t.TempDir()
	mounted, err := deploycheck.MountBindings(c, env["SERVICE_BINDING_ROOT"], root, func(rel, dir string) error {
		switch {
		case strings.Contains(rel, "redis"):
			return deploycheck.WriteRedisBinding(dir)
		case strings.Contains(rel, "identity") || env["IAS_SERVICE_NAME"] == rel:
			return deploycheck.WriteIdentityBinding(dir)
		default:
			return deploycheck.WriteXSUAABinding(dir)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	secretOf := map[string]string{} // volume -> Secret
	for _, v := range pod.Volumes {
		if v.Secret != nil {
			secretOf[v.Name] = v.Secret.SecretName
		}
	}
	for name, b := range in.bindings {
		if _, ok := in.instances[b.Spec.ServiceInstanceName]; !ok {
			t.Errorf("ServiceBinding %s names instance %q, which is not rendered", name, b.Spec.ServiceInstanceName)
		}
		found := false
		for vol, rel := range mounted {
			found = found || secretOf[vol] == b.Spec.SecretName && rel == name
		}
		if !found {
			t.Errorf("the Secret of ServiceBinding %s (%s) is not mounted as the binding folder %s", name, b.Spec.SecretName, name)
		}
	}
	for name, si := range in.instances {
		if _, ok := in.bindings[name]; !ok {
			t.Errorf("ServiceInstance %s (%s) has no binding", name, si.Spec.ServiceOfferingName)
		}
	}
	env["SERVICE_BINDING_ROOT"] = root
	if p := env["EXTAUTHZ_XS_APP"]; p != "" {
		env["EXTAUTHZ_XS_APP"] = xsApp(t, in, c, p, root)
	}
	cfg, err := deploycheck.LoadEnv(env)
	if err != nil {
		t.Fatalf("extauthz rejects the Deployment's configuration: %v\nenv: %v", err, env)
	}
	if cfg.Redis == nil || cfg.Redis.Addrs[0] != "redis.internal:6379" {
		t.Fatalf("the Deployment's EXT_SESSION_MGT does not find the redis binding: %+v", cfg.Redis)
	}
	if len(cfg.SessionSecrets) != 1 || string(cfg.SessionSecrets[0]) != env["SESSION_SECRET"] {
		t.Error("EXT_SESSION_MGT.sessionSecret is not the session Secret's")
	}
	switch nested(vals, "btp", "identity", "service") {
	case "identity":
		if cfg.IDP.Kind != config.OIDCProvider || cfg.OIDC.ClientID != "c0ffee" {
			t.Errorf("identity binding: extauthz chose %+v", cfg.IDP)
		}
	case "":
	default: // xsuaa
		if cfg.IDP.Kind != config.XSUAAProvider {
			t.Errorf("xsuaa binding: extauthz chose %+v", cfg.IDP)
		}
	}
	if ep := nested(vals, "tracing", "endpoint"); ep != nil && ep != "" {
		if env["OTEL_EXPORTER_OTLP_ENDPOINT"] != ep || !tracing.Enabled(func(k string) string { return env[k] }) {
			t.Errorf("tracing.endpoint %v: OTEL_EXPORTER_OTLP_ENDPOINT %q, tracing on %v", ep, env["OTEL_EXPORTER_OTLP_ENDPOINT"], tracing.Enabled(func(k string) string { return env[k] }))
		}
	} else if tracing.Enabled(func(k string) string { return env[k] }) {
		t.Error("tracing on without tracing.endpoint")
	}
	if cfg.TenantHostPattern == "" && len(cfg.AllowedHosts) == 0 {
		t.Error("no host served: extauthz would answer 404 to everything")
	}
	if p := deploycheck.GraceProblem(d, cfg); p != "" {
		t.Error(p)
	}

	// Istio: a CUSTOM policy and a normalising EnvoyFilter for every
	// protected workload, on the same pods.
	protect, _ := vals["protect"].([]any)
	if len(in.policies) != len(protect) {
		t.Errorf("%d AuthorizationPolicies for %d protected workloads", len(in.policies), len(protect))
	}
	normalise := nested(vals, "istio", "pathNormalization") != false
	for i, ap := range in.policies {
		if ap.GetAction() != securityv1beta1.AuthorizationPolicy_CUSTOM || ap.GetProvider().GetName() == "" {
			t.Errorf("%s: action %v provider %q, want CUSTOM with a provider", in.policyMeta[i].Name, ap.GetAction(), ap.GetProvider().GetName())
		}
		pods := ap.GetSelector().GetMatchLabels()
		if len(pods) == 0 {
			t.Errorf("%s: no selector: it would apply to every workload of the namespace", in.policyMeta[i].Name)
		}
		if normalise && !slices.ContainsFunc(in.normalised, func(n map[string]string) bool { return maps.Equal(n, pods) }) {
			t.Errorf("the AuthorizationPolicy's pods %v have no EnvoyFilter normalising paths; found %v", pods, in.normalised)
		}
		// Whatever the path setting: the mesh has none for header names.
		if !slices.ContainsFunc(in.hardened, func(n map[string]string) bool { return maps.Equal(n, pods) }) {
			t.Errorf("the AuthorizationPolicy's pods %v have no EnvoyFilter dropping headers with \"_\"; found %v", pods, in.hardened)
		}
	}
	if !normalise && len(in.normalised) > 0 {
		t.Error("istio.pathNormalization false, EnvoyFilters normalising paths rendered")
	}

	// Monitoring: the ServiceMonitor scrapes the admin port of the Service.
	if sm := in.serviceMonitor; sm != nil {
		if !maps.Equal(sm.Spec.Selector.MatchLabels, in.service.Spec.Selector) || len(sm.Spec.Endpoints) != 1 ||
			sm.Spec.Endpoints[0].Port != "admin" || sm.Spec.Endpoints[0].Path != "/metrics" {
			t.Errorf("ServiceMonitor %+v does not scrape the Service's admin port", sm.Spec)
		}
	}
	if nested(vals, "monitoring", "prometheusRule", "enabled") == true && in.rule == nil {
		t.Error("monitoring.prometheusRule.enabled: no PrometheusRule")
	}
}

// xsApp writes the xs-app.json the pod mounts (from the chart's ConfigMap,
// or a minimal one for a ConfigMap created apart) and returns its path.
func xsApp(t *testing.T, in *installed, c corev1.Container, path, root string) string {
	t.Helper()
	content := `{"routes":[{"source":"^/(.*)$","authenticationType":"xsuaa"}]}`
	dir, key := filepath.Split(path)
	for _, cm := range in.configMaps {
		if v, ok := cm.Data[key]; ok {
			content = v
		}
	}
	mountedAt := ""
	for _, m := range c.VolumeMounts {
		if m.Name == "xs-app" {
			mountedAt = m.MountPath
		}
	}
	if filepath.Clean(dir) != mountedAt {
		t.Errorf("EXTAUTHZ_XS_APP %s is not in the xs-app mount %s", path, mountedAt)
	}
	f := filepath.Join(root, "xs-app.json")
	if err := os.WriteFile(f, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}

// nested reads vals[k1][k2]..., nil when absent.
func nested(vals map[string]any, keys ...string) any {
	var v any = vals
	for _, k := range keys {
		m, ok := v.(map[string]any)
		if !ok {
			return nil
		}
		v = m[k]
	}
	return v
}
