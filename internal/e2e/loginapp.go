package e2e

import (
	"context"
	"html/template"
	"net/http"
	"net/url"
	"strings"
	"sync"
)

// LoginApp is Hydra's login and consent app for a real browser: a page with
// a form asking for a user name (any name is accepted: this is a test
// identity provider, without passwords) and a Cancel button. On submit it
// accepts the login and then the consent through Hydra's admin API; Cancel
// rejects the login (Hydra sends the browser back to the app with
// error=access_denied). A logout Hydra asks about is accepted at once.
//
// Point Hydra at it with HydraOptions.LoginURL; set Hydra once it runs.
type LoginApp struct {
	mu    sync.Mutex
	hydra *Hydra
}

// SetHydra sets the Hydra whose challenges the app answers.
func (a *LoginApp) SetHydra(h *Hydra) {
	a.mu.Lock()
	a.hydra = h
	a.mu.Unlock()
}

func (a *LoginApp) h() *Hydra {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.hydra
}

var loginPage = template.Must(template.New("login").Parse(`<!doctype html>
<html lang="en">
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Log in</title>
<style>
body { font-family: system-ui, sans-serif; max-width: 26rem; margin: 4rem auto; padding: 0 1rem; }
label { display: block; margin: 1rem 0 .3rem; }
input { font-size: 1rem; padding: .4rem; width: 100%; box-sizing: border-box; }
button { font-size: 1rem; margin: 1rem .5rem 0 0; padding: .4rem 1rem; }
.error { color: #a00; }
small { color: #666; }
</style>
<h1>Log in</h1>
<p>to <b>{{.Client}}</b></p>
{{if .Error}}<p class="error" id="error">{{.Error}}</p>{{end}}
<form method="post" action="/login">
<input type="hidden" name="login_challenge" value="{{.Challenge}}">
<label for="username">User name</label>
<input id="username" name="username" autocomplete="username" autofocus required value="{{.User}}">
<button id="login" type="submit" name="action" value="login">Log in</button>
<button id="cancel" type="submit" name="action" value="cancel" formnovalidate>Cancel</button>
</form>
<p><small>Test identity provider: any user name logs in, no password.</small></p>
</html>
`))

var loginErrorPage = template.Must(template.New("error").Parse(`<!doctype html>
<html lang="en">
<meta charset="utf-8">
<title>Login error</title>
<h1>Login error</h1>
<p>{{.}}</p>
</html>
`))

// ServeHTTP serves /login (GET: the form; POST: accept or reject),
// /consent and /logout.
func (a *LoginApp) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	w.Header().Set("Cache-Control", "no-store")
	h := a.h()
	if h == nil {
		http.Error(w, "the identity provider is not running", http.StatusServiceUnavailable)
		return
	}
	ctx := r.Context()
	switch {
	case r.URL.Path == "/login" && r.Method == http.MethodGet:
		a.form(ctx, w, h, r.URL.Query().Get("login_challenge"), "", "", http.StatusOK)
	case r.URL.Path == "/login" && r.Method == http.MethodPost:
		challenge, user := r.PostFormValue("login_challenge"), strings.TrimSpace(r.PostFormValue("username"))
		var next string
		var err error
		switch {
		case r.PostFormValue("action") == "cancel":
			next, err = h.RejectLogin(ctx, challenge)
		case user == "":
			a.form(ctx, w, h, challenge, "", "Enter a user name.", http.StatusUnprocessableEntity)
			return
		default:
			next, err = h.AcceptLogin(ctx, challenge, user)
		}
		a.next(w, r, next, err)
	case r.URL.Path == "/consent":
		next, err := h.AcceptConsent(ctx, r.URL.Query().Get("consent_challenge"))
		a.next(w, r, next, err)
	case r.URL.Path == "/logout":
		next, err := h.AcceptLogout(ctx, r.URL.Query().Get("logout_challenge"))
		a.next(w, r, next, err)
	default:
		http.NotFound(w, r)
	}
}

func (a *LoginApp) form(ctx context.Context, w http.ResponseWriter, h *Hydra, challenge, user, msg string, status int) {
	var req struct {
		Client struct {
			ID   string `json:"client_id"`
			Name string `json:"client_name"`
		} `json:"client"`
	}
	if err := h.admin(ctx, http.MethodGet, "/admin/oauth2/auth/requests/login?login_challenge="+url.QueryEscape(challenge), nil, &req); err != nil {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(http.StatusBadRequest)
		_ = loginErrorPage.Execute(w, "This login request is unknown or has expired. Go back to the app and start again.")
		return
	}
	client := req.Client.Name
	if client == "" {
		client = req.Client.ID
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.WriteHeader(status)
	_ = loginPage.Execute(w, struct{ Client, Challenge, User, Error string }{client, challenge, user, msg})
}

// next sends the browser where Hydra said, or shows what went wrong.
func (a *LoginApp) next(w http.ResponseWriter, r *http.Request, next string, err error) {
	if err != nil {
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.WriteHeader(http.StatusBadGateway)
		_ = loginErrorPage.Execute(w, "The identity provider refused this step: "+err.Error())
		return
	}
	http.Redirect(w, r, next, http.StatusSeeOther)
}

// ClientSpec is an OAuth2 client to register at Hydra for a browser app.
type ClientSpec struct {
	ID, Name string
	// AppURLs are the app's origins (http://app.localhost:8080): each gets
	// <url>/login/callback as a redirect URI.
	AppURLs []string
	// LogoutPaths are the paths on each app URL the browser may be sent to
	// after logout (default "/").
	LogoutPaths []string
}

// CreateClientSpec registers a confidential client for the authorization
// code flow with refresh tokens, as CreateNamedClient, with a name and the
// given pages after logout.
func (h *Hydra) CreateClientSpec(ctx context.Context, s ClientSpec) (Client, error) {
	if len(s.LogoutPaths) == 0 {
		s.LogoutPaths = []string{"/"}
	}
	var redirects, posts []string
	for _, u := range s.AppURLs {
		redirects = append(redirects, u+"/login/callback")
		for _, p := range s.LogoutPaths {
			posts = append(posts, u+p)
		}
	}
	secret := "e2e-client-secret-0123456789"
	req := map[string]any{
		"grant_types": []string{"authorization_code", "refresh_token"}, "response_types": []string{"code"},
		"scope": "openid offline_access", "redirect_uris": redirects, "post_logout_redirect_uris": posts,
		"token_endpoint_auth_method": "client_secret_basic", "client_secret": secret,
	}
	if s.ID != "" {
		req["client_id"] = s.ID
	}
	if s.Name != "" {
		req["client_name"] = s.Name
	}
	var out struct {
		ClientID string `json:"client_id"`
	}
	err := h.admin(ctx, http.MethodPost, "/admin/clients", req, &out)
	return Client{ID: out.ClientID, Secret: secret}, err
}
