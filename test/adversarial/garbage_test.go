package adversarial_test

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"
)

// rawCodec sends []byte as the encoded request and decodes responses with
// the generated code: a client that writes its own protobuf bytes.
type rawCodec struct{}

func (rawCodec) Name() string { return "proto" }
func (rawCodec) Marshal(v any) ([]byte, error) {
	if b, ok := v.([]byte); ok {
		return b, nil
	}
	return proto.Marshal(v.(proto.Message))
}
func (rawCodec) Unmarshal(b []byte, v any) error { return proto.Unmarshal(b, v.(proto.Message)) }

func rawCheck(t *testing.T, x *instance, b []byte) hres {
	t.Helper()
	conn, err := grpc.NewClient(x.GRPCAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp := &authv3.CheckResponse{}
	err = conn.Invoke(ctx, "/envoy.service.auth.v3.Authorization/Check", b, resp, grpc.ForceCodec(rawCodec{}))
	if err != nil {
		return fromCheckResponse(nil, err)
	}
	return fromCheckResponse(resp, nil)
}

// encoded field helpers
func msgField(num protowire.Number, b []byte) []byte {
	out := protowire.AppendTag(nil, num, protowire.BytesType)
	return protowire.AppendBytes(out, b)
}

func strField(num protowire.Number, s string) []byte { return msgField(num, []byte(s)) }

func cat(bs ...[]byte) []byte {
	var out []byte
	for _, b := range bs {
		out = append(out, b...)
	}
	return out
}

// HttpRequest fields
func hMethod(s string) []byte { return strField(2, s) }
func hPath(s string) []byte   { return strField(4, s) }
func hHost(s string) []byte   { return strField(5, s) }
func hEntry(k, v string) []byte {
	return msgField(3, cat(strField(1, k), strField(2, v)))
}
func hMapValue(k, v string, raw bool) []byte {
	val := strField(2, v)
	if raw {
		val = strField(3, v)
	}
	return msgField(13, msgField(1, cat(strField(1, k), val)))
}

// wrap puts encoded HttpRequest parts into a CheckRequest, each part its
// own occurrence of the http field (protobuf merges them).
func wrap(parts ...[]byte) []byte {
	var req []byte
	for _, p := range parts {
		req = append(req, msgField(2, p)...)
	}
	return msgField(1, msgField(4, req))
}

// TestRepeatedHTTPMessage (issue 11 class 6): a CheckRequest whose encoding
// repeats attributes.request.http (or attributes, or the whole request) is
// decided as the generated decoder reads it: its merged message.
func TestRepeatedHTTPMessage(t *testing.T) {
	x := routes(t, "wire")
	_, cookie := login(t, x, "wire@example.com")
	sc := "JSESSIONID=" + cookie
	base := cat(hMethod("GET"), hPath("/home"), hHost("localhost:8443"))
	cases := []struct {
		name string
		b    []byte
	}{
		{"header_map cookie, then a headers map", wrap(cat(base, hMapValue("cookie", sc, true)), hEntry("x-requested-with", "XMLHttpRequest"))},
		{"headers map, then header_map cookie", wrap(cat(base, hEntry("x-requested-with", "XMLHttpRequest")), hMapValue("cookie", sc, true))},
		{"header_map cookie (value), then headers map", wrap(cat(base, hMapValue("cookie", sc, false)), hEntry("user-agent", "x"))},
		{"headers cookie, then headers garbage cookie", wrap(cat(base, hEntry("cookie", sc)), hEntry("cookie", "JSESSIONID=garbage"))},
		{"headers garbage cookie, then headers cookie", wrap(cat(base, hEntry("cookie", "JSESSIONID=garbage")), hEntry("cookie", sc))},
		{"path admin, then path home", wrap(cat(base, hEntry("cookie", sc), hPath("/admin/x")), hPath("/home"))},
		{"path home, then path admin", wrap(cat(base, hEntry("cookie", sc)), hPath("/admin/x"))},
		{"method POST, then GET", wrap(cat(base, hEntry("cookie", sc), hMethod("POST")), hMethod("GET"))},
		{"method GET, then POST on a CSRF route", wrap(cat(base, hEntry("cookie", sc), hPath("/api/x")), hMethod("POST"))},
		{"header_map in both", wrap(cat(base, hMapValue("cookie", sc, true)), hMapValue("x-requested-with", "XMLHttpRequest", true))},
		{"attributes repeated", cat(wrap(cat(base, hMapValue("cookie", sc, true))), wrap(hEntry("user-agent", "x")))},
		{"whole request concatenated, headers first", cat(wrap(cat(base, hEntry("user-agent", "x"))), wrap(hMapValue("cookie", sc, true)))},
		{"map entry with its value twice", wrap(cat(base, msgField(3, cat(strField(1, "cookie"), strField(2, "JSESSIONID=garbage"), strField(2, sc)))))},
		{"map entry with its key twice", wrap(cat(base, msgField(3, cat(strField(1, "x-ignored"), strField(1, "cookie"), strField(2, sc)))))},
		{"HeaderValue with raw_value and value", wrap(cat(base, msgField(13, msgField(1, cat(strField(1, "cookie"), strField(3, sc), strField(2, "JSESSIONID=garbage"))))))},
		{"HeaderValue raw_value twice", wrap(cat(base, msgField(13, msgField(1, cat(strField(1, "cookie"), strField(3, "JSESSIONID=garbage"), strField(3, sc))))))},
		{"HeaderMap message twice, second empty", wrap(cat(base, hMapValue("cookie", sc, true), msgField(13, nil)))},
		{"empty headers map entry, then header_map", wrap(cat(base, msgField(3, nil), hMapValue("cookie", sc, true)))},
	}
	for _, c := range cases {
		var m authv3.CheckRequest
		if err := proto.Unmarshal(c.b, &m); err != nil {
			t.Fatalf("%s: the generated decoder refuses the case: %v", c.name, err)
		}
		canon, err := proto.Marshal(&m)
		if err != nil {
			t.Fatal(err)
		}
		want, got := rawCheck(t, x, canon), rawCheck(t, x, c.b)
		if want.Status != got.Status || want.Allowed != got.Allowed || (want.Bearer() == "") != (got.Bearer() == "") {
			t.Errorf("%s: %s; the generated decoder's message gets %s", c.name, got, want)
		}
	}
	// Invalid UTF-8 in proto3 strings: the generated decoder refuses the
	// request, and so does extauthz — never a decision on the valid rest.
	for _, b := range [][]byte{
		wrap(cat(hMethod("GET"), hPath("/home\xff"), hHost("localhost:8443"), hEntry("cookie", sc))),
		wrap(cat(base, hEntry("cookie\xff", sc), hEntry("cookie", sc))),
	} {
		var m authv3.CheckRequest
		if proto.Unmarshal(b, &m) == nil {
			t.Fatal("the generated decoder accepts invalid UTF-8: the case is wrong")
		}
		if r := rawCheck(t, x, b); r.Allowed || r.Bearer() != "" {
			t.Errorf("invalid UTF-8: extauthz allowed what the generated decoder refuses: %s", r)
		}
	}
	// Malformed encodings: an error, no crash.
	for _, b := range [][]byte{{0x0a}, {0x0a, 0xff, 0xff, 0xff, 0xff, 0x0f}, {0xff}, msgField(1, []byte{0x22, 0x05, 0x12}), cat(wrap(base), []byte{0x0a, 0x80})} {
		if r := rawCheck(t, x, b); r.Allowed {
			t.Errorf("malformed %x: allowed", b)
		}
	}
	x.requireAlive(t)
}

// TestGarbage (issue 11 class 7): forged and garbage cookies, hostile hosts,
// very long paths and weird methods: never a 5xx but the store's 503, never
// a token for a forged cookie, never a panic.
func TestGarbage(t *testing.T) {
	x := routes(t, "garbage")
	_, cookie := login(t, x, "garbage@example.com")
	flip := []byte(cookie)
	flip[len(flip)-1] ^= 1
	cookies := []string{
		"", "JSESSIONID=", "JSESSIONID=x", "JSESSIONID=" + randLabel(44), "JSESSIONID=" + strings.Repeat("A", 4096),
		`JSESSIONID="` + cookie + `"`, "JSESSIONID=" + string(flip), "JSESSIONID=" + cookie[:len(cookie)/2], "JSESSIONID=" + cookie + "=",
		"JSESSIONID=" + cookie + "x", "JSESSIONID=" + strings.ToUpper(cookie), "JSESSIONID=%00", "JSESSIONID=é", "JSESSIONID=" + cookie[1:],
		"JSESSIONID=a.b.c.d", "JSESSIONID=" + strings.Repeat(".", 60), "JSESSIONID=" + strings.Repeat("-_", 40), "jsessionid=" + cookie,
		strings.Repeat("a=b; ", 500) + "JSESSIONID=" + randLabel(44), "JSESSIONID_login_0123456789=" + randLabel(40), "JSESSIONID;JSESSIONID=;=;;",
	}
	hosts := []string{"", "[", "]", ":::", "@", "a:b:c", "😀", "localhost:8443:1", strings.Repeat("h", 10000), "localhost:-1", "[::1]:99999999999"}
	paths := []string{
		"/" + strings.Repeat("a", 8*1024), "/" + strings.Repeat("a/", 32*1024), "/" + strings.Repeat("%", 1000), "/" + strings.Repeat("../", 5000),
		"/" + strings.Repeat("%2e%2e/", 2000), "/" + strings.Repeat(";", 1000), "/?" + strings.Repeat("q=1&", 20000), "/%" + strings.Repeat("f", 1000),
		"/" + strings.Repeat("%41", 20000), "/" + strings.Repeat("x", 512*1024),
	}
	methods := []string{"get", "CONNECT", "TRACE", strings.Repeat("A", 10000), "PROPFIND", "M-SEARCH", "*", "PRI", "GET\t"}
	grpcOnlyMethods := []string{"", "G E T", "GET\x00", "GET\r\nX: y"}
	type shape struct {
		name    string
		q       hreq
		http    bool
		tokenOK bool // the real session cookie is in it
	}
	var shapes []shape
	for _, c := range cookies {
		for _, path := range []string{"/home", "/admin/x", "/logout", "/login/callback?code=x&state=" + randLabel(30)} {
			valid := c == `JSESSIONID="`+cookie+`"`
			if valid && path == "/logout" {
				continue // keeps the session for the rest
			}
			q := navigation("localhost:8443", path)
			if c != "" {
				q = q.with("cookie", c)
			}
			shapes = append(shapes, shape{"cookie " + quote(c) + " " + path, q, true, valid})
			qa := ajax(path, "")
			if c != "" {
				qa = qa.with("cookie", c)
			}
			shapes = append(shapes, shape{"script, cookie " + quote(c) + " " + path, qa, true, valid})
		}
	}
	for _, h := range hosts {
		shapes = append(shapes, shape{"host " + quote(h), ajax("/home", cookie), true, true})
		shapes[len(shapes)-1].q.Host = h
		q := navigation(h, "/x")
		shapes = append(shapes, shape{"navigation, host " + quote(h), q, true, false})
	}
	for _, p := range paths {
		shapes = append(shapes, shape{"path of " + fmt.Sprint(len(p)) + " bytes " + quote(p), ajax(p, cookie), true, true})
		shapes = append(shapes, shape{"navigation, path of " + fmt.Sprint(len(p)) + " bytes " + quote(p), navigation("localhost:8443", p), true, false})
	}
	for _, m := range methods {
		q := ajax("/home", cookie)
		q.Method = m
		shapes = append(shapes, shape{"method " + quote(m), q, true, true})
	}
	for _, m := range grpcOnlyMethods {
		q := ajax("/home", cookie)
		q.Method = m
		shapes = append(shapes, shape{"method " + quote(m), q, false, true})
	}
	var fails []string
	var mu = make(chan struct{}, 1)
	mu <- struct{}{}
	parallel(len(shapes)*2, 8, func(i int) {
		s, p := shapes[i/2], protocols[i%2]
		if p.name == "http" && !s.http {
			return
		}
		r := p.do(x, s.q)
		var bad string
		switch {
		case r.Err != nil && p.name == "grpc" && !(strings.Contains(r.Err.Error(), "ResourceExhausted") && len(s.q.Path) > 64<<10):
			// Over the message limit (the headers' limit, a body's allowance
			// and room for the rest): refused before it is read, and Envoy
			// (whose own header limit is lower) applies status_on_error.
			bad = "gRPC error " + r.Err.Error()
		case r.Status >= 500 && r.Status != 503:
			bad = r.String()
		case r.Status == 503 && r.Header.Get("retry-after") == "":
			bad = "503 without Retry-After: " + r.String()
		case !s.tokenOK && r.Bearer() != "":
			bad = "a token without the session cookie: " + r.String()
		}
		if bad != "" {
			<-mu
			fails = append(fails, p.name+" "+s.name+": "+bad)
			mu <- struct{}{}
		}
	})
	for _, f := range fails {
		t.Error(f)
	}
	t.Logf("%d garbage shapes x 2 protocols: %d failures", len(shapes), len(fails))
	x.requireAlive(t)
	if r := viaGRPC(x, ajax("/home", cookie)); r.Status != 200 {
		t.Errorf("the session after the garbage: %s", r)
	}
}
