package binding

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
)

// Redis is the typed credentials of a redis-cache binding.
type Redis struct {
	// Addrs: the server (standalone), the configuration endpoint (Cluster) or
	// the sentinels (Sentinel).
	Addrs      []string
	Username   string
	Password   string
	TLS        bool
	CA         []byte // PEM, from ca_base64
	Cluster    bool
	MasterName string // set for Sentinel
}

// RedisCredentials reads the credentials of a redis-cache binding in every
// shape SAP's service brokers have produced: port as a number or string;
// tls, cluster_mode and sentinel_nodes as booleans/arrays or JSON strings;
// tls as an object; the master name in the uri's fragment; ca_base64.
func RedisCredentials(b Binding) (Redis, error) {
	c := b.Credentials
	var r Redis
	var errs []error
	fail := func(field string, err error) { errs = append(errs, fmt.Errorf("credentials.%s: %w", field, err)) }

	var uri *url.URL
	if s, ok := c["uri"].(string); ok && s != "" {
		u, err := url.Parse(s)
		if err != nil || (u.Scheme != "redis" && u.Scheme != "rediss") || u.Host == "" {
			fail("uri", errors.New("must be redis://host:port or rediss://host:port"))
		} else {
			uri = u
		}
	}

	host, _ := c["hostname"].(string)
	if host == "" {
		host, _ = c["host"].(string)
	}
	port := ""
	if v, ok := c["port"]; ok {
		p, err := portString(v)
		if err != nil {
			fail("port", err)
		}
		port = p
	}
	if uri != nil {
		if host == "" {
			host = uri.Hostname()
		}
		if port == "" {
			port = uri.Port()
		}
	}
	if port == "" {
		port = "6379"
	}

	if v, ok := c["password"].(string); ok {
		r.Password = v
	} else if uri != nil {
		r.Password, _ = uri.User.Password()
	}
	if v, ok := c["username"].(string); ok {
		r.Username = v
	} else if uri != nil {
		r.Username = uri.User.Username()
	}
	if r.Username == "no-user-name-for-redis" {
		r.Username = ""
	}

	tls, tlsObj, err := flag(c["tls"])
	if err != nil {
		fail("tls", err)
	}
	r.TLS = tls || (uri != nil && uri.Scheme == "rediss" && c["tls"] == nil)
	caB64, _ := c["ca_base64"].(string)
	if caB64 == "" && tlsObj != nil {
		caB64, _ = tlsObj["ca_base64"].(string)
	}
	if caB64 != "" {
		ca, err := base64.StdEncoding.DecodeString(strings.TrimSpace(caB64))
		if err != nil {
			fail("ca_base64", errors.New("not base64"))
		} else if !strings.Contains(string(ca), "-----BEGIN CERTIFICATE-----") {
			fail("ca_base64", errors.New("does not hold a PEM certificate"))
		} else {
			r.CA = ca
		}
	}

	if r.Cluster, _, err = flag(c["cluster_mode"]); err != nil {
		fail("cluster_mode", err)
	}

	sentinels, err := sentinelNodes(c["sentinel_nodes"])
	if err != nil {
		fail("sentinel_nodes", err)
	}
	if len(sentinels) > 0 {
		r.Addrs = sentinels
		r.MasterName = "mymaster"
		if uri != nil && uri.Fragment != "" {
			r.MasterName = uri.Fragment
		}
		if r.Cluster {
			fail("cluster_mode", errors.New("cannot be combined with sentinel_nodes"))
		}
	} else if host != "" {
		r.Addrs = []string{net.JoinHostPort(host, port)}
	} else if len(errs) == 0 {
		fail("hostname", errors.New("missing (and no uri or sentinel_nodes)"))
	}
	return r, errors.Join(errs...)
}

func portString(v any) (string, error) {
	var n int
	switch p := v.(type) {
	case float64:
		n = int(p)
		if float64(n) != p {
			return "", fmt.Errorf("%v is not a port", p)
		}
	case string:
		var err error
		if n, err = strconv.Atoi(p); err != nil {
			return "", fmt.Errorf("%q is not a port", p)
		}
	default:
		return "", fmt.Errorf("must be a number, not %T", v)
	}
	if n < 1 || n > 65535 {
		return "", fmt.Errorf("%d is not a port", n)
	}
	return strconv.Itoa(n), nil
}

// flag reads a boolean given as a boolean, a JSON string, or (for tls) an
// object, which means on unless it says "enabled": false.
func flag(v any) (bool, map[string]any, error) {
	switch f := v.(type) {
	case nil:
		return false, nil, nil
	case bool:
		return f, nil, nil
	case string:
		s := strings.TrimSpace(f)
		if s == "" {
			return false, nil, nil
		}
		var inner any
		if err := json.Unmarshal([]byte(s), &inner); err != nil {
			return false, nil, fmt.Errorf("%q is not true or false", f)
		}
		if _, isString := inner.(string); isString {
			return false, nil, fmt.Errorf("%q is not true or false", f)
		}
		return flag(inner)
	case map[string]any:
		if e, ok := f["enabled"].(bool); ok {
			return e, f, nil
		}
		return true, f, nil
	default:
		return false, nil, fmt.Errorf("must be true or false, not %T", v)
	}
}

// sentinelNodes reads [{"hostname":…,"port":…}], ["host:port"], or either as
// a JSON string.
func sentinelNodes(v any) ([]string, error) {
	switch n := v.(type) {
	case nil:
		return nil, nil
	case string:
		if strings.TrimSpace(n) == "" {
			return nil, nil
		}
		var inner any
		if err := json.Unmarshal([]byte(n), &inner); err != nil {
			return nil, errors.New("not a JSON list")
		}
		if _, isString := inner.(string); isString {
			return nil, errors.New("not a JSON list")
		}
		return sentinelNodes(inner)
	case []any:
		var out []string
		for i, e := range n {
			switch node := e.(type) {
			case string:
				if _, _, err := net.SplitHostPort(node); err != nil {
					return nil, fmt.Errorf("[%d]: %q is not host:port", i, node)
				}
				out = append(out, node)
			case map[string]any:
				h, _ := node["hostname"].(string)
				if h == "" {
					h, _ = node["host"].(string)
				}
				if h == "" {
					return nil, fmt.Errorf("[%d]: no hostname", i)
				}
				p, err := portString(node["port"])
				if err != nil {
					return nil, fmt.Errorf("[%d].port: %w", i, err)
				}
				out = append(out, net.JoinHostPort(h, p))
			default:
				return nil, fmt.Errorf("[%d]: must be an object or host:port", i)
			}
		}
		return out, nil
	default:
		return nil, fmt.Errorf("must be a list, not %T", v)
	}
}
