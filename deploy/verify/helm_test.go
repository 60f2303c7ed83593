package verify_test

import (
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/common/util"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/lint"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	networkingv1alpha3 "istio.io/api/networking/v1alpha3"
	securityv1beta1 "istio.io/api/security/v1beta1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	dynfake "k8s.io/client-go/dynamic/fake"

	"github.com/extauthz/extauthz/internal/deploycheck"
	"github.com/extauthz/extauthz/pkg/config"
	"github.com/extauthz/extauthz/pkg/tracing"
)

const chartDir = "../helm/extauthz"

// object is one rendered manifest.
type object struct {
	file, kind string
	yaml       []byte
}

// release is what a test installs: a values file (relative to the chart),
// more values on top, and the objects already in the cluster (for lookup).
type release struct {
	name, namespace string
	valuesFile      string
	values          map[string]any
	existing        []runtime.Object
}

// secretsProvider serves Helm's lookup from a fake cluster.
type secretsProvider struct{ client dynamic.Interface }

func (p secretsProvider) GetClientFor(apiVersion, kind string) (dynamic.NamespaceableResourceInterface, bool, error) {
	gv, err := schema.ParseGroupVersion(apiVersion)
	if err != nil {
		return nil, false, err
	}
	return p.client.Resource(gv.WithResource(strings.ToLower(kind) + "s")), true, nil
}

func loadChart(t *testing.T) *chart.Chart {
	t.Helper()
	c, err := loader.Load(chartDir)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// values reads a values file of the chart and merges extra over it.
func (r release) userValues(t *testing.T) map[string]any {
	t.Helper()
	vals := map[string]any{}
	if r.valuesFile != "" {
		v, err := common.ReadValuesFile(filepath.Join(chartDir, r.valuesFile))
		if err != nil {
			t.Fatal(err)
		}
		vals = v
	}
	return util.MergeTables(r.values, vals)
}

// render renders the chart as `helm install` does (with lookup answered from
// r.existing), NOTES.txt aside.
func render(t *testing.T, r release) ([]object, error) {
	t.Helper()
	if r.name == "" {
		r.name = "extauthz"
	}
	if r.namespace == "" {
		r.namespace = "my-app"
	}
	c := loadChart(t)
	vals, err := util.ToRenderValues(c, r.userValues(t), common.ReleaseOptions{Name: r.name, Namespace: r.namespace, Revision: 1, IsInstall: true}, common.DefaultCapabilities)
	if err != nil {
		return nil, err
	}
	sch := runtime.NewScheme()
	if err := corev1.AddToScheme(sch); err != nil {
		t.Fatal(err)
	}
	files, err := engine.RenderWithClientProvider(c, vals, secretsProvider{dynfake.NewSimpleDynamicClient(sch, r.existing...)})
	if err != nil {
		return nil, err
	}
	var names []string
	for name := range files {
		names = append(names, name)
	}
	sort.Strings(names)
	var out []object
	for _, name := range names {
		if strings.HasSuffix(name, "NOTES.txt") || strings.HasPrefix(filepath.Base(name), "_") {
			continue
		}
		for _, d := range deploycheck.Split([]byte(files[name])) {
			kind, err := deploycheck.Kind(d)
			if err != nil {
				t.Fatalf("%s: %v\n%s", name, err, d)
			}
			out = append(out, object{filepath.Base(name), kind, d})
		}
	}
	return out, nil
}

func mustRender(t *testing.T, r release) []object {
	t.Helper()
	objs, err := render(t, r)
	if err != nil {
		t.Fatalf("%s: %v", r.valuesFile, err)
	}
	return objs
}

// installed is a rendered release, every object decoded strictly into its
// type.
type installed struct {
	deployment     *appsv1.Deployment
	service        *corev1.Service
	pdb            *policyv1.PodDisruptionBudget
	serviceAccount *corev1.ServiceAccount
	secrets        []corev1.Secret
	configMaps     []corev1.ConfigMap
	instances      map[string]deploycheck.BTPInstance
	bindings       map[string]deploycheck.BTPBinding
	policies       []*securityv1beta1.AuthorizationPolicy
	policyMeta     []deploycheck.ObjectMeta
	normalised     []map[string]string // the pods whose sidecar an EnvoyFilter makes normalise paths
	filterSpecs    []json.RawMessage
	virtualSvcs    []json.RawMessage
	serviceMonitor *monitoringv1.ServiceMonitor
	rule           *monitoringv1.PrometheusRule
}

func decode(t *testing.T, objs []object) *installed {
	t.Helper()
	in := &installed{instances: map[string]deploycheck.BTPInstance{}, bindings: map[string]deploycheck.BTPBinding{}}
	strict := func(o object, v any) {
		t.Helper()
		if err := deploycheck.Strict(o.yaml, v); err != nil {
			t.Fatalf("%s (%s): %v\n%s", o.file, o.kind, err, o.yaml)
		}
	}
	for _, o := range objs {
		switch o.kind {
		case "apps/v1 Deployment":
			in.deployment = &appsv1.Deployment{}
			strict(o, in.deployment)
		case "v1 Service":
			in.service = &corev1.Service{}
			strict(o, in.service)
		case "policy/v1 PodDisruptionBudget":
			in.pdb = &policyv1.PodDisruptionBudget{}
			strict(o, in.pdb)
		case "v1 ServiceAccount":
			in.serviceAccount = &corev1.ServiceAccount{}
			strict(o, in.serviceAccount)
		case "v1 Secret":
			var s corev1.Secret
			strict(o, &s)
			in.secrets = append(in.secrets, s)
		case "v1 ConfigMap":
			var cm corev1.ConfigMap
			strict(o, &cm)
			in.configMaps = append(in.configMaps, cm)
		case "services.cloud.sap.com/v1 ServiceInstance":
			var si deploycheck.BTPInstance
			strict(o, &si)
			in.instances[si.Metadata.Name] = si
		case "services.cloud.sap.com/v1 ServiceBinding":
			var sb deploycheck.BTPBinding
			strict(o, &sb)
			in.bindings[sb.Metadata.Name] = sb
		case "security.istio.io/v1 AuthorizationPolicy":
			var raw deploycheck.Raw
			strict(o, &raw)
			var ap securityv1beta1.AuthorizationPolicy
			if err := protojson.Unmarshal(raw.Spec, &ap); err != nil {
				t.Fatalf("%s: spec is not an Istio AuthorizationPolicy: %v", o.file, err)
			}
			in.policies = append(in.policies, &ap)
			in.policyMeta = append(in.policyMeta, raw.Metadata)
		case "networking.istio.io/v1alpha3 EnvoyFilter":
			var raw deploycheck.Raw
			strict(o, &raw)
			pods, err := deploycheck.EnvoyFilterNormalises(raw.Spec)
			if err != nil {
				t.Fatalf("%s: %v", o.file, err)
			}
			in.normalised = append(in.normalised, pods)
			in.filterSpecs = append(in.filterSpecs, raw.Spec)
		case "networking.istio.io/v1 VirtualService":
			var raw deploycheck.Raw
			strict(o, &raw)
			var vs networkingv1alpha3.VirtualService
			if err := protojson.Unmarshal(raw.Spec, &vs); err != nil {
				t.Fatalf("%s: spec is not an Istio VirtualService: %v", o.file, err)
			}
			in.virtualSvcs = append(in.virtualSvcs, raw.Spec)
		case "monitoring.coreos.com/v1 ServiceMonitor":
			in.serviceMonitor = &monitoringv1.ServiceMonitor{}
			strict(o, in.serviceMonitor)
		case "monitoring.coreos.com/v1 PrometheusRule":
			in.rule = &monitoringv1.PrometheusRule{}
			strict(o, in.rule)
		default:
			t.Errorf("%s: unexpected %s", o.file, o.kind)
		}
	}
	if in.deployment == nil || in.service == nil {
		t.Fatal("no Deployment or Service rendered")
	}
	return in
}

// valuesFiles are the chart's test values (ci/, as chart-testing reads them).
func valuesFiles(t *testing.T) []string {
	files, err := filepath.Glob(filepath.Join(chartDir, "ci", "*-values.yaml"))
	if err != nil || len(files) < 3 {
		t.Fatalf("ci values files: %v %v", files, err)
	}
	for i, f := range files {
		files[i], _ = filepath.Rel(chartDir, f)
	}
	return files
}

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
	}
	if !normalise && len(in.normalised) > 0 {
		t.Error("istio.pathNormalization false, EnvoyFilters rendered")
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

// TestChartLint runs Helm's lint rules (helm lint) with every ci/ values file.
func TestChartLint(t *testing.T) {
	for _, vf := range valuesFiles(t) {
		vals := release{valuesFile: vf}.userValues(t)
		res := lint.RunAll(chartDir, vals, "my-app", lint.WithKubeVersion(&common.KubeVersion{Version: "v1.33.0", Major: "1", Minor: "33"}))
		for _, m := range res.Messages {
			if m.Severity > support.InfoSev {
				t.Errorf("%s: %v", vf, m)
			}
		}
	}
}

// TestChartSessionSecretKept: the first install generates the session
// secret; an upgrade (the Secret in the cluster) keeps it, whatever the
// values; a second install elsewhere gets another.
func TestChartSessionSecretKept(t *testing.T) {
	vf := "ci/multitenant-xsuaa-values.yaml"
	first := decode(t, mustRender(t, release{valuesFile: vf})).secrets[0]
	again := decode(t, mustRender(t, release{valuesFile: vf})).secrets[0]
	if string(first.Data["secret"]) == string(again.Data["secret"]) {
		t.Fatal("two fresh installs got the same session secret")
	}
	inCluster := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: first.Name, Namespace: "my-app"}, Data: first.Data}
	for range 3 {
		up := decode(t, mustRender(t, release{valuesFile: vf, values: map[string]any{"replicaCount": 3}, existing: []runtime.Object{inCluster}})).secrets[0]
		if string(up.Data["secret"]) != string(first.Data["secret"]) {
			t.Fatalf("upgrade replaced the session secret (everybody logged out): %q -> %q", first.Data["secret"], up.Data["secret"])
		}
	}
	// Another namespace's Secret of the same name is not this release's.
	other := inCluster.DeepCopy()
	other.Namespace = "elsewhere"
	if s := decode(t, mustRender(t, release{valuesFile: vf, existing: []runtime.Object{other}})).secrets[0]; string(s.Data["secret"]) == string(first.Data["secret"]) {
		t.Error("lookup took another namespace's Secret")
	}
}

// TestChartRefuses: what extauthz would refuse at start, the chart refuses
// at install, naming the value.
func TestChartRefuses(t *testing.T) {
	for name, c := range map[string]struct {
		values map[string]any
		want   string
	}{
		"defaults: no host":             {nil, "tenantHostPattern"},
		"both hosts and pattern":        {map[string]any{"tenantHostPattern": "^(.*)\\.a\\.example$", "allowedHosts": []any{"a.example"}}, "not both"},
		"unknown identity service":      {map[string]any{"allowedHosts": []any{"a.example"}, "btp": map[string]any{"identity": map[string]any{"service": "uaa"}}}, "/btp/identity/service"},
		"multitenant without redirect":  {map[string]any{"tenantHostPattern": "^(.*)\\.a\\.example$"}, "redirectURIs"},
		"protect without selector":      {map[string]any{"allowedHosts": []any{"a.example"}, "protect": []any{map[string]any{"name": "x"}}}, "selector"},
		"unknown EXT_SESSION_MGT field": {map[string]any{"allowedHosts": []any{"a.example"}, "extSessionMgt": map[string]any{"instancename": "r"}}, "instancename"},
		"misspelt top-level value":      {map[string]any{"allowedHosts": []any{"a.example"}, "tenantHostpattern": "x"}, "tenantHostpattern"},
	} {
		_, err := render(t, release{values: c.values})
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err %v, want one naming %q", name, err, c.want)
		}
	}
}

// TestChartMatchesKustomize: the chart with ci/multitenant-xsuaa-values.yaml
// (the names of deploy/kyma) renders what deploy/kyma ships: the same pod,
// service, services, policy and EnvoyFilter, apart from Helm's labels.
func TestChartMatchesKustomize(t *testing.T) {
	in := decode(t, mustRender(t, release{valuesFile: "ci/multitenant-xsuaa-values.yaml"}))
	var k []object
	files, _ := filepath.Glob("../kyma/*.yaml")
	for _, f := range files {
		if base := filepath.Base(f); base == "kustomization.yaml" || strings.HasPrefix(base, "istio-") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range deploycheck.Split(b) {
			kind, _ := deploycheck.Kind(d)
			k = append(k, object{filepath.Base(f), kind, d})
		}
	}
	kyma := decode(t, k)

	// The container, but for the labels and the variables only the chart sets.
	kc, hc := kyma.deployment.Spec.Template.Spec.Containers[0], in.deployment.Spec.Template.Spec.Containers[0]
	hc.Image, hc.ImagePullPolicy = kc.Image, kc.ImagePullPolicy
	var env []corev1.EnvVar
	for _, e := range hc.Env {
		switch e.Name {
		case "UAA_SERVICE_NAME":
			continue // the chart names the xsuaa binding; kustomize leaves extauthz to find it by its tag
		case "SESSION_SECRET":
			e.ValueFrom.SecretKeyRef.Name = "extauthz-session"
		case "EXT_SESSION_MGT":
			var m map[string]any
			json.Unmarshal([]byte(e.Value), &m)
			for _, k := range []string{"defaultRetryTimeout", "backOffMultiplier", "rejectUnauthorized", "skipCertHostnameValidation"} {
				delete(m, k) // approuter's defaults, spelt out by the chart
			}
			b, _ := json.Marshal(map[string]any{"instanceName": m["instanceName"], "storageType": m["storageType"], "sessionSecret": m["sessionSecret"]})
			want := map[string]any{}
			json.Unmarshal([]byte(kyma.env("EXT_SESSION_MGT")), &want)
			wb, _ := json.Marshal(want)
			if string(b) != string(wb) || len(m) != 3 {
				t.Errorf("EXT_SESSION_MGT %s, kustomize %s", e.Value, kyma.env("EXT_SESSION_MGT"))
			}
			e.Value = kyma.env("EXT_SESSION_MGT")
		}
		env = append(env, e)
	}
	hc.Env = env
	for i := range hc.VolumeMounts {
		if hc.VolumeMounts[i].Name == "identity" {
			hc.VolumeMounts[i].Name = "xsuaa"
		}
	}
	if a, b := jsonOf(kc), jsonOf(hc); a != b {
		t.Errorf("the container differs from deploy/kyma/deployment.yaml:\n kustomize %s\n helm      %s", a, b)
	}
	kp, hp := kyma.deployment.Spec.Template.Spec, in.deployment.Spec.Template.Spec
	hp.Containers, kp.Containers = nil, nil
	hp.ServiceAccountName = ""
	for i := range hp.Volumes {
		if hp.Volumes[i].Name == "identity" {
			hp.Volumes[i].Name = "xsuaa"
		}
	}
	if a, b := jsonOf(kp), jsonOf(hp); a != b {
		t.Errorf("the pod differs from deploy/kyma/deployment.yaml:\n kustomize %s\n helm      %s", a, b)
	}
	if a, b := jsonOf(kyma.deployment.Spec.Strategy), jsonOf(in.deployment.Spec.Strategy); a != b || *kyma.deployment.Spec.Replicas != *in.deployment.Spec.Replicas {
		t.Errorf("strategy or replicas differ: %s %s", a, b)
	}
	if a, b := jsonOf(kyma.service.Spec.Ports), jsonOf(in.service.Spec.Ports); a != b {
		t.Errorf("service ports differ:\n kustomize %s\n helm      %s", a, b)
	}
	if kyma.pdb.Spec.MinAvailable.String() != in.pdb.Spec.MinAvailable.String() {
		t.Error("PDB differs")
	}
	for name, ki := range kyma.instances {
		hi, ok := in.instances[name]
		if !ok || jsonOf(ki.Spec) != jsonOf(hi.Spec) {
			t.Errorf("ServiceInstance %s:\n kustomize %s\n helm      %s", name, jsonOf(ki.Spec), jsonOf(hi.Spec))
		}
		if jsonOf(kyma.bindings[name].Spec) != jsonOf(in.bindings[name].Spec) {
			t.Errorf("ServiceBinding %s differs", name)
		}
	}
	if len(kyma.instances) != len(in.instances) {
		t.Errorf("services: kustomize %v, helm %v", slices.Collect(maps.Keys(kyma.instances)), slices.Collect(maps.Keys(in.instances)))
	}
	if len(in.policies) != 1 || jsonOf(kyma.policies[0]) != jsonOf(in.policies[0]) {
		t.Errorf("AuthorizationPolicy differs:\n kustomize %s\n helm      %v", jsonOf(kyma.policies[0]), in.policies)
	}
	if len(in.virtualSvcs) != 1 || compactJSON(kyma.virtualSvcs[0]) != compactJSON(in.virtualSvcs[0]) {
		t.Errorf("the back-channel logout VirtualService differs:\n kustomize %s\n helm      %s", kyma.virtualSvcs, in.virtualSvcs)
	}
	if len(in.filterSpecs) != 1 || compactJSON(kyma.filterSpecs[0]) != compactJSON(in.filterSpecs[0]) {
		t.Errorf("EnvoyFilter differs:\n kustomize %s\n helm      %s", kyma.filterSpecs[0], in.filterSpecs)
	}
}

func (in *installed) env(name string) string {
	for _, e := range in.deployment.Spec.Template.Spec.Containers[0].Env {
		if e.Name == name {
			return e.Value
		}
	}
	return ""
}

func jsonOf(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

func compactJSON(b []byte) string {
	var v any
	if err := json.Unmarshal(b, &v); err != nil {
		return string(b)
	}
	return jsonOf(v)
}
