package deploy_test

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/extauthz/extauthz/internal/envoyconfig"
)

func TestDockerfileAndCompose(t *testing.T) {
	df, err := os.ReadFile("../Dockerfile")
	if err != nil {
		t.Fatal(err)
	}
	var last string
	for _, line := range strings.Split(string(df), "\n") {
		if strings.HasPrefix(line, "FROM ") {
			last = line
		}
	}
	if !strings.Contains(last, "distroless/static") && !strings.Contains(last, "scratch") {
		t.Errorf("the final stage %q is not distroless static or scratch", last)
	}
	if !regexp.MustCompile(`(?m)^USER 65532`).Match(df) || !strings.Contains(string(df), "CGO_ENABLED=0") {
		t.Error("the image must run a static binary as a non-root user")
	}

	var compose struct {
		Name     string `json:"name"`
		Services map[string]struct {
			Image       string            `json:"image"`
			Build       string            `json:"build"`
			Command     []string          `json:"command"`
			Environment map[string]string `json:"environment"`
			Volumes     []string          `json:"volumes"`
			Ports       []string          `json:"ports"`
			DependsOn   []string          `json:"depends_on"`
			NetworkMode string            `json:"network_mode"`
			ExtraHosts  []string          `json:"extra_hosts"`
			Restart     string            `json:"restart"`
		} `json:"services"`
	}
	strict(t, "compose/docker-compose.yaml", docs(t, "compose/docker-compose.yaml")[0], &compose)
	for _, s := range []string{"envoy", "extauthz", "redis", "hydra", "app"} {
		if _, ok := compose.Services[s]; !ok {
			t.Errorf("docker-compose.yaml lacks the %s service", s)
		}
	}
	for name, s := range compose.Services {
		for _, d := range s.DependsOn {
			if _, ok := compose.Services[d]; !ok {
				t.Errorf("%s depends on %s, which is not a service", name, d)
			}
		}
		for _, v := range s.Volumes {
			src, _, _ := strings.Cut(v, ":")
			if strings.HasPrefix(src, "./") {
				doc, err := os.ReadFile(filepath.Join("compose", src))
				if err != nil {
					t.Fatalf("%s mounts %s: %v", name, src, err)
				}
				if strings.HasSuffix(src, "envoy.yaml") {
					if _, err := envoyconfig.Validate(doc); err != nil {
						t.Fatalf("compose/%s: %v", src, err)
					}
				}
			}
		}
	}
	if compose.Services["extauthz"].Build != "../.." {
		t.Error("the extauthz service must build the repository's Dockerfile")
	}
	env := compose.Services["extauthz"].Environment
	if v := env["EXTAUTHZ_SESSION_SECRETS"]; !strings.HasPrefix(v, "${EXTAUTHZ_SESSION_SECRETS:?") {
		t.Errorf("the quickstart must take its session secret from the user's environment, not %q", v)
	}
	env["EXTAUTHZ_SESSION_SECRETS"] = secret64
	loadEnv(t, "docker-compose.yaml", env)
}

// TestIstioPathNormalizationChecks: the checks above refuse Istio files
// that lack path normalisation.
