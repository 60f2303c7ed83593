package binding

import (
	"encoding/base64"
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
)

const testCA = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"

func TestParseVCAPApprouterDocs(t *testing.T) {
	doc, err := os.ReadFile("testdata/vcap-approuter-docs.json")
	if err != nil {
		t.Fatal(err)
	}
	bs, err := ParseVCAP(string(doc))
	if err != nil {
		t.Fatal(err)
	}
	b, err := ByName(bs, "my-redis")
	if err != nil {
		t.Fatal(err)
	}
	if b.Label != "redis-cache" || !b.HasTag("cache") {
		t.Fatalf("binding = %+v", b)
	}
	r, err := RedisCredentials(b)
	if err != nil {
		t.Fatal(err)
	}
	want := Redis{Addrs: []string{"master.rg-12345678.cache.amazonaws.com:3283"}, Password: "pw-from-broker", TLS: true}
	if !reflect.DeepEqual(r, want) {
		t.Fatalf("got %+v\nwant %+v", r, want)
	}
	if _, err := ByName(bs, "other"); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), "my-redis") {
		t.Fatalf("ByName(other): %v (want ErrNotFound listing the bound names)", err)
	}
}

func TestByBindingName(t *testing.T) {
	bs, err := ParseVCAP(`{"redis-cache":[{"name":"sessions","binding_name":"sessions","instance_name":"inst","credentials":{"hostname":"h","port":"1"}}]}`)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range []string{"sessions", "inst"} {
		if _, err := ByName(bs, n); err != nil {
			t.Errorf("ByName(%q): %v", n, err)
		}
	}
}

func TestRedisCredentialShapes(t *testing.T) {
	ca := base64.StdEncoding.EncodeToString([]byte(testCA))
	tests := []struct {
		name  string
		creds map[string]any
		want  Redis
		err   string
	}{
		{"port as string, tls as string",
			map[string]any{"hostname": "h", "port": "6380", "password": "p", "tls": "true"},
			Redis{Addrs: []string{"h:6380"}, Password: "p", TLS: true}, ""},
		{"tls object means on",
			map[string]any{"hostname": "h", "port": 1.0, "tls": map[string]any{"ca_base64": ca}},
			Redis{Addrs: []string{"h:1"}, TLS: true, CA: []byte(testCA)}, ""},
		{"tls object disabled",
			map[string]any{"hostname": "h", "port": 1.0, "tls": map[string]any{"enabled": false}},
			Redis{Addrs: []string{"h:1"}}, ""},
		{"only uri",
			map[string]any{"uri": "rediss://user1:secret@r.example:7000"},
			Redis{Addrs: []string{"r.example:7000"}, Username: "user1", Password: "secret", TLS: true}, ""},
		{"username and ca_base64",
			map[string]any{"hostname": "h", "port": 1.0, "username": "u", "ca_base64": ca, "tls": true},
			Redis{Addrs: []string{"h:1"}, Username: "u", TLS: true, CA: []byte(testCA)}, ""},
		{"cluster mode as string",
			map[string]any{"hostname": "cfg", "port": 1.0, "cluster_mode": "true"},
			Redis{Addrs: []string{"cfg:1"}, Cluster: true}, ""},
		{"sentinel nodes as objects, master from uri",
			map[string]any{"uri": "redis://:pw@ignored:1#primary", "sentinel_nodes": []any{
				map[string]any{"hostname": "s1", "port": 26379.0}, map[string]any{"hostname": "s2", "port": "26379"}}},
			Redis{Addrs: []string{"s1:26379", "s2:26379"}, Password: "pw", MasterName: "primary"}, ""},
		{"sentinel nodes as JSON string, default master",
			map[string]any{"password": "pw", "sentinel_nodes": `["s1:26379","s2:26379"]`},
			Redis{Addrs: []string{"s1:26379", "s2:26379"}, Password: "pw", MasterName: "mymaster"}, ""},
		{"no host", map[string]any{"password": "p"}, Redis{}, "credentials.hostname: missing (and no uri or sentinel_nodes)"},
		{"bad port", map[string]any{"hostname": "h", "port": "http"}, Redis{}, `credentials.port: "http" is not a port`},
		{"port out of range", map[string]any{"hostname": "h", "port": 70000.0}, Redis{}, "credentials.port: 70000 is not a port"},
		{"bad tls", map[string]any{"hostname": "h", "tls": "yes"}, Redis{}, `credentials.tls: "yes" is not true or false`},
		{"bad uri", map[string]any{"uri": "http://h:1"}, Redis{}, "credentials.uri: must be redis://host:port or rediss://host:port"},
		{"bad ca", map[string]any{"hostname": "h", "ca_base64": "!!"}, Redis{}, "credentials.ca_base64: not base64"},
		{"ca not PEM", map[string]any{"hostname": "h", "ca_base64": base64.StdEncoding.EncodeToString([]byte("x"))}, Redis{}, "credentials.ca_base64: does not hold a PEM certificate"},
		{"bad sentinel", map[string]any{"sentinel_nodes": []any{"nohostport"}}, Redis{}, `credentials.sentinel_nodes: [0]: "nohostport" is not host:port`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := RedisCredentials(Binding{Name: "r", Credentials: tt.creds})
			if tt.err != "" {
				if err == nil || err.Error() != tt.err {
					t.Fatalf("err = %v, want %q", err, tt.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Fatalf("got %+v\nwant %+v", got, tt.want)
			}
		})
	}
}

func TestParseVCAPErrors(t *testing.T) {
	for doc, want := range map[string]string{
		`[]`:                         "not a JSON object of service lists",
		`{"redis-cache":{}}`:         "not a JSON object of service lists",
		`{"redis-cache":[{}]}`:       "redis-cache[0]: entry has no name",
		`{"x":[{"name":"a"}]} trail`: "not a JSON object of service lists",
	} {
		if _, err := ParseVCAP(doc); err == nil || !strings.HasPrefix(err.Error(), want) {
			t.Errorf("ParseVCAP(%s): err = %v, want prefix %q", doc, err, want)
		}
	}
}

func FuzzParseVCAP(f *testing.F) {
	doc, _ := os.ReadFile("testdata/vcap-approuter-docs.json")
	f.Add(string(doc))
	f.Add(`{"redis-cache":[{"name":"r","credentials":{"sentinel_nodes":"[{\"hostname\":\"a\",\"port\":\"1\"}]","tls":{"enabled":true}}}]}`)
	f.Fuzz(func(t *testing.T, doc string) {
		bs, err := ParseVCAP(doc)
		if err != nil {
			return
		}
		for _, b := range bs {
			r, err := RedisCredentials(b)
			if err == nil && len(r.Addrs) == 0 {
				t.Fatalf("credentials accepted without an address: %+v", b.Credentials)
			}
		}
	})
}

// TestParseDirAsTheBTPOperatorWritesIt: a binding folder yields the same
// typed credentials as the VCAP_SERVICES entry of the same service.
func TestParseDirAsTheBTPOperatorWritesIt(t *testing.T) {
	bs, err := ParseDir("testdata/bindings")
	if err != nil {
		t.Fatal(err)
	}
	if len(bs) != 2 {
		t.Fatalf("%d bindings, want 2", len(bs))
	}
	r, err := ByName(bs, "my-redis")
	if err != nil {
		t.Fatal(err)
	}
	if r.Label != "redis-cache" || !r.HasTag("cache") || r.InstanceName != "my-redis-instance" {
		t.Fatalf("redis binding metadata: %+v", r)
	}
	if _, ok := r.Credentials["type"]; ok {
		t.Fatal("metadata files must not be credentials")
	}
	got, err := RedisCredentials(r)
	if err != nil {
		t.Fatal(err)
	}
	want := Redis{Addrs: []string{"redis.example.internal:6379"}, Password: "redis-pw", TLS: true}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %+v, want %+v", got, want)
	}
	x, _ := ByName(bs, "my-xsuaa")
	if x.Label != "xsuaa" || x.Credentials["xsappname"] != "myapp!t123" {
		t.Fatalf("xsuaa binding: %+v", x)
	}
}

func TestParseDirErrors(t *testing.T) {
	if _, err := ParseDir("testdata/none"); err == nil {
		t.Fatal("a missing root must be an error")
	}
	dir := t.TempDir()
	os.MkdirAll(dir+"/bad", 0o755)
	os.WriteFile(dir+"/bad/.metadata", []byte(`{"credentialProperties":[{"name":"port","format":"json"}]}`), 0o644)
	os.WriteFile(dir+"/bad/port", []byte("not json"), 0o644)
	if _, err := ParseDir(dir); err == nil || !strings.Contains(err.Error(), "bad: port: .metadata says JSON") {
		t.Fatalf("err = %v", err)
	}
}

func FuzzParseDirFile(f *testing.F) {
	f.Add(`{"credentialProperties":[{"name":"tls","format":"json"}]}`, "true")
	f.Add(`{`, "x")
	f.Fuzz(func(t *testing.T, meta, value string) {
		dir := t.TempDir()
		os.MkdirAll(dir+"/b", 0o755)
		os.WriteFile(dir+"/b/.metadata", []byte(meta), 0o644)
		os.WriteFile(dir+"/b/tls", []byte(value), 0o644)
		bs, err := ParseDir(dir)
		if err == nil && len(bs) == 1 {
			_, _ = RedisCredentials(bs[0]) // must not panic
		}
	})
}

func TestXSUAACredentials(t *testing.T) {
	doc, _ := os.ReadFile("testdata/vcap-approuter-docs.json")
	bs, err := ParseVCAP(string(doc))
	if err != nil {
		t.Fatal(err)
	}
	b, ok := ByTag(bs, "xsuaa")
	if !ok {
		t.Fatal("no binding tagged xsuaa")
	}
	x, err := XSUAACredentials(b)
	if err != nil {
		t.Fatal(err)
	}
	if x.ClientID != "sb-myapp!t123" || x.UAADomain != "authentication.eu10.hana.ondemand.com" || x.TenantMode != "shared" || x.XSAppName != "myapp!t123" {
		t.Fatalf("%+v", x)
	}
	for name, tc := range map[string]struct {
		creds map[string]any
		err   string
	}{
		"x509 without key": {map[string]any{"clientid": "c", "url": "https://p.a", "uaadomain": "a", "credential-type": "x509", "certificate": "PEM", "certurl": "https://p.cert.a"},
			"credentials: credential-type x509 needs certificate, key and certurl"},
		"no secret": {map[string]any{"clientid": "c", "url": "https://p.a", "uaadomain": "a"}, "credentials.clientsecret: missing"},
		"nothing":   {map[string]any{}, "credentials.clientid: missing\ncredentials.clientsecret: missing\ncredentials.uaadomain: missing\ncredentials.url: missing"},
	} {
		if _, err := XSUAACredentials(Binding{Name: "x", Credentials: tc.creds}); err == nil || err.Error() != tc.err {
			t.Errorf("%s: err = %v, want %q", name, err, tc.err)
		}
	}
}
