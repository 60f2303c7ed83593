package browser_test

import (
	"encoding/json"
	"html/template"
	"net/http"
	"strings"
)

// The app behind nginx: every page is one HTML page whose script calls the
// API; the API echoes what reached it. /logged-out.html is public (the
// xs-app.json route below), the page after logout.

const sessionCookie = "JSESSIONID"

// hostCookie is the session cookie's name in the __Host- variant of
// TestCookiesAsStored.
const hostCookie = "__Host-sid"

// xsApp is the app's xs-app.json: the page after logout is public, every
// other path needs a login.
const xsApp = `{
  "logout": { "logoutEndpoint": "/logout", "logoutPage": "/logged-out.html" },
  "routes": [
    { "source": "^/logged-out\\.html$", "authenticationType": "none" },
    { "source": "^/(.*)$", "authenticationType": "ias" }
  ]
}`

// apiEcho is what the API tells the page's script about the request it got.
type apiEcho struct {
	Method string `json:"method"`
	Path   string `json:"path"`
	// Bearer: the request came with "Authorization: Bearer <token>".
	Bearer bool   `json:"bearer"`
	Token  string `json:"token"`
	// SessionCookie: the session cookie reached the app (it must not).
	SessionCookie bool   `json:"sessionCookie"`
	Cookie        string `json:"cookie"`
	SecFetchMode  string `json:"secFetchMode"`
	SecFetchSite  string `json:"secFetchSite"`
	SecFetchDest  string `json:"secFetchDest"`
}

func echo(r *http.Request) apiEcho {
	tok, bearer := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	e := apiEcho{
		Method: r.Method, Path: r.URL.RequestURI(), Bearer: bearer && tok != "", Token: tok,
		Cookie: r.Header.Get("Cookie"), SecFetchMode: r.Header.Get("Sec-Fetch-Mode"),
		SecFetchSite: r.Header.Get("Sec-Fetch-Site"), SecFetchDest: r.Header.Get("Sec-Fetch-Dest"),
	}
	for _, c := range r.Cookies() {
		e.SessionCookie = e.SessionCookie || c.Name == sessionCookie || c.Name == hostCookie
	}
	return e
}

var appPage = template.Must(template.New("page").Parse(`<!doctype html>
<html lang="en">
<meta charset="utf-8">
<title>Orders app</title>
<style>body { font-family: system-ui, sans-serif; max-width: 40rem; margin: 3rem auto; }</style>
<h1>Orders app</h1>
<p>This page: <code id="path">{{.Path}}</code>, served {{if .Bearer}}with{{else}}without{{end}} a Bearer token.</p>
<p id="api" data-status="">Asking the API ...</p>
<p><a id="logout" href="/logout">Log out</a></p>
<script>
// What the page's script gets from its own API: the status, whether it was
// redirected, and the API's echo. A network or CORS failure is an error.
async function callAPI(path) {
  try {
    const r = await fetch(path || "/api/echo");
    const text = await r.text();
    let body = null;
    try { body = JSON.parse(text); } catch (e) { body = text; }
    return { status: r.status, redirected: r.redirected, type: r.type, url: r.url, body: body };
  } catch (e) {
    return { error: String(e) };
  }
}
// Shown again by the back button from the back/forward cache (no request
// is made then), the page asks the API again: the session may have ended.
async function showSession() {
  const el = document.getElementById("api");
  el.dataset.status = "";
  const r = await callAPI("/api/echo");
  if (r.status === 200) {
    el.textContent = "The API answered: signed in" + (r.body.bearer ? " (Bearer token)" : " (no token!)") + ".";
  } else if (r.status === 401) {
    el.textContent = "Your session has ended. Reload the page to log in again.";
  } else {
    el.textContent = "The API failed: " + (r.error || r.status);
  }
  el.dataset.status = String(r.status || r.error);
}
window.addEventListener("pageshow", (ev) => {
  if (ev.persisted) {
    document.documentElement.dataset.restored = "bfcache";
    showSession();
  }
});
window.addEventListener("load", showSession);
</script>
</html>
`))

const loggedOutPage = `<!doctype html>
<html lang="en">
<meta charset="utf-8">
<title>Logged out</title>
<h1>You are logged out</h1>
<p><a id="again" href="/">Log in again</a></p>
</html>
`

func appHandler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasPrefix(r.URL.Path, "/api/"):
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(echo(r))
		case r.URL.Path == "/logged-out.html":
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			_, _ = w.Write([]byte(loggedOutPage))
		case r.URL.Path == "/favicon.ico":
			http.NotFound(w, r)
		default:
			w.Header().Set("Content-Type", "text/html; charset=utf-8")
			e := echo(r)
			_ = appPage.Execute(w, struct {
				Path   string
				Bearer bool
			}{e.Path, e.Bearer})
		}
	})
}
