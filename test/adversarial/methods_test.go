package adversarial_test

import (
	"net/http"
	"testing"
)

// TestMethodSpellings: a method the upstream may read as another one
// ("delete" is DELETE to ASP.NET Core and Flask; Envoy passes it on over
// HTTP/2) never dodges an httpMethods route or a per-method scope: it is
// refused with 400, the upper-case method decided as usual.
func TestMethodSpellings(t *testing.T) {
	x := routes(t, "methods")
	_, cookie := login(t, x, "methods@example.com")
	csrf := csrfToken(t, x, cookie)
	spellings := []string{"delete", "Delete", "dELETE", "get", "Get", "post", "pOst", "put", "patch", "options", "head"}
	for _, p := range protocols {
		req := func(method, path, cookie string) hreq {
			q := ajax(path, cookie).with("x-csrf-token", csrf)
			q.Method = method
			return q
		}
		// Controls: DELETE on the DELETE-only Admin route is refused (no
		// Admin scope); POST on /withdefault/ takes the default scope (held);
		// GET there needs Viewer (not held).
		if r := p.do(x, req("DELETE", "/deleteonly/x", cookie)); r.Status != http.StatusForbidden {
			t.Errorf("%s: DELETE /deleteonly/x without Admin: %s, want 403", p.name, r)
		}
		if r := p.do(x, req("POST", "/withdefault/x", cookie)); r.Status != 200 {
			t.Errorf("%s: POST /withdefault/x (default scope held): %s, want 200", p.name, r)
		}
		if r := p.do(x, req("GET", "/withdefault/x", cookie)); r.Status != http.StatusForbidden {
			t.Errorf("%s: GET /withdefault/x (Viewer not held): %s, want 403", p.name, r)
		}
		// Overrides the upstream may honour: decided as that method too.
		// (Control: POST does not match the DELETE-only route, and is
		// allowed by the catch-all.)
		if r := p.do(x, req("POST", "/deleteonly/x", cookie)); r.Status != 200 {
			t.Errorf("%s: POST /deleteonly/x: %s, want 200 (the catch-all route)", p.name, r)
		}
		for _, q := range []hreq{
			req("POST", "/deleteonly/x", cookie).with("x-http-method-override", "DELETE"),
			req("POST", "/deleteonly/x", cookie).with("x-http-method", "delete"),
			req("PUT", "/deleteonly/x", cookie).with("x-method-override", "DELETE"),
			req("POST", "/deleteonly/x?_method=DELETE", cookie),
			req("POST", "/deleteonly/x?%5Fmethod=DELETE", cookie),
			req("POST", "/deleteonly/x?_metho%64=DELETE", cookie),
			req("POST", "/deleteonly/x?.method=DELETE", cookie),
			req("POST", "/deleteonly/x?_method[]=DELETE", cookie),
		} {
			if r := p.do(x, q); r.Status != http.StatusForbidden || r.Bearer() != "" {
				t.Errorf("%s: %s %s with an override: %s, want 403 (decided as DELETE too)", p.name, q.Method, q.Path, r)
			}
		}
		for _, m := range spellings {
			for _, path := range []string{"/deleteonly/x", "/withdefault/x", "/admin/x", "/public/x", "/home"} {
				for _, c := range []string{cookie, ""} {
					if r := p.do(x, req(m, path, c)); r.Status != http.StatusBadRequest || r.Bearer() != "" {
						t.Errorf("%s: %s %s (session %v): %s, want 400", p.name, m, path, c != "", r)
					}
				}
			}
		}
	}
	x.requireAlive(t)
}
