package admin_test

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/extauthz/extauthz/pkg/admin"
	"github.com/extauthz/extauthz/pkg/session"
	"github.com/extauthz/extauthz/proto/sessionpb"
)

const token = "admin-token-0123456789-0123456789-abcdef"

func TestAdminAPI(t *testing.T) {
	keys, _ := session.NewKeys([]byte(strings.Repeat("k", 64)))
	m := session.NewManager(session.NewMemoryStore(nil), keys, session.Options{})
	ctx := context.Background()
	var cookies []string
	for _, sub := range []string{"alice", "alice", "alice", "bob"} {
		_, c, err := m.Create(ctx, &sessionpb.Session{Tenant: "t1", Subject: sub, AccessToken: "secret-at-" + sub})
		if err != nil {
			t.Fatal(err)
		}
		cookies = append(cookies, c)
	}
	var audit bytes.Buffer
	h := admin.New(token, m, slog.New(slog.NewJSONHandler(&audit, nil)).With("audit", true), slog.New(slog.DiscardHandler))
	do := func(method, target, auth string) (int, map[string]any) {
		t.Helper()
		req := httptest.NewRequest(method, target, nil)
		if auth != "" {
			req.Header.Set("authorization", auth)
		}
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		var out map[string]any
		_ = json.Unmarshal(w.Body.Bytes(), &out)
		if w.Header().Get("cache-control") != "no-store" {
			t.Fatalf("%s %s: no cache-control: no-store", method, target)
		}
		return w.Code, out
	}
	for _, auth := range []string{"", "Bearer wrong", "Basic " + token, "Bearer " + token + "x", token} {
		if code, _ := do("GET", "/admin/sessions?subject=alice&tenant=t1", auth); code != http.StatusUnauthorized {
			t.Fatalf("auth %q: %d, want 401", auth, code)
		}
		if code, _ := do("DELETE", "/admin/sessions?subject=alice&tenant=t1", auth); code != http.StatusUnauthorized {
			t.Fatalf("auth %q: DELETE %d, want 401", auth, code)
		}
	}
	if n, _ := m.Sessions(ctx, "t1", "alice"); len(n) != 3 {
		t.Fatal("an unauthorized request ended sessions")
	}
	bearer := "Bearer " + token
	if code, _ := do("GET", "/admin/sessions?tenant=t1", bearer); code != http.StatusBadRequest {
		t.Fatalf("no subject: %d", code)
	}
	code, out := do("GET", "/admin/sessions?subject=alice&tenant=t1", bearer)
	list, _ := out["sessions"].([]any)
	if code != 200 || len(list) != 3 {
		t.Fatalf("GET = %d %v", code, out)
	}
	first := list[0].(map[string]any)
	for _, k := range []string{"fingerprint", "created", "last_used", "expires"} {
		if first[k] == nil {
			t.Fatalf("session lacks %s: %v", k, first)
		}
	}
	fp := first["fingerprint"].(string)
	if code, out := do("DELETE", "/admin/sessions?subject=alice&tenant=t1&session="+fp, bearer); code != 200 || out["revoked"] != 1.0 {
		t.Fatalf("DELETE one = %d %v", code, out)
	}
	if code, out := do("DELETE", "/admin/sessions?subject=alice&tenant=t2", bearer); code != 200 || out["revoked"] != 0.0 {
		t.Fatalf("DELETE in another tenant = %d %v", code, out)
	}
	if code, out := do("DELETE", "/admin/sessions?subject=alice&tenant=t1", bearer); code != 200 || out["revoked"] != 2.0 {
		t.Fatalf("DELETE all = %d %v", code, out)
	}
	for i, c := range cookies {
		_, err := m.Load(ctx, c, "t1")
		if alive := err == nil; alive != (i == 3) {
			t.Fatalf("session %d alive = %v", i, alive)
		}
	}
	if code, _ := do("POST", "/admin/sessions?subject=alice", bearer); code != http.StatusMethodNotAllowed {
		t.Fatalf("POST: %d", code)
	}
	a := audit.String()
	if strings.Count(a, `"via":"admin"`) != 3 || strings.Count(a, `"event":"admin_unauthorized"`) != 10 {
		t.Fatalf("audit:\n%s", a)
	}
	for _, secret := range append(cookies, token, "secret-at-") {
		if strings.Contains(a, secret) {
			t.Fatalf("audit holds %q", secret)
		}
	}
}

// Whoever reaches the admin listener can set off admin_unauthorized lines:
// they are limited, and an attacker's path is cut short in them.
func TestUnauthorizedLinesAreLimited(t *testing.T) {
	var audit bytes.Buffer
	h := admin.New(strings.Repeat("t", 40), nil, slog.New(slog.NewJSONHandler(&audit, nil)), slog.New(slog.DiscardHandler))
	start := time.Now()
	for range 2000 {
		h.ServeHTTP(httptest.NewRecorder(), httptest.NewRequest("GET", "/admin/"+strings.Repeat("x", 50_000), nil))
	}
	// A burst of 100, then 20 a second for as long as the calls took (a
	// loaded machine under -race takes seconds).
	limit := 100 + int(20*time.Since(start).Seconds()) + 1
	lines := strings.Count(audit.String(), `"event":"admin_unauthorized"`)
	if lines < 50 || lines > limit || audit.Len() > limit*1024 {
		t.Fatalf("%d lines (at most %d), %d bytes of audit log for 2,000 unauthorized calls with 50 KB paths", lines, limit, audit.Len())
	}
}
