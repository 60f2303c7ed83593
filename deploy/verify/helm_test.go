package verify_test

import (
	"encoding/json"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/common/util"
	chart "helm.sh/helm/v4/pkg/chart/v2"
	"helm.sh/helm/v4/pkg/chart/v2/loader"
	"helm.sh/helm/v4/pkg/engine"
	networkingv1alpha3 "istio.io/api/networking/v1alpha3"
	securityv1beta1 "istio.io/api/security/v1beta1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/dynamic"
	dynfake "k8s.io/client-go/dynamic/fake"

	"github.com/extauthz/extauthz/internal/deploycheck"
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
	hardened       []map[string]string // the pods whose sidecar an EnvoyFilter makes drop headers with "_"
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
			pods, paths, err := deploycheck.EnvoyFilterHardens(raw.Spec)
			if err != nil {
				t.Fatalf("%s: %v", o.file, err)
			}
			in.hardened = append(in.hardened, pods)
			if paths {
				in.normalised = append(in.normalised, pods)
			}
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
