package policy

import (
	"os"
	"strings"
	"testing"
)

func load(t *testing.T) *Policy {
	t.Helper()
	doc, err := os.ReadFile("testdata/xs-app-sample.json")
	if err != nil {
		t.Fatal(err)
	}
	p, err := Parse(doc, "myapp!t7")
	if err != nil {
		t.Fatal(err)
	}
	return p
}

// A scope object without "default" refuses the methods it does not list
// (approuter: scope[method] || scope.default || []).
func TestScopeObjectWithoutDefaultFailsClosed(t *testing.T) {
	p, err := Parse([]byte(`{"routes":[{"source":"^/","scope":{"GET":"Viewer"}},{"source":"^/x","scope":"X"}]}`), "")
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "get", "PROPFIND"} {
		if s, restricted := p.Match("/a", m).ScopesFor(m); !restricted || len(s) != 0 {
			t.Errorf("%s: scopes %v restricted %v, want an empty list that no user passes", m, s, restricted)
		}
	}
	if s, restricted := p.Match("/a", "GET").ScopesFor("GET"); !restricted || len(s) != 1 || s[0] != "Viewer" {
		t.Errorf("GET: %v %v", s, restricted)
	}
}

func TestSample(t *testing.T) {
	p := load(t)
	if p.CallbackEndpoint != "/custom/login/callback" || p.LogoutEndpoint != "/do/logout" || p.LogoutPage != "/logout-page.html" ||
		p.LogoutMethod != "POST" || p.SessionTimeout != 30 || p.Public {
		t.Fatalf("top level: %+v", p)
	}
	if got := strings.Join(p.Ignored, ","); got != "cacheControl,destination,localDir,service,target,welcomeFile" {
		t.Fatalf("ignored proxy fields: %s", got)
	}
	type want struct {
		route  int // -1: none
		public bool
		scopes string
		csrf   bool
	}
	for _, tc := range []struct {
		method, path string
		want         want
	}{
		{"GET", "/logout-page.html", want{0, true, "", false}},
		{"POST", "/public/x.css", want{1, true, "", false}},
		{"GET", "/api/admin/users", want{2, false, "myapp!t7.Admin", false}},
		{"DELETE", "/api/admin/users/1", want{2, false, "myapp!t7.Admin", true}},
		{"GET", "/api/orders?top=1", want{3, false, "myapp!t7.Display myapp!t7.Edit", false}},
		{"POST", "/api/orders", want{3, false, "myapp!t7.Edit", true}},
		{"PATCH", "/api/orders", want{3, false, "myapp!t7.Edit", true}}, // default
		{"POST", "/api/webhook", want{4, false, "", false}},
		{"GET", "/api/webhook", want{7, false, "", false}}, // httpMethods: only POST takes route 4
		{"PUT", "/ias/thing", want{5, false, "", true}},
		{"GET", "/caseless/x", want{6, false, "", false}},
		{"GET", "/anything/else", want{7, false, "", false}},
	} {
		r := p.Match(strings.SplitN(tc.path, "?", 2)[0], tc.method)
		if r == nil {
			t.Errorf("%s %s: no route", tc.method, tc.path)
			continue
		}
		scopes, restricted := r.ScopesFor(tc.method)
		s := strings.Join(scopes, " ")
		if restricted && s == "" {
			s = "[] (no scope passes)"
		}
		got := want{r.Index, r.Public(), s, r.NeedsCSRF(tc.method)}
		if got != tc.want {
			t.Errorf("%s %s: %+v, want %+v", tc.method, tc.path, got, tc.want)
		}
	}
}

func TestAuthenticationMethodNone(t *testing.T) {
	p, err := Parse([]byte(`{"authenticationMethod":"none","routes":[{"source":"^/api/","scope":"x"}]}`), "")
	if err != nil {
		t.Fatal(err)
	}
	if r := p.Match("/api/x", "POST"); r == nil || !r.Public() || r.NeedsCSRF("POST") {
		t.Fatalf("authenticationMethod none: every route is public: %+v", r)
	}
	if p.Match("/other", "GET") != nil {
		t.Fatal("an unmatched path matched")
	}
}

func TestErrors(t *testing.T) {
	for doc, want := range map[string]string{
		`[]`:                             "not a JSON object",
		`{"routes":[{"source":"^/(a"}]}`: "routes[0].source: \"^/(a\" is not a regular expression",
		`{"routes":[{"source":"^/","authenticationType":"basic"}]}`: "routes[0].authenticationType: basic is not supported",
		`{"routes":[{"source":"^/","authenticationType":"saml"}]}`:  `routes[0].authenticationType: "saml" is not xsuaa, ias or none`,
		`{"routes":[{"source":"^/","scope":"$XSAPPNAME.Read"}]}`:    "routes[0].scope: \"$XSAPPNAME.Read\" uses $XSAPPNAME but no xsuaa binding gives xsappname",
		`{"routes":[{"source":"^/","scope":{"FETCH":"a"}}]}`:        `routes[0].scope: "FETCH" is not an HTTP method or default`,
		`{"routes":[{"source":"^/","scope":[]}]}`:                   "routes[0].scope: must be a scope",
		`{"routes":[{"source":"^/","scpoe":"a"}]}`:                  "routes[0].scpoe: unknown field",
		`{"routes":[{}]}`:                                      "routes[0].source: required",
		`{"route":[]}`:                                         "route: unknown field",
		`{"authenticationMethod":"saml"}`:                      `authenticationMethod: "saml" is not route or none`,
		`{"logout":{"logoutMethod":"PUT"}}`:                    `logout.logoutMethod: "PUT" is not GET or POST`,
		`{"routes":[{"source":"^/","httpMethods":["FETCH"]}]}`: `routes[0].httpMethods: "FETCH" is not an HTTP method`,
		`{"routes":[{"source":"^/a"},{"source":"^/(b"}]}`:      "routes[1].source",
	} {
		_, err := Parse([]byte(doc), "")
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Parse(%s): %v, want %q", doc, err, want)
		}
	}
}

func FuzzParse(f *testing.F) {
	doc, _ := os.ReadFile("testdata/xs-app-sample.json")
	f.Add(string(doc), "/api/orders", "GET")
	f.Add(`{"routes":[{"source":{"path":"^/x","matchCase":false},"scope":{"default":["a"]}}]}`, "/X", "POST")
	f.Fuzz(func(t *testing.T, doc, path, method string) {
		p, err := Parse([]byte(doc), "app")
		if err != nil {
			return
		}
		if r := p.Match(path, method); r != nil {
			_, _ = r.ScopesFor(method)
			_ = r.NeedsCSRF(method)
		}
	})
}
