package server

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	"google.golang.org/grpc"
)

// serveListeners runs the server with short timeouts and returns the HTTP
// and admin addresses.
func serveListeners(t *testing.T, timeouts Timeouts) (httpAddr, adminAddr, grpcAddr string) {
	t.Helper()
	h, a, g := listen(t), listen(t), listen(t)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, Options{
			GRPC: g, HTTP: h, Admin: a, Register: func(grpc.ServiceRegistrar) {}, Ready: func(context.Context) error { return nil },
			HTTPHandler: http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { w.WriteHeader(http.StatusOK) }),
			Metrics:     http.NotFoundHandler(), ShutdownTimeout: time.Second, Timeouts: timeouts,
			Log: slog.New(slog.NewTextHandler(t.Output(), nil)),
		})
	}()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	return h.Addr().String(), a.Addr().String(), g.Addr().String()
}

// closedWithin says whether the server closes c within d (reading what it
// sends meanwhile).
func closedWithin(c net.Conn, d time.Duration) (time.Duration, bool) {
	start := time.Now()
	c.SetReadDeadline(start.Add(d))
	_, err := io.Copy(io.Discard, c)
	var ne net.Error
	if errors.As(err, &ne) && ne.Timeout() {
		return time.Since(start), false
	}
	return time.Since(start), true
}

func dial(t *testing.T, addr string) net.Conn {
	t.Helper()
	c, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// TestIdleConnectionsAreClosed: on the HTTP and the admin listener, a
// connection that sends nothing, one kept alive after a request, and one
// that sends its body slowly are all closed by the server in bounded time.
func TestIdleConnectionsAreClosed(t *testing.T) {
	timeouts := Timeouts{ReadHeader: 300 * time.Millisecond, Read: 600 * time.Millisecond, Idle: 300 * time.Millisecond}
	httpAddr, adminAddr, _ := serveListeners(t, timeouts)
	for name, addr := range map[string]string{"http": httpAddr, "admin": adminAddr} {
		path := "/app"
		if name == "admin" {
			path = "/healthz"
		}
		t.Run(name+"/silent", func(t *testing.T) {
			if took, ok := closedWithin(dial(t, addr), 5*time.Second); !ok {
				t.Fatalf("a connection that sends nothing is open after %v", took)
			}
		})
		t.Run(name+"/kept alive", func(t *testing.T) {
			c := dial(t, addr)
			io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n\r\n")
			r := bufio.NewReader(c)
			resp, err := http.ReadResponse(r, nil)
			if err != nil || resp.StatusCode != 200 || resp.Close {
				t.Fatalf("%v %v", resp, err)
			}
			io.Copy(io.Discard, resp.Body)
			start := time.Now()
			c.SetReadDeadline(start.Add(5 * time.Second))
			if _, err := r.ReadByte(); err != io.EOF {
				t.Fatalf("an idle kept-alive connection: %v after %v, want EOF", err, time.Since(start))
			}
			if took := time.Since(start); took < timeouts.Idle/2 {
				t.Fatalf("closed after %v, before the idle timeout", took)
			}
		})
		t.Run(name+"/slow header", func(t *testing.T) {
			c := dial(t, addr)
			io.WriteString(c, "GET "+path+" HTTP/1.1\r\nHost: x\r\n")
			if took, ok := closedWithin(c, 5*time.Second); !ok {
				t.Fatalf("a request whose headers never end is open after %v", took)
			}
		})
		t.Run(name+"/slow body", func(t *testing.T) {
			c := dial(t, addr)
			io.WriteString(c, "POST "+path+" HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nx")
			if took, ok := closedWithin(c, 5*time.Second); !ok {
				t.Fatalf("a request whose body never ends is open after %v", took)
			}
		})
	}
}

// TestGRPCStalledCallsAreBounded: calls that declare a message and never
// send it (each may hold a buffer of the declared size) are at most
// MaxConcurrentStreams per connection, and their connection is closed
// after ConnectionAge plus Read, although it is never idle.
func TestGRPCStalledCallsAreBounded(t *testing.T) {
	timeouts := Timeouts{ReadHeader: time.Second, Read: 300 * time.Millisecond, Idle: time.Hour, ConnectionAge: 500 * time.Millisecond}
	_, _, grpcAddr := serveListeners(t, timeouts)
	c := dial(t, grpcAddr)
	io.WriteString(c, http2.ClientPreface)
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for i := range MaxConcurrentStreams + 50 {
		hb.Reset()
		for _, kv := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":path", "/grpc.health.v1.Health/Check"},
			{":authority", "x"}, {"content-type", "application/grpc"}, {"te", "trailers"}} {
			enc.WriteField(hpack.HeaderField{Name: kv[0], Value: kv[1]})
		}
		id := uint32(2*i + 1)
		fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hb.Bytes(), EndHeaders: true})
		fr.WriteData(id, false, []byte{0, 0, 0, 0x40, 0}) // a 16 KiB message, never sent
	}
	start := time.Now()
	c.SetReadDeadline(start.Add(10 * time.Second))
	var advertised uint32
	refused, goaway := 0, false
	for {
		f, err := fr.ReadFrame()
		if err != nil {
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() {
				t.Fatalf("a connection of stalled calls still open after %v", time.Since(start))
			}
			break // closed
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if v, ok := f.Value(http2.SettingMaxConcurrentStreams); ok {
				advertised = v
			}
			if !f.IsAck() {
				fr.WriteSettingsAck()
			}
		case *http2.RSTStreamFrame:
			if f.ErrCode == http2.ErrCodeRefusedStream || f.ErrCode == http2.ErrCodeProtocol {
				refused++
			}
		case *http2.GoAwayFrame:
			goaway = true
		case *http2.PingFrame:
			if !f.IsAck() {
				fr.WritePing(true, f.Data)
			}
		}
	}
	took := time.Since(start)
	if advertised != MaxConcurrentStreams {
		t.Errorf("SETTINGS_MAX_CONCURRENT_STREAMS %d, want %d", advertised, MaxConcurrentStreams)
	}
	if refused < 50 {
		t.Errorf("%d of %d streams over the limit refused", refused, 50)
	}
	if !goaway {
		t.Error("no GOAWAY before the close")
	}
	t.Logf("%d stalled calls: %d refused, connection closed after %v (age %v + grace %v)", MaxConcurrentStreams+50, refused, took, timeouts.ConnectionAge, timeouts.Read)
}

// TestHTTPHeaderLimit: a request head over the limit gets 431 at once.
func TestHTTPHeaderLimit(t *testing.T) {
	httpAddr, _, _ := serveListeners(t, Timeouts{})
	c := dial(t, httpAddr)
	go io.WriteString(c, "GET /app HTTP/1.1\r\nHost: x\r\nX-Big: "+strings.Repeat("b", 200<<10)+"\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(c), nil)
	if err != nil || resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
		t.Fatalf("200 KiB of headers: %v %v", resp, err)
	}
}

// TestOneSourceCannotTakeEverySlot: once half a listener's slots are
// taken, a source holding a quarter of them gets no more (closed at once);
// another source still gets in, and a lone proxy gets half the slots.
func TestOneSourceCannotTakeEverySlot(t *testing.T) {
	l := limitListener(listen(t), 8) // a quarter: 2; half: 4
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() { io.Copy(io.Discard, c); c.Close() }() // open until the client closes
		}
	}()
	addr := l.Addr().String()
	from := func(src string) net.Conn {
		d := net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP(src)}}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		return c
	}
	open := func(c net.Conn) bool {
		_, closed := closedWithin(c, 200*time.Millisecond)
		return !closed
	}
	var proxy []net.Conn
	for range 4 {
		c := from("127.0.0.1")
		if !open(c) {
			t.Fatalf("a lone source's connection %d of 4 (half the slots) was closed", len(proxy)+1)
		}
		proxy = append(proxy, c)
	}
	if open(from("127.0.0.1")) {
		t.Fatal("a fifth connection from one source, with half the slots taken, is open")
	}
	if !open(from("127.0.0.2")) {
		t.Fatal("another source's connection was closed")
	}
	// Below half again, the source gets in.
	proxy[0].Close()
	proxy[1].Close()
	time.Sleep(50 * time.Millisecond) // the server sees the closes
	if !open(from("127.0.0.1")) {
		t.Fatal("with fewer than half the slots taken, the source gets no connection")
	}
}

// TestSource: sources are addresses (not IPv6 /64s, which pods of a
// cluster share), IPv4-mapped ones as IPv4.
func TestSource(t *testing.T) {
	a := func(s string) net.Addr { ap := netip.MustParseAddrPort(s); return net.TCPAddrFromAddrPort(ap) }
	if source(a("[fd00::e47:1]:5")) == source(a("[fd00::a77a:c4]:6")) {
		t.Error("two addresses of one /64 (the proxy's pod and another) are one source")
	}
	if source(a("[::ffff:127.0.0.1]:5")) != source(a("127.0.0.1:6")) {
		t.Error("an IPv4-mapped address is another source than its IPv4 address")
	}
	if source(a("127.0.0.1:5")) == source(a("127.0.0.2:5")) {
		t.Error("two IPv4 addresses are one source")
	}
}
