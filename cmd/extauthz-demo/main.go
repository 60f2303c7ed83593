// Command extauthz-demo runs approuter's own external-session test end to
// end on this machine: it starts Redis, Ory Hydra and extauthz, logs a
// browser in over the real ext_authz protocol, restarts extauthz, and shows
// the user is still logged in. `make demo` runs it.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"time"

	"github.com/extauthz/extauthz/internal/e2e"
	"github.com/extauthz/extauthz/internal/redistest"
	"github.com/extauthz/extauthz/pkg/session"
)

const app = "http://app.localhost:8080"

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	if err := demo(ctx, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "\ndemo failed:", err)
		os.Exit(1)
	}
}

type steps struct {
	w io.Writer
	n int
}

func (s *steps) do(title string, f func() (string, error)) error {
	s.n++
	fmt.Fprintf(s.w, "%d. %s ... ", s.n, title)
	start := time.Now()
	detail, err := f()
	if err != nil {
		fmt.Fprintf(s.w, "FAILED\n   %v\n", err)
		return err
	}
	fmt.Fprintf(s.w, "ok (%s)\n", time.Since(start).Round(time.Millisecond))
	if detail != "" {
		fmt.Fprintf(s.w, "   %s\n", strings.ReplaceAll(detail, "\n", "\n   "))
	}
	return nil
}

// mask shows a token's kind and length, never the token.
func mask(tok string) string {
	if len(tok) < 12 {
		return "(none)"
	}
	return fmt.Sprintf("%s… (%d characters)", tok[:7], len(tok))
}

func demo(ctx context.Context, w io.Writer) error {
	fmt.Fprintln(w, "extauthz demo: approuter's external session test (log in, restart, keep working) over Envoy's ext_authz gRPC protocol")
	fmt.Fprintln(w)
	dir, err := os.MkdirTemp("", "extauthz-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	s := &steps{w: w}

	var extauthzBin, hydraBin string
	if err := s.do("build extauthz and Ory Hydra v2.3.0", func() (string, error) {
		root, err := e2e.ModuleRoot()
		if err != nil {
			return "", err
		}
		if extauthzBin, err = e2e.BuildExtauthz(root, dir); err != nil {
			return "", err
		}
		hydraBin, err = e2e.BuildHydra(root, w)
		return "", err
	}); err != nil {
		return err
	}

	var redis *redistest.Server
	if err := s.do("start redis-server on a free loopback port", func() (string, error) {
		var err error
		if redis, err = redistest.Start(dir); err != nil {
			return "", err
		}
		return "redis at " + redis.Addr, nil
	}); err != nil {
		return err
	}
	defer redis.Stop()

	var hydra *e2e.Hydra
	var client e2e.Client
	if err := s.do("start Ory Hydra (the identity provider) and register the app", func() (string, error) {
		var err error
		if hydra, err = e2e.StartHydra(hydraBin, dir, e2e.HydraOptions{}); err != nil {
			return "", err
		}
		if client, err = hydra.CreateClient(ctx, app); err != nil {
			return "", err
		}
		return "issuer " + hydra.Issuer + ", client " + client.ID, nil
	}); err != nil {
		return err
	}
	defer hydra.Close()

	secret := session.RandomString(48) // this run's own: a secret in the source is no secret
	env := map[string]string{
		"EXT_SESSION_MGT": `{"instanceName":"demo-redis","storageType":"redis","sessionSecret":"` + secret + `"}`,
		"VCAP_SERVICES": fmt.Sprintf(`{"redis-cache":[{"name":"demo-redis","label":"redis-cache","tags":["cache"],`+
			`"credentials":{"hostname":"127.0.0.1","port":%d,"password":"","tls":false,"cluster_mode":false}}]}`, redis.Port),
		"EXTAUTHZ_OIDC_ISSUER": hydra.Issuer, "EXTAUTHZ_OIDC_CLIENT_ID": client.ID,
		"EXTAUTHZ_OIDC_CLIENT_SECRET": client.Secret, "EXTAUTHZ_OIDC_SCOPES": "openid offline_access",
		"EXTAUTHZ_LOG_FORMAT": "text",
	}
	logFile := filepath.Join(dir, "extauthz.log")
	logw, err := os.Create(logFile)
	if err != nil {
		return err
	}
	defer logw.Close()

	var a *e2e.Extauthz
	if err := s.do("start extauthz from EXT_SESSION_MGT + VCAP_SERVICES, as in approuter's documentation", func() (string, error) {
		var err error
		a, err = e2e.StartExtauthz("extauthz", extauthzBin, env, logw)
		if err != nil {
			return "", err
		}
		return "ext_authz gRPC at " + a.GRPCAddr + ", admin at http://" + a.AdminAddr, nil
	}); err != nil {
		return err
	}
	defer a.Close()

	b := e2e.NewBrowser("demo-user@example.com", a, hydra)
	var token, cookie string
	if err := s.do("open "+app+"/orders in the browser: redirected to Hydra, log in, come back", func() (string, error) {
		r, hops, err := b.Navigate(ctx, app+"/orders")
		if err != nil {
			return "", err
		}
		if r.Status != 200 || r.Upstream == nil {
			return "", fmt.Errorf("ended with %d %q", r.Status, r.Body)
		}
		token = strings.TrimPrefix(r.Upstream.Get("authorization"), "Bearer ")
		cookie = b.Cookie(app, "JSESSIONID")
		var path []string
		for _, h := range hops {
			h, _, _ = strings.Cut(h, "?")
			path = append(path, h)
		}
		return fmt.Sprintf("hops: %s\nthe app received Authorization: Bearer %s, and no JSESSIONID cookie: %v",
			strings.Join(path, " -> "), mask(token), !strings.Contains(r.Upstream.Get("cookie"), "JSESSIONID")), nil
	}); err != nil {
		return err
	}

	apiCall := func() (string, error) {
		r, err := b.Do(ctx, http.MethodGet, app+"/api/orders", http.Header{"X-Requested-With": {"XMLHttpRequest"}})
		if err != nil {
			return "", err
		}
		if r.Status != 200 {
			return "", fmt.Errorf("got %d %q", r.Status, strings.TrimSpace(r.Body))
		}
		got := strings.TrimPrefix(r.Upstream.Get("authorization"), "Bearer ")
		if got != token {
			return "", errors.New("the app received another token")
		}
		return "200, the same Bearer token", nil
	}
	if err := s.do("call the app's API with the session", apiCall); err != nil {
		return err
	}
	if err := s.do("restart extauthz: SIGKILL the process, start a new one", func() (string, error) {
		a.Kill()
		if err := a.Start(); err != nil {
			return "", err
		}
		return "a new process with nothing in memory", nil
	}); err != nil {
		return err
	}
	if err := s.do("call the app's API again: still logged in", apiCall); err != nil {
		return err
	}
	if err := s.do("the session cookie did not change", func() (string, error) {
		if b.Cookie(app, "JSESSIONID") != cookie {
			return "", errors.New("it changed")
		}
		return "", nil
	}); err != nil {
		return err
	}
	if err := s.do("log out: the session is deleted and the browser goes to Hydra's logout", func() (string, error) {
		r, err := b.Do(ctx, http.MethodGet, app+"/logout", nil)
		if err != nil {
			return "", err
		}
		loc := r.Header.Get("location")
		if r.Status != http.StatusFound || !strings.HasPrefix(loc, hydra.Issuer+"/oauth2/sessions/logout") {
			return "", fmt.Errorf("got %d to %q", r.Status, loc)
		}
		b.SetCookie(app, "JSESSIONID", cookie)
		r, err = b.Do(ctx, http.MethodGet, app+"/api/orders", http.Header{"X-Requested-With": {"XMLHttpRequest"}})
		if err != nil {
			return "", err
		}
		if r.Status != http.StatusUnauthorized {
			return "", fmt.Errorf("the old cookie still got %d", r.Status)
		}
		return "the old cookie now gets 401", nil
	}); err != nil {
		return err
	}
	fmt.Fprintln(w, "\nAll steps passed: the login survived a restart of extauthz.")
	return nil
}
