package verify_test

import (
	"encoding/json"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"helm.sh/helm/v4/pkg/chart/common"
	"helm.sh/helm/v4/pkg/chart/v2/lint"
	"helm.sh/helm/v4/pkg/chart/v2/lint/support"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/extauthz/extauthz/internal/deploycheck"
)

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
