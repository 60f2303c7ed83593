// Package envoyconfig_test validates the Envoy configurations we ship with
// internal/envoyconfig: Envoy's own protos, every typed_config, no
// deprecated field, every cluster defined.
package envoyconfig_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

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

// TestConfigWithoutPathNormalisationFails: a configuration whose
// HttpConnectionManager lacks any of normalize_path, merge_slashes or a safe
// path_with_escaped_slashes_action is refused, naming the listener.
func TestConfigWithoutPathNormalisationFails(t *testing.T) {
	doc, err := os.ReadFile("front-proxy-http.yaml")
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		change func(hcm map[string]any)
		ok     bool
		want   string // in the error
	}{
		{"as shipped", func(map[string]any) {}, true, ""},
		{"headers with underscores rejected", func(h map[string]any) {
			h["common_http_protocol_options"] = map[string]any{"headers_with_underscores_action": "REJECT_REQUEST"}
		}, true, ""},
		{"headers with underscores allowed", func(h map[string]any) {
			h["common_http_protocol_options"] = map[string]any{"headers_with_underscores_action": "ALLOW"}
		}, false, "underscores"},
		{"no headers_with_underscores_action", func(h map[string]any) { delete(h, "common_http_protocol_options") }, false, "underscores"},
		{"unescape and redirect", func(h map[string]any) { h["path_with_escaped_slashes_action"] = "UNESCAPE_AND_REDIRECT" }, true, ""},
		{"no normalize_path", func(h map[string]any) { delete(h, "normalize_path") }, false, "normalised"},
		{"normalize_path false", func(h map[string]any) { h["normalize_path"] = false }, false, "normalised"},
		{"no merge_slashes", func(h map[string]any) { delete(h, "merge_slashes") }, false, "normalised"},
		{"merge_slashes false", func(h map[string]any) { h["merge_slashes"] = false }, false, "normalised"},
		{"no escaped slashes action", func(h map[string]any) { delete(h, "path_with_escaped_slashes_action") }, false, "normalised"},
		{"escaped slashes kept", func(h map[string]any) { h["path_with_escaped_slashes_action"] = "KEEP_UNCHANGED" }, false, "normalised"},
		{"escaped slashes forwarded", func(h map[string]any) { h["path_with_escaped_slashes_action"] = "UNESCAPE_AND_FORWARD" }, false, "normalised"},
		{"none of them", func(h map[string]any) {
			delete(h, "normalize_path")
			delete(h, "merge_slashes")
			delete(h, "path_with_escaped_slashes_action")
		}, false, "normalised"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var cfg map[string]any
			if err := yaml.Unmarshal(doc, &cfg); err != nil {
				t.Fatal(err)
			}
			l := cfg["static_resources"].(map[string]any)["listeners"].([]any)[0].(map[string]any)
			l["name"] = "public-ingress"
			f := l["filter_chains"].([]any)[0].(map[string]any)["filters"].([]any)[0].(map[string]any)
			tt.change(f["typed_config"].(map[string]any))
			changed, err := yaml.Marshal(cfg)
			if err != nil {
				t.Fatal(err)
			}
			_, err = envoyconfig.Validate(changed)
			switch {
			case tt.ok && err != nil:
				t.Fatalf("refused: %v", err)
			case !tt.ok && err == nil:
				t.Fatal("accepted a configuration that does not normalise paths")
			case !tt.ok && (!strings.Contains(err.Error(), `listener "public-ingress"`) || !strings.Contains(err.Error(), tt.want)):
				t.Fatalf("the error does not name the listener and the problem: %v", err)
			}
		})
	}
}

// A filter that does not send extauthz a header it reads fails: without
// sec-fetch-site, for one, every cross-site logout would look same-origin.
func TestConfigWithoutAReadHeaderFails(t *testing.T) {
	doc, err := os.ReadFile("front-proxy-grpc.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for _, h := range []string{"sec-fetch-site", "cookie", "x-csrf-token"} {
		re := regexp.MustCompile(`(?m)^ *- exact: ` + h + `\n`)
		if !re.Match(doc) {
			t.Fatalf("front-proxy-grpc.yaml does not send %s", h)
		}
		if _, err := envoyconfig.Validate(re.ReplaceAll(doc, nil)); err == nil || !strings.Contains(err.Error(), h) {
			t.Errorf("without %s: %v, want an error naming it", h, err)
		}
	}
}

// TestConfigWithoutBackchannelRouteFails: the back-channel logout needs its
// body: a configuration that does not route it so is refused.
func TestConfigWithoutBackchannelRouteFails(t *testing.T) {
	for _, f := range []string{"front-proxy-grpc.yaml", "front-proxy-http.yaml"} {
		doc, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		rep, err := envoyconfig.Validate(doc)
		if err != nil || rep.Backchannel == "" {
			t.Fatalf("%s as shipped: %v, %+v", f, err, rep)
		}
		for _, mutate := range []func(string) string{
			func(s string) string { return strings.Replace(s, "path: /logout/backchannel", "path: /elsewhere", 1) },
			func(s string) string {
				return strings.Replace(s, "with_request_body: { max_request_bytes: 65536 }", "disable_request_body_buffering: true", 1)
			},
		} {
			bad := mutate(string(doc))
			if bad == string(doc) {
				continue
			}
			if _, err := envoyconfig.Validate([]byte(bad)); err == nil || !strings.Contains(err.Error(), "back-channel") {
				t.Errorf("%s without its back-channel route: err = %v", f, err)
			}
		}
	}
}

// A body buffered beyond what extauthz accepts in a CheckRequest would fail
// every check on that route (RESOURCE_EXHAUSTED): the test refuses it.
func TestConfigWithALargerBodyFails(t *testing.T) {
	doc, err := os.ReadFile("front-proxy-grpc.yaml")
	if err != nil {
		t.Fatal(err)
	}
	bad := strings.Replace(string(doc), "with_request_body: { max_request_bytes: 65536 }", "with_request_body: { max_request_bytes: 1048576 }", 1)
	if bad == string(doc) {
		t.Fatal("front-proxy-grpc.yaml has no with_request_body of 65536 bytes")
	}
	if _, err := envoyconfig.Validate([]byte(bad)); err == nil || !strings.Contains(err.Error(), "max_request_bytes 1048576") {
		t.Errorf("a 1 MiB with_request_body: err = %v", err)
	}
}
