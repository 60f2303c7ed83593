// Package deploy_test checks the deployment files we ship: every Kubernetes
// object decodes strictly into its Go type (unknown fields fail), Istio
// resources into Istio's protos, the rest against the fields the README
// promises; and the configuration each file gives extauthz is accepted by
// extauthz's own loader. The checks shared with deploy/verify (the Helm
// chart) are in internal/deploycheck.
package deploy_test

import (
	"errors"
	"os"
	"testing"

	"github.com/extauthz/extauthz/internal/deploycheck"
	"github.com/extauthz/extauthz/pkg/config"
)

// docs splits a YAML file into its documents.
func docs(t *testing.T, file string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return deploycheck.Split(b)
}

// strict decodes YAML into v, failing on unknown fields.
func strict(t *testing.T, file string, doc []byte, v any) {
	t.Helper()
	if err := deploycheck.Strict(doc, v); err != nil {
		t.Fatalf("%s: %v", file, err)
	}
}

func kindOf(t *testing.T, doc []byte) string {
	k, err := deploycheck.Kind(doc)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

type (
	objectMeta  = deploycheck.ObjectMeta
	btpInstance = deploycheck.BTPInstance
	btpBinding  = deploycheck.BTPBinding
)

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
	c, err := deploycheck.LoadEnv(env)
	if err != nil {
		t.Fatalf("%s: extauthz rejects this configuration: %v", where, err)
	}
	return c
}

const secret64 = deploycheck.Secret64

var meshPathNormalization = deploycheck.MeshPathNormalization

// envoyFilterNormalises checks a shipped EnvoyFilter: it drops headers with
// "_" in their names and normalises paths; it returns the pods it selects.
func envoyFilterNormalises(spec []byte) (map[string]string, error) {
	pods, paths, err := deploycheck.EnvoyFilterHardens(spec)
	if err == nil && !paths {
		err = errors.New("the EnvoyFilter does not normalise paths (normalize_path, merge_slashes, path_with_escaped_slashes_action: REJECT_REQUEST)")
	}
	return pods, err
}
