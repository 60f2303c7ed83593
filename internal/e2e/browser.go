package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"strings"
	"sync"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
)

// Response is what the browser got for one request.
type Response struct {
	Status int
	Header http.Header
	Body   string
	// Upstream holds the request headers the app received, when Envoy let
	// the request through; nil otherwise.
	Upstream http.Header
}

// Browser is a browser with a cookie jar, in front of an Envoy that asks
// extauthz about every request to the app. Requests to Hydra are real HTTP;
// Hydra's login and consent pages are played through its admin API.
type Browser struct {
	Subject string // who logs in at Hydra
	// Remember: the login at Hydra is remembered (its login session
	// cookie kept), so a second login in this browser reuses the same
	// Hydra session (the same sid) without a login page.
	Remember bool

	mu     sync.Mutex
	jar    *cookiejar.Jar
	envoy  *Extauthz
	hydras []*Hydra
	client *http.Client
}

// NewHTTPBrowser returns a browser that reaches the app over real HTTP (a
// real proxy such as nginx in front of it) and logs in at one of hydras.
// Response.Upstream is then what the app echoed: see AppEcho.
func NewHTTPBrowser(subject string, hydras ...*Hydra) *Browser {
	return NewBrowser(subject, nil, hydras...)
}

// NewBrowser returns a browser that reaches the app through envoy and logs
// in at one of hydras.
func NewBrowser(subject string, envoy *Extauthz, hydras ...*Hydra) *Browser {
	jar, _ := cookiejar.New(nil)
	return &Browser{
		Subject: subject, jar: jar, envoy: envoy, hydras: hydras,
		client: &http.Client{Jar: jar, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }},
	}
}

// Use makes the browser's Envoy ask another extauthz replica.
func (b *Browser) Use(x *Extauthz) {
	b.mu.Lock()
	b.envoy = x
	b.mu.Unlock()
}

// Cookie returns the value of the cookie called name that the browser
// would send to rawURL.
func (b *Browser) Cookie(rawURL, name string) string {
	u, _ := url.Parse(rawURL)
	for _, c := range b.jar.Cookies(u) {
		if c.Name == name {
			return c.Value
		}
	}
	return ""
}

// SetCookie puts a cookie into the jar (to copy a cookie between browsers).
func (b *Browser) SetCookie(rawURL, name, value string) {
	u, _ := url.Parse(rawURL)
	b.jar.SetCookies(u, []*http.Cookie{{Name: name, Value: value, Path: "/"}})
}

// DeleteCookies drops every cookie the browser has for rawURL whose name
// starts with prefix.
func (b *Browser) DeleteCookies(rawURL, prefix string) {
	u, _ := url.Parse(rawURL)
	for _, c := range b.jar.Cookies(u) {
		if strings.HasPrefix(c.Name, prefix) {
			b.jar.SetCookies(u, []*http.Cookie{{Name: c.Name, Path: "/", MaxAge: -1}})
			b.jar.SetCookies(u, []*http.Cookie{{Name: c.Name, Path: "/login/callback", MaxAge: -1}})
		}
	}
}

// Do sends one request to the app through Envoy: Envoy asks extauthz, then
// either forwards it upstream with the headers extauthz set, or answers with
// extauthz's denied response. It applies Set-Cookie to the jar.
func (b *Browser) Do(ctx context.Context, method, rawURL string, header http.Header) (*Response, error) {
	b.mu.Lock()
	envoy := b.envoy
	b.mu.Unlock()
	if envoy == nil {
		return b.doHTTP(ctx, method, rawURL, header)
	}
	u, err := url.Parse(rawURL)
	if err != nil {
		return nil, err
	}
	headers := map[string]string{
		":authority": u.Host, ":method": method, ":path": u.RequestURI(), ":scheme": u.Scheme,
		"x-forwarded-proto": u.Scheme, "user-agent": "extauthz-e2e-browser",
	}
	for k, v := range header {
		headers[strings.ToLower(k)] = strings.Join(v, ",")
	}
	var cookies []string
	for _, c := range b.jar.Cookies(u) {
		cookies = append(cookies, c.Name+"="+c.Value)
	}
	if len(cookies) > 0 {
		headers["cookie"] = strings.Join(cookies, "; ")
	}
	resp, err := envoy.Check(ctx, &authv3.CheckRequest{Attributes: &authv3.AttributeContext{
		Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: method, Host: u.Host, Path: u.RequestURI(), Scheme: u.Scheme, Protocol: "HTTP/1.1", Headers: headers,
		}},
	}})
	if err != nil {
		// Envoy with failure_mode_allow: false answers 403 (status_on_error).
		return &Response{Status: http.StatusForbidden, Header: http.Header{}, Body: "ext_authz error: " + err.Error()}, nil
	}
	out := &Response{Header: http.Header{}}
	if ok := resp.GetOkResponse(); resp.GetStatus().GetCode() == 0 && resp.GetDeniedResponse() == nil {
		up := http.Header{}
		for k, v := range headers {
			if !strings.HasPrefix(k, ":") {
				up.Set(k, v)
			}
		}
		for _, h := range ok.GetHeaders() {
			up.Set(h.GetHeader().GetKey(), h.GetHeader().GetValue())
		}
		for _, k := range ok.GetHeadersToRemove() {
			up.Del(k)
		}
		for _, h := range ok.GetResponseHeadersToAdd() {
			out.Header.Add(h.GetHeader().GetKey(), h.GetHeader().GetValue())
		}
		out.Status, out.Upstream, out.Body = http.StatusOK, up, "hello from the app"
	} else {
		d := resp.GetDeniedResponse()
		out.Status = int(d.GetStatus().GetCode())
		if out.Status == 0 {
			out.Status = http.StatusForbidden
		}
		for _, h := range d.GetHeaders() {
			out.Header.Add(h.GetHeader().GetKey(), h.GetHeader().GetValue())
		}
		out.Body = d.GetBody()
	}
	b.jar.SetCookies(u, (&http.Response{Header: http.Header{"Set-Cookie": out.Header.Values("set-cookie")}}).Cookies())
	return out, nil
}

// doHTTP sends a real HTTP request; an app response (200 with the echo
// header) has its echoed request headers in Upstream.
func (b *Browser) doHTTP(ctx context.Context, method, rawURL string, header http.Header) (*Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, rawURL, nil)
	if err != nil {
		return nil, err
	}
	for k, v := range header {
		req.Header[k] = v
	}
	r, err := b.client.Do(req)
	if err != nil {
		return nil, err
	}
	defer r.Body.Close()
	body, _ := io.ReadAll(r.Body)
	out := &Response{Status: r.StatusCode, Header: r.Header, Body: string(body)}
	if r.Header.Get(AppEchoHeader) != "" && method == http.MethodHead {
		out.Upstream = http.Header{} // the app answered; HEAD has no body to echo in
	} else if r.Header.Get(AppEchoHeader) != "" {
		var echoed map[string][]string
		if err := json.Unmarshal(body, &echoed); err != nil {
			return nil, fmt.Errorf("app echo: %w", err)
		}
		out.Upstream = echoed
	}
	return out, nil
}

// AppEchoHeader marks the responses of AppEcho.
const AppEchoHeader = "X-App-Echo"

// AppEcho is a test app: it answers every request with the request headers
// it received, as JSON.
func AppEcho() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set(AppEchoHeader, "1")
		w.Header().Set("content-type", "application/json")
		_ = json.NewEncoder(w).Encode(r.Header)
	})
}

// Navigate opens rawURL like a browser: it follows redirects between the app
// (through Envoy) and Hydra, logging in as Subject when Hydra asks. It
// returns the final response and the URLs visited.
func (b *Browser) Navigate(ctx context.Context, rawURL string) (*Response, []string, error) {
	return b.NavigateUntil(ctx, rawURL, nil)
}

// NavigateUntil is Navigate that stops before visiting a URL for which stop
// says true; it then returns a nil response and the hops, the last being
// that URL.
func (b *Browser) NavigateUntil(ctx context.Context, rawURL string, stop func(*url.URL) bool) (*Response, []string, error) {
	var hops []string
	var last *Hydra
	for range 20 {
		hops = append(hops, rawURL)
		u, err := url.Parse(rawURL)
		if err != nil {
			return nil, hops, err
		}
		if stop != nil && stop(u) {
			return nil, hops, nil
		}
		var resp *Response
		switch {
		case u.Host == LoginHost:
			if last == nil {
				return nil, hops, errors.New("login page reached without coming from a Hydra")
			}
			next, err := b.playLoginApp(ctx, last, u)
			if err != nil {
				return nil, hops, err
			}
			rawURL = next
			continue
		case b.hydraFor(u) != nil:
			last = b.hydraFor(u)
			r, err := b.client.Get(rawURL)
			if err != nil {
				return nil, hops, err
			}
			body, _ := io.ReadAll(r.Body)
			r.Body.Close()
			resp = &Response{Status: r.StatusCode, Header: r.Header, Body: string(body)}
		default:
			if resp, err = b.Do(ctx, http.MethodGet, rawURL, nil); err != nil {
				return nil, hops, err
			}
		}
		if resp.Status < 300 || resp.Status >= 400 || resp.Header.Get("location") == "" {
			return resp, hops, nil
		}
		next, err := u.Parse(resp.Header.Get("location"))
		if err != nil {
			return nil, hops, err
		}
		rawURL = next.String()
	}
	return nil, hops, fmt.Errorf("too many redirects: %v", hops)
}

func (b *Browser) hydraFor(u *url.URL) *Hydra {
	for _, h := range b.hydras {
		if strings.HasPrefix(u.String(), h.Issuer+"/") {
			return h
		}
	}
	return nil
}

// playLoginApp answers Hydra's login, consent and logout pages.
func (b *Browser) playLoginApp(ctx context.Context, h *Hydra, u *url.URL) (string, error) {
	q := u.Query()
	switch u.Path {
	case "/login":
		return h.AcceptLoginRemember(ctx, q.Get("login_challenge"), b.Subject, b.Remember)
	case "/consent":
		return h.AcceptConsent(ctx, q.Get("consent_challenge"))
	case "/logout":
		return h.AcceptLogout(ctx, q.Get("logout_challenge"))
	}
	return "", fmt.Errorf("unexpected login app page %s", u)
}
