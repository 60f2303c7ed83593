package adversarial_test

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	goredis "github.com/redis/go-redis/v9"

	"github.com/extauthz/extauthz/internal/e2e"
)

// ---------------------------------------------------------------------------
// extauthz instances

type instance struct {
	*e2e.Extauthz
	logPath string
	env     map[string]string
}

// baseEnv is the environment of an instance: Redis A, Hydra as the single
// tenant's issuer, the test xs-app.json not included.
func baseEnv(prefix string) map[string]string {
	return map[string]string{
		"EXTAUTHZ_REDIS_URL":          "redis://" + redisA.Addr,
		"EXTAUTHZ_SESSION_KEY_PREFIX": prefix,
		"EXTAUTHZ_SESSION_SECRETS":    secret,
		"EXTAUTHZ_OIDC_ISSUER":        hydra.Issuer,
		"EXTAUTHZ_OIDC_CLIENT_ID":     client.ID,
		"EXTAUTHZ_OIDC_CLIENT_SECRET": client.Secret,
		"EXTAUTHZ_OIDC_SCOPES":        "openid offline_access",
		"EXTAUTHZ_LOG_LEVEL":          "debug",
		"EXTAUTHZ_LOG_FORMAT":         "text",
	}
}

// start runs an instance with baseEnv(prefix "adv-"+name) plus extra
// (key, value pairs; an empty value deletes the key). At the test's end it
// is killed and its log checked: no panic, no secret.
func start(t *testing.T, name string, extra ...string) *instance {
	t.Helper()
	env := baseEnv("adv-" + name)
	for i := 0; i+1 < len(extra); i += 2 {
		if extra[i+1] == "" {
			delete(env, extra[i])
		} else {
			env[extra[i]] = extra[i+1]
		}
	}
	logPath := filepath.Join(t.TempDir(), name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	x, err := e2e.StartExtauthz(name, extauthzBin, env, f)
	if err != nil {
		f.Close()
		t.Fatalf("%v\n%s", err, readFile(logPath))
	}
	in := &instance{Extauthz: x, logPath: logPath, env: env}
	t.Cleanup(func() {
		alive := in.alive()
		x.Close()
		f.Close()
		log := readFile(logPath)
		if !alive {
			t.Errorf("%s: the process died during the test", name)
		}
		for _, bad := range []string{"panic", "fatal error", "DATA RACE"} {
			if strings.Contains(log, bad) {
				t.Errorf("%s's log contains %q", name, bad)
			}
		}
		// What a client sends is clipped in log lines: a 512 KiB path makes
		// no 512 KiB line.
		for _, l := range strings.Split(log, "\n") {
			if len(l) > 4<<10 {
				t.Errorf("%s's log has a line of %d bytes: %.200s…", name, len(l), l)
				break
			}
		}
		for _, s := range []string{client.Secret, secret, "ory_at_", "ory_rt_", "eyJ"} {
			if strings.Contains(log, s) {
				t.Errorf("%s's log contains the secret %q", name, s)
			}
		}
		if t.Failed() {
			if len(log) > 6000 {
				log = "...\n" + log[len(log)-6000:]
			}
			t.Logf("%s log:\n%s", name, log)
		}
	})
	return in
}

func readFile(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}

// alive says whether the process runs and answers /healthz.
func (in *instance) alive() bool {
	pid, err := in.PID()
	if err != nil {
		return false
	}
	if _, err := os.Stat(fmt.Sprintf("/proc/%d", pid)); err != nil {
		return false
	}
	st, _, err := in.Admin("/healthz")
	return err == nil && st == 200
}

// requireAlive fails the test when the process died or its log shows a panic.
func (in *instance) requireAlive(t *testing.T) {
	t.Helper()
	if !in.alive() {
		t.Fatalf("%s is no longer alive (log tail: %s)", in.Name, tail(readFile(in.logPath), 2000))
	}
	if strings.Contains(readFile(in.logPath), "panic") {
		t.Fatalf("%s logged a panic", in.Name)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// memory returns the child's VmRSS and VmHWM (peak RSS) in KiB.
func (in *instance) memory(t *testing.T) (rss, peak int) {
	t.Helper()
	pid, err := in.PID()
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(b), "\n") {
		k, v, _ := strings.Cut(line, ":")
		n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		switch k {
		case "VmRSS":
			rss = n
		case "VmHWM":
			peak = n
		}
	}
	return rss, peak
}

// checkSeries returns the extauthz_checks_total series on /metrics.
func (in *instance) checkSeries(t *testing.T) []string {
	t.Helper()
	st, body, err := in.Admin("/metrics")
	if err != nil || st != 200 {
		t.Fatalf("/metrics: %d %v", st, err)
	}
	var out []string
	for _, l := range strings.Split(body, "\n") {
		if strings.HasPrefix(l, "extauthz_checks_total{") {
			out = append(out, l)
		}
	}
	return out
}

// dbsize is the number of keys in a Redis.
func dbsize(t *testing.T, addr string) int64 {
	t.Helper()
	c := goredis.NewClient(&goredis.Options{Addr: addr})
	defer c.Close()
	n, err := c.DBSize(context.Background()).Result()
	if err != nil {
		t.Fatal(err)
	}
	return n
}
