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
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/anypb"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
	networkingv1alpha3 "istio.io/api/networking/v1alpha3"
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
