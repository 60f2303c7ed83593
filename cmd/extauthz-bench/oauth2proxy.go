package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strconv"
	"time"

	"github.com/oauth2-proxy/mockoidc"

	"github.com/extauthz/extauthz/internal/e2e"
)

// peer is oauth2-proxy, logged in n times through mockoidc (a headless
// OIDC provider in this process: its authorize endpoint answers with a
// code at once), with its sessions in rdbAddr.
type peer struct {
	proxy   *e2e.OAuth2Proxy
	oidc    *mockoidc.MockOIDC
	cookies []string // values of its session cookie, one per login
}

func startPeer(ctx context.Context, bin, redisAddr string, logins int, logw io.Writer) (*peer, error) {
	m, err := mockoidc.NewServer(nil)
	if err != nil {
		return nil, err
	}
	// No refresh during the bench (oauth2-proxy checks the expiry only
	// with --cookie-refresh, which is off, but keep it out of the way).
	m.AccessTTL, m.RefreshTTL = 12*time.Hour, 24*time.Hour
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	if err := m.Start(ln, nil); err != nil {
		return nil, err
	}
	p := &peer{oidc: m}
	cfg := m.Config()
	if p.proxy, err = e2e.StartOAuth2Proxy(bin, e2e.OAuth2ProxyOptions{
		Issuer: cfg.Issuer, ClientID: cfg.ClientID, ClientSecret: cfg.ClientSecret, RedisAddr: redisAddr,
	}, logw); err != nil {
		_ = m.Shutdown()
		return nil, err
	}
	for i := range logins {
		m.QueueUser(&mockoidc.MockUser{Subject: "user-" + strconv.Itoa(i), Email: fmt.Sprintf("user-%d@example.com", i), EmailVerified: true})
		c, err := p.login(ctx)
		if err != nil {
			p.Close()
			return nil, fmt.Errorf("oauth2-proxy login %d: %w", i+1, err)
		}
		p.cookies = append(p.cookies, c)
	}
	return p, nil
}

// login plays a browser: /oauth2/start, mockoidc's authorize, the
// callback, and returns the session cookie oauth2-proxy set. The cookie
// must then pass /oauth2/auth.
func (p *peer) login(ctx context.Context) (string, error) {
	jar, _ := cookiejar.New(nil)
	client := &http.Client{Jar: jar, Timeout: 10 * time.Second}
	req, _ := http.NewRequestWithContext(ctx, "GET", p.proxy.URL+"/oauth2/start?rd=%2F", nil)
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return "", fmt.Errorf("login ended at %s with %d: %.300s", resp.Request.URL, resp.StatusCode, body)
	}
	u, _ := url.Parse(p.proxy.URL)
	var cookie string
	for _, c := range jar.Cookies(u) {
		if c.Name == e2e.OAuth2ProxyCookie {
			cookie = c.Value
		}
	}
	if cookie == "" {
		return "", fmt.Errorf("no %s cookie after the login", e2e.OAuth2ProxyCookie)
	}
	areq, _ := http.NewRequestWithContext(ctx, "GET", p.proxy.URL+"/oauth2/auth", nil)
	areq.AddCookie(&http.Cookie{Name: e2e.OAuth2ProxyCookie, Value: cookie})
	aresp, err := http.DefaultClient.Do(areq)
	if err != nil {
		return "", err
	}
	aresp.Body.Close()
	if aresp.StatusCode != http.StatusAccepted {
		return "", fmt.Errorf("/oauth2/auth with the new session: %d, want 202", aresp.StatusCode)
	}
	return cookie, nil
}

func (p *peer) Close() {
	p.proxy.Close()
	_ = p.oidc.Shutdown()
}
