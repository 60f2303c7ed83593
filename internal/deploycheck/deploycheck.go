// Package deploycheck holds what the tests of the shipped deployment files
// share (go test ./deploy for the kustomize, Cloud Foundry and compose files,
// deploy/verify for the Helm chart, the dashboard and the alerts): strict
// decoding into the Kubernetes, Istio and SAP BTP operator types, the
// checks every extauthz Deployment passes, and extauthz's configuration
// loader run on a Deployment's environment.
package deploycheck

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	networkingv1alpha3 "istio.io/api/networking/v1alpha3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"

	"github.com/extauthz/extauthz/internal/envoyconfig"
	"github.com/extauthz/extauthz/pkg/config"
)

// Split splits a YAML stream into its non-empty documents.
func Split(b []byte) [][]byte {
	var out [][]byte
	for _, d := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(b), -1) {
		if strings.TrimSpace(regexp.MustCompile(`(?m)^\s*#.*$`).ReplaceAllString(d, "")) != "" {
			out = append(out, []byte(d))
		}
	}
	return out
}

// Strict decodes YAML into v, failing on unknown fields.
func Strict(doc []byte, v any) error {
	return yaml.UnmarshalStrict(doc, v)
}

// Kind is a document's "apiVersion kind".
func Kind(doc []byte) (string, error) {
	var tm struct {
		APIVersion string `json:"apiVersion"`
		Kind       string `json:"kind"`
	}
	if err := yaml.Unmarshal(doc, &tm); err != nil {
		return "", err
	}
	return tm.APIVersion + " " + tm.Kind, nil
}

// ObjectMeta is the metadata the non-Kubernetes-core resources may carry.
type ObjectMeta struct {
	Name        string            `json:"name"`
	Namespace   string            `json:"namespace,omitempty"`
	Labels      map[string]string `json:"labels,omitempty"`
	Annotations map[string]string `json:"annotations,omitempty"`
}

// Raw is a resource whose spec is decoded apart (into Istio's protos).
type Raw struct {
	APIVersion string          `json:"apiVersion"`
	Kind       string          `json:"kind"`
	Metadata   ObjectMeta      `json:"metadata"`
	Spec       json.RawMessage `json:"spec"`
}

// BTPInstance is the SAP BTP service operator's ServiceInstance.
type BTPInstance struct {
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Metadata   ObjectMeta `json:"metadata"`
	Spec       struct {
		ServiceOfferingName string         `json:"serviceOfferingName"`
		ServicePlanName     string         `json:"servicePlanName"`
		Parameters          map[string]any `json:"parameters,omitempty"`
	} `json:"spec"`
}

// BTPBinding is the SAP BTP service operator's ServiceBinding.
type BTPBinding struct {
	APIVersion string     `json:"apiVersion"`
	Kind       string     `json:"kind"`
	Metadata   ObjectMeta `json:"metadata"`
	Spec       struct {
		ServiceInstanceName string `json:"serviceInstanceName"`
		SecretName          string `json:"secretName"`
	} `json:"spec"`
}

// LoadEnv runs extauthz's configuration loader on env.
func LoadEnv(env map[string]string) (*config.Config, error) {
	return config.Load(nil, func(k string) string { return env[k] }, &bytes.Buffer{})
}

// Secret64 stands for a session secret created apart.
const Secret64 = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

// writeFiles writes a binding folder as the BTP service operator does: one
// file per property, and .metadata saying which are JSON.
func writeFiles(dir string, files map[string]string, metadata string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for f, v := range files {
		if err := os.WriteFile(filepath.Join(dir, f), []byte(v), 0o644); err != nil {
			return err
		}
	}
	return os.WriteFile(filepath.Join(dir, ".metadata"), []byte(metadata), 0o644)
}

// WriteRedisBinding writes a redis-cache binding folder (Redis at redis.internal:6379).
func WriteRedisBinding(dir string) error {
	return writeFiles(dir, map[string]string{"hostname": "redis.internal", "port": "6379", "password": "pw", "tls": "true", "type": "redis-cache"},
		`{"metaDataProperties":[{"name":"type","format":"text"}],
		"credentialProperties":[{"name":"hostname","format":"text"},{"name":"port","format":"json"},{"name":"password","format":"text"},{"name":"tls","format":"json"}]}`)
}

// WriteXSUAABinding writes an xsuaa binding folder (tenant mode shared).
func WriteXSUAABinding(dir string) error {
	return writeFiles(dir, map[string]string{"clientid": "sb-my-app!t1", "clientsecret": "s", "url": "https://provider.authentication.eu10.hana.ondemand.com",
		"uaadomain": "authentication.eu10.hana.ondemand.com", "xsappname": "my-app!t1", "tenantmode": "shared", "identityzone": "provider", "type": "xsuaa", "tags": `["xsuaa"]`},
		`{"metaDataProperties":[{"name":"type","format":"text"},{"name":"tags","format":"json"}],
		"credentialProperties":[{"name":"clientid","format":"text"},{"name":"clientsecret","format":"text"},{"name":"url","format":"text"},{"name":"uaadomain","format":"text"},{"name":"xsappname","format":"text"},{"name":"tenantmode","format":"text"},{"name":"identityzone","format":"text"}]}`)
}

// WriteIdentityBinding writes an SAP Cloud Identity Services (identity) binding folder.
func WriteIdentityBinding(dir string) error {
	return writeFiles(dir, map[string]string{"clientid": "c0ffee", "clientsecret": "s", "url": "https://shop.accounts.ondemand.com",
		"domain": "accounts.ondemand.com", "type": "identity"},
		`{"metaDataProperties":[{"name":"type","format":"text"}],
		"credentialProperties":[{"name":"clientid","format":"text"},{"name":"clientsecret","format":"text"},{"name":"url","format":"text"},{"name":"domain","format":"text"}]}`)
}

// PodProblems are what every extauthz Deployment must do: probes on
// /healthz and /readyz, non-root and read-only without privilege
// escalation, resource requests, the three ports.
func PodProblems(d *appsv1.Deployment) []string {
	var probs []string
	pod := d.Spec.Template.Spec
	if len(pod.Containers) != 1 {
		return []string{fmt.Sprintf("%d containers, want extauthz alone", len(pod.Containers))}
	}
	c := pod.Containers[0]
	if c.LivenessProbe == nil || c.LivenessProbe.HTTPGet == nil || c.LivenessProbe.HTTPGet.Path != "/healthz" ||
		c.ReadinessProbe == nil || c.ReadinessProbe.HTTPGet == nil || c.ReadinessProbe.HTTPGet.Path != "/readyz" {
		probs = append(probs, "probes must be /healthz (liveness) and /readyz (readiness)")
	}
	if pod.SecurityContext == nil || pod.SecurityContext.RunAsNonRoot == nil || !*pod.SecurityContext.RunAsNonRoot || c.SecurityContext == nil ||
		c.SecurityContext.ReadOnlyRootFilesystem == nil || !*c.SecurityContext.ReadOnlyRootFilesystem ||
		c.SecurityContext.AllowPrivilegeEscalation == nil || *c.SecurityContext.AllowPrivilegeEscalation {
		probs = append(probs, "the pod must run as non-root, read-only, without privilege escalation")
	}
	if c.Resources.Requests.Cpu().IsZero() || c.Resources.Requests.Memory().IsZero() {
		probs = append(probs, "resource requests missing")
	}
	ports := map[string]int32{}
	for _, p := range c.Ports {
		ports[p.Name] = p.ContainerPort
	}
	if ports["grpc"] != 9001 || ports["http"] != 9002 || ports["admin"] != 9003 || len(ports) != 3 {
		probs = append(probs, fmt.Sprintf("container ports %v, want grpc 9001, http 9002, admin 9003", ports))
	}
	if d.Spec.Template.Annotations["sidecar.istio.io/inject"] != "false" {
		probs = append(probs, "extauthz is the mesh's authorizer: sidecar.istio.io/inject must be \"false\"")
	}
	return probs
}

// Env is a container's environment as the pod sees it: secretKeyRef
// values from secret, $(VAR) expanded from earlier variables as Kubernetes
// does.
func Env(c corev1.Container, secret func(*corev1.SecretKeySelector) string) map[string]string {
	env := map[string]string{}
	for _, e := range c.Env {
		v := e.Value
		if e.ValueFrom != nil && e.ValueFrom.SecretKeyRef != nil {
			v = secret(e.ValueFrom.SecretKeyRef)
		}
		for k, val := range env {
			v = strings.ReplaceAll(v, "$("+k+")", val)
		}
		env[e.Name] = v
	}
	return env
}

// MountBindings lays out, under root, the binding folders a container
// mounts under SERVICE_BINDING_ROOT, with write(rel, dir) filling each in,
// and returns them (relative to SERVICE_BINDING_ROOT) by volume name.
func MountBindings(c corev1.Container, bindingRoot, root string, write func(rel, dir string) error) (map[string]string, error) {
	mounted := map[string]string{}
	for _, m := range c.VolumeMounts {
		rel, ok := strings.CutPrefix(m.MountPath, bindingRoot+"/")
		if !ok {
			continue
		}
		mounted[m.Name] = rel
		if err := write(rel, filepath.Join(root, rel)); err != nil {
			return nil, err
		}
	}
	return mounted, nil
}

// GraceProblem says whether Kubernetes could SIGKILL extauthz before it
// exits on SIGTERM: the drain delay, then at most the shutdown timeout
// (and a second for the admin listener).
func GraceProblem(d *appsv1.Deployment, cfg *config.Config) string {
	grace := 30 * time.Second // Kubernetes' default
	if g := d.Spec.Template.Spec.TerminationGracePeriodSeconds; g != nil {
		grace = time.Duration(*g) * time.Second
	}
	if need := cfg.DrainDelay + cfg.ShutdownTimeout + time.Second; grace <= need {
		return fmt.Sprintf("terminationGracePeriodSeconds %v, not above drain delay %v + shutdown timeout %v + 1s", grace, cfg.DrainDelay, cfg.ShutdownTimeout)
	}
	return ""
}

// MeshPathNormalization checks that an Istio mesh config gives every proxy
// one spelling of each path: DECODE_AND_MERGE_SLASHES.
func MeshPathNormalization(mc *meshv1alpha1.MeshConfig) error {
	if got := mc.GetPathNormalization().GetNormalization(); got != meshv1alpha1.MeshConfig_ProxyPathNormalization_DECODE_AND_MERGE_SLASHES {
		return fmt.Errorf("meshConfig.pathNormalization.normalization is %v, want DECODE_AND_MERGE_SLASHES", got)
	}
	return nil
}

// EnvoyFilterNormalises decodes an EnvoyFilter's spec and checks that it
// merges into the HttpConnectionManager of the inbound sidecar listener of
// the workloads it selects (which it returns) the dropping of headers whose
// names hold "_" (envoyconfig.UnderscoreHeaders), and says whether it
// merges path normalisation too (envoyconfig.PathNormalization).
func EnvoyFilterHardens(spec []byte) (pods map[string]string, paths bool, err error) {
	var ef networkingv1alpha3.EnvoyFilter
	if err := protojson.Unmarshal(spec, &ef); err != nil {
		return nil, false, fmt.Errorf("spec is not an Istio EnvoyFilter: %w", err)
	}
	labels := ef.GetWorkloadSelector().GetLabels()
	if len(labels) == 0 {
		return nil, false, fmt.Errorf("no workloadSelector: it must select the app's pods as the AuthorizationPolicy does")
	}
	for _, p := range ef.GetConfigPatches() {
		if p.GetApplyTo() != networkingv1alpha3.EnvoyFilter_NETWORK_FILTER || p.GetMatch().GetContext() != networkingv1alpha3.EnvoyFilter_SIDECAR_INBOUND ||
			p.GetMatch().GetListener().GetFilterChain().GetFilter().GetName() != "envoy.filters.network.http_connection_manager" ||
			p.GetPatch().GetOperation() != networkingv1alpha3.EnvoyFilter_Patch_MERGE {
			continue
		}
		j, err := protojson.Marshal(p.GetPatch().GetValue())
		if err != nil {
			return nil, false, err
		}
		var value struct {
			TypedConfig json.RawMessage `json:"typed_config"`
		}
		if err := json.Unmarshal(j, &value); err != nil {
			return nil, false, err
		}
		var a anypb.Any
		if err := protojson.Unmarshal(value.TypedConfig, &a); err != nil {
			return nil, false, fmt.Errorf("patch: typed_config: %w", err)
		}
		var hcm hcmv3.HttpConnectionManager
		if err := a.UnmarshalTo(&hcm); err != nil {
			return nil, false, fmt.Errorf("patch: typed_config is not an HttpConnectionManager: %w", err)
		}
		if err := envoyconfig.UnderscoreHeaders(&hcm); err != nil {
			return nil, false, fmt.Errorf("patch: %w", err)
		}
		return labels, envoyconfig.PathNormalization(&hcm) == nil, nil
	}
	return nil, false, fmt.Errorf("no MERGE patch of the SIDECAR_INBOUND http_connection_manager")
}
