package binding

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// metadata is the .metadata file the SAP BTP service operator writes into
// each binding folder: which files hold credentials and which are JSON.
type metadata struct {
	MetaDataProperties   []property `json:"metaDataProperties"`
	CredentialProperties []property `json:"credentialProperties"`
}

type property struct {
	Name      string `json:"name"`
	Format    string `json:"format"` // text or json
	Container bool   `json:"container"`
}

// maxFile bounds what one binding file may hold.
const maxFile = 1 << 20

// ParseDir reads Kubernetes service bindings (servicebinding.io, as the SAP
// BTP service operator writes them on Kyma): one folder per binding under
// root, one file per credential, "type", "label", "tags", "instance_name"
// files, and ".metadata" saying which files are JSON. The folder name is the
// binding's name.
func ParseDir(root string) ([]Binding, error) {
	entries, err := os.ReadDir(root)
	if err != nil {
		return nil, err
	}
	var out []Binding
	for _, e := range entries {
		if !e.IsDir() && e.Type()&os.ModeSymlink == 0 || strings.HasPrefix(e.Name(), ".") {
			continue
		}
		dir := filepath.Join(root, e.Name())
		if fi, err := os.Stat(dir); err != nil || !fi.IsDir() {
			continue
		}
		b, err := parseBindingDir(dir, e.Name())
		if err != nil {
			return nil, fmt.Errorf("%s: %w", e.Name(), err)
		}
		out = append(out, b)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

func parseBindingDir(dir, name string) (Binding, error) {
	b := Binding{Name: name, Credentials: map[string]any{}}
	format := map[string]string{}
	meta := map[string]bool{"type": true, "label": true, "tags": true, "instance_name": true, "instance_guid": true, "plan": true, "provider": true}
	if raw, err := os.ReadFile(filepath.Join(dir, ".metadata")); err == nil {
		var md metadata
		if err := json.Unmarshal(raw, &md); err != nil {
			return b, fmt.Errorf(".metadata: %w", err)
		}
		for _, p := range md.MetaDataProperties {
			format[p.Name] = p.Format
			meta[p.Name] = true
		}
		for _, p := range md.CredentialProperties {
			format[p.Name] = p.Format
			delete(meta, p.Name)
		}
	}
	files, err := os.ReadDir(dir)
	if err != nil {
		return b, err
	}
	for _, f := range files {
		fn := f.Name()
		if strings.HasPrefix(fn, ".") || f.IsDir() {
			continue // .metadata, and the ..data links Kubernetes makes
		}
		fi, err := os.Stat(filepath.Join(dir, fn))
		if err != nil || fi.IsDir() {
			continue
		}
		if fi.Size() > maxFile {
			return b, fmt.Errorf("%s: larger than %d bytes", fn, maxFile)
		}
		raw, err := os.ReadFile(filepath.Join(dir, fn))
		if err != nil {
			return b, err
		}
		var v any = strings.TrimRight(string(raw), "\n")
		if format[fn] == "json" {
			if err := json.Unmarshal(raw, &v); err != nil {
				return b, fmt.Errorf("%s: .metadata says JSON: %w", fn, err)
			}
		}
		switch {
		case fn == "type":
			b.Label, _ = v.(string)
		case fn == "label":
			b.Label, _ = v.(string)
		case fn == "instance_name":
			b.InstanceName, _ = v.(string)
		case fn == "plan":
			b.Plan, _ = v.(string)
		case fn == "tags":
			b.Tags = tags(v)
		case meta[fn]:
		default:
			b.Credentials[fn] = v
		}
	}
	return b, nil
}

// tags reads a JSON list, or a comma-separated text.
func tags(v any) []string {
	switch t := v.(type) {
	case []any:
		var out []string
		for _, x := range t {
			if s, ok := x.(string); ok {
				out = append(out, s)
			}
		}
		return out
	case string:
		var list []string
		if json.Unmarshal([]byte(t), &list) == nil {
			return list
		}
		var out []string
		for _, s := range strings.Split(t, ",") {
			if s = strings.TrimSpace(s); s != "" {
				out = append(out, s)
			}
		}
		return out
	}
	return nil
}
