// Package envoyconfig_test validates the Envoy configurations we ship with
// internal/envoyconfig: Envoy's own protos, every typed_config, no
// deprecated field, every cluster defined.
package envoyconfig_test

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/extauthz/extauthz/internal/envoyconfig"
)

func TestShippedConfigs(t *testing.T) {
	files, _ := filepath.Glob("*.yaml")
	if len(files) < 3 {
		t.Fatalf("found %v, want the gRPC, HTTP and sidecar configurations", files)
	}
	for _, f := range files {
		t.Run(f, func(t *testing.T) {
			doc, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			rep, err := envoyconfig.Validate(doc)
			if err != nil {
				t.Fatal(err)
			}
			if rep.ExtAuthzFilters == 0 || rep.Validated < 5 {
				t.Fatalf("found %d ext_authz filters and validated %d typed messages: the walk missed the config", rep.ExtAuthzFilters, rep.Validated)
			}
		})
	}
}
