package adversarial_test

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

func floodHeaders(name string, size int, distinct bool) [][2]string {
	var hs [][2]string
	val := "v-" + strings.Repeat("x", 60)
	if name == "x-forwarded-proto" {
		val = "https"
	}
	if name == "cookie" {
		val = "c=" + strings.Repeat("y", 60)
	}
	for n := 0; n < size; {
		k := name
		if distinct {
			k = fmt.Sprintf("%s-%d", name, len(hs))
		}
		hs = append(hs, [2]string{k, val})
		n += len(k) + len(val) + 4
	}
	return hs
}

// TestHeaderFlood (issue 11 class 3): a ~975 KB request is answered within
// a second with 431 (HTTP) or a clear deny / RESOURCE_EXHAUSTED (gRPC); the
// process stays up and its RSS does not explode.
func TestHeaderFlood(t *testing.T) {
	x := start(t, "flood", "EXTAUTHZ_LOG_LEVEL", "info")
	_, cookie := login(t, x, "flooder@example.com")
	rss0, peak0 := x.memory(t)
	const size = 975 * 1024
	base := ajax("/api", cookie)
	cases := []struct {
		name string
		q    hreq
	}{
		{"cookie lines", base.with()},
		{"x-forwarded-proto lines", base.with()},
		{"one huge cookie", base.with("cookie", "big="+strings.Repeat("z", size))},
		{"many distinct headers", base.with()},
		{"x-csrf-token lines", base.with()},
	}
	cases[0].q.H = append(cases[0].q.H, floodHeaders("cookie", size, false)...)
	cases[1].q.H = append(cases[1].q.H, floodHeaders("x-forwarded-proto", size, false)...)
	cases[3].q.H = append(cases[3].q.H, floodHeaders("x-h", size, true)...)
	cases[4].q.H = append(cases[4].q.H, floodHeaders("x-csrf-token", size, false)...)

	worst := time.Duration(0)
	for _, c := range cases {
		for _, p := range []struct {
			name string
			do   func(*instance, hreq) hres
			raw  bool
		}{{"http", viaHTTP, false}, {"grpc header_map", viaGRPC, true}, {"grpc headers", viaGRPC, false}} {
			q := c.q
			q.RawHeaders = p.raw
			r := p.do(x, q)
			worst = max(worst, r.Took)
			t.Logf("%s, %s: %s in %s", p.name, c.name, r, r.Took.Round(time.Millisecond))
			ok := false
			switch {
			case p.name == "http":
				ok = r.Status == http.StatusRequestHeaderFieldsTooLarge
			case r.Err != nil:
				ok = strings.Contains(r.Err.Error(), "ResourceExhausted")
			default:
				ok = !r.Allowed && (r.Status == http.StatusRequestHeaderFieldsTooLarge || r.Status == http.StatusBadRequest)
			}
			if !ok {
				t.Errorf("%s, %s: %s, want 431 (http) or 431/400/RESOURCE_EXHAUSTED (grpc)", p.name, c.name, r)
			}
			if r.Took > time.Second {
				t.Errorf("%s, %s: answered in %s, want within 1s", p.name, c.name, r.Took)
			}
			x.requireAlive(t)
		}
	}
	// Four at once.
	t0 := time.Now()
	parallel(4, 4, func(i int) {
		q := cases[i%len(cases)].q
		q.RawHeaders = i%2 == 1
		protocols[i%2].do(x, q)
	})
	four := time.Since(t0)
	rss1, peak1 := x.memory(t)
	t.Logf("MEASURE header flood (%d KiB): slowest single answer %s, four at once %s; RSS %d -> %d KiB, peak RSS %d -> %d KiB",
		size/1024, worst.Round(time.Millisecond), four.Round(time.Millisecond), rss0, rss1, peak0, peak1)
	if peak1 > 200*1024 {
		t.Errorf("peak RSS %d KiB after the header flood, want well under 200 MiB", peak1)
	}
	x.requireAlive(t)
	if r := viaGRPC(x, ajax("/api", cookie)); r.Status != 200 {
		t.Errorf("the session after the flood: %s", r)
	}
}

// TestIdleHTTPConnection (issue 11 class 3): an idle connection to the HTTP
// listener is closed after a bounded time.
func TestIdleHTTPConnection(t *testing.T) {
	t.Parallel()
	x := start(t, "idle", "EXTAUTHZ_HTTP_IDLE_TIMEOUT", "1s", "EXTAUTHZ_HTTP_READ_HEADER_TIMEOUT", "1s")
	closedWithin := func(c net.Conn, d time.Duration) (bool, time.Duration) {
		t0 := time.Now()
		_ = c.SetReadDeadline(time.Now().Add(d))
		_, err := io.Copy(io.Discard, c)
		return err == nil || !isTimeout(err), time.Since(t0)
	}
	// After a request, kept alive and idle.
	c, err := net.Dial("tcp", x.HTTPAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fmt.Fprintf(c, "GET /public/x HTTP/1.1\r\nHost: localhost:8443\r\n\r\n")
	buf := make([]byte, 4096)
	_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if n, err := c.Read(buf); err != nil || !strings.HasPrefix(string(buf[:n]), "HTTP/1.1 ") {
		t.Fatalf("first request: %q %v", buf[:n], err)
	}
	closed, after := closedWithin(c, 4*time.Second)
	// A connection that never sends a byte.
	c2, err := net.Dial("tcp", x.HTTPAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer c2.Close()
	closed2, after2 := closedWithin(c2, 8*time.Second)
	t.Logf("MEASURE idle HTTP connection closed after a request: %v (%s); silent connection closed: %v (%s)", closed, after.Round(time.Millisecond), closed2, after2.Round(time.Millisecond))
	if !closed2 {
		t.Errorf("a connection that sends nothing is still open after %s", after2)
	}
	if !closed {
		t.Errorf("an idle keep-alive connection is still open after %s with EXTAUTHZ_HTTP_IDLE_TIMEOUT=1s", after)
	}
}

func isTimeout(err error) bool {
	ne, ok := err.(net.Error)
	return ok && ne.Timeout()
}
