package config

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestPrecedenceOfEverySource sets one setting in every source it has, adding one source
// at a time from the lowest to the highest, and checks that each wins over
// the ones before: the order README.md's Configuration section states.
func TestPrecedenceOfEverySource(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	sec := func(c byte) string { return strings.Repeat(string(c)+"-0123456789abcd", 4) }
	xsApp := write("xs-app.json", `{"sessionTimeout": 20, "logout": {"logoutEndpoint": "/xs/logout"}}`)
	yamlFile := write("extauthz.yaml", "session-timeout: 25m\nsession-secrets: "+sec('y')+"\nlogout-path: /yaml/logout\n")
	secretFile := write("secrets", sec('f')+"\n")
	vcap := `{"redis-cache":[{"name":"my-redis","credentials":{"hostname":"h","port":6379}}]}`

	type layer struct {
		name string
		env  []string // variables this source adds
		args []string // flags this source adds
	}
	type want struct {
		timeout  time.Duration
		secret   string
		logout   string
		origin   string // of session-timeout
		secretOf string // origin of session-secrets
	}
	layers := []struct {
		layer
		want
	}{
		{layer{"defaults", nil, nil}, want{15 * time.Minute, "", "/logout", "default session-timeout", "default session-secrets"}},
		{layer{"xs-app.json", []string{"EXTAUTHZ_XS_APP", xsApp}, nil},
			want{20 * time.Minute, "", "/xs/logout", xsApp + " sessionTimeout", "default session-secrets"}},
		{layer{"YAML file", []string{"EXTAUTHZ_CONFIG", yamlFile}, nil},
			want{25 * time.Minute, sec('y'), "/yaml/logout", yamlFile + ": session-timeout", yamlFile + ": session-secrets"}},
		{layer{"approuter's EXT_SESSION_MGT and bindings", []string{"EXT_SESSION_MGT",
			`{"instanceName":"my-redis","storageType":"redis","sessionSecret":"` + sec('m') + `"}`, "VCAP_SERVICES", vcap}, nil},
			want{25 * time.Minute, sec('m'), "/yaml/logout", yamlFile + ": session-timeout", "EXT_SESSION_MGT.sessionSecret"}},
		{layer{"environment variables", []string{"SESSION_TIMEOUT", "30", "EXTAUTHZ_SESSION_SECRETS", sec('e'), "EXTAUTHZ_LOGOUT_PATH", "/env/logout"}, nil},
			want{30 * time.Minute, sec('e'), "/env/logout", "SESSION_TIMEOUT", "EXTAUTHZ_SESSION_SECRETS"}},
		{layer{"<ENV>_FILE", []string{"EXTAUTHZ_SESSION_SECRETS_FILE", secretFile}, nil},
			want{30 * time.Minute, sec('f'), "/env/logout", "SESSION_TIMEOUT", "EXTAUTHZ_SESSION_SECRETS_FILE"}},
		{layer{"flags", nil, []string{"--session-timeout", "35m", "--session-secrets", sec('a'), "--logout-path", "/flag/logout"}},
			want{35 * time.Minute, sec('a'), "/flag/logout", "--session-timeout", "--session-secrets"}},
	}
	var envs, args []string
	for _, l := range layers {
		envs, args = append(envs, l.env...), append(args, l.args...)
		c, err := Load(args, env(envs...), &bytes.Buffer{})
		if err != nil {
			t.Fatalf("up to %s: %v", l.name, err)
		}
		secret := ""
		if len(c.SessionSecrets) > 0 {
			secret = string(c.SessionSecrets[0])
		}
		got := want{c.SessionTimeout, secret, c.LogoutPath, c.Origin("session-timeout"), c.Origin("session-secrets")}
		if got != l.want {
			t.Errorf("up to %s:\n got %+v\nwant %+v", l.name, got, l.want)
		}
	}
}
