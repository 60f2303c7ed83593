// Command boundsmeasure starts an extauthz binary and measures what
// anonymous traffic costs it (issue 11, class 3), for the figures of the
// closing note; the permanent checks are test/adversarial's.
//
//	go build -o bin/extauthz ./cmd/extauthz
//	go run ./internal/boundsmeasure -bin bin/extauthz -mode tenants -n 50000
//	go run ./internal/boundsmeasure -bin bin/extauthz -mode flood
//
// tenants: n checks over gRPC for hosts of random tenants (half browser
// navigations, which go to the login and so to the tenant's identity
// provider, a local one that knows no tenant; half scripts), then the
// extauthz_checks_total series, the RSS and the outbound fetches. flood:
// ~975 KB of repeated headers over gRPC (header_map and headers) and HTTP,
// then the time and the RSS. MEASURE_GOGC and MEASURE_MAXHDR set GOGC and
// EXTAUTHZ_MAX_HEADER_BYTES.
package main

import (
	"bufio"
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"os/exec"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

func freeAddr() string {
	l, _ := net.Listen("tcp", "127.0.0.1:0")
	defer l.Close()
	return l.Addr().String()
}

func memory(pid int) (rss, hwm int) {
	b, _ := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) >= 2 && f[0] == "VmRSS:" {
			fmt.Sscan(f[1], &rss)
		}
		if len(f) >= 2 && f[0] == "VmHWM:" {
			fmt.Sscan(f[1], &hwm)
		}
	}
	return
}

func series(admin string) int {
	resp, err := http.Get("http://" + admin + "/metrics")
	if err != nil {
		panic(err)
	}
	defer resp.Body.Close()
	n := 0
	s := bufio.NewScanner(resp.Body)
	s.Buffer(make([]byte, 1<<20), 1<<20)
	for s.Scan() {
		if strings.HasPrefix(s.Text(), "extauthz_checks_total{") {
			n++
		}
	}
	return n
}

func main() {
	bin := flag.String("bin", "bin/extauthz", "binary")
	mode := flag.String("mode", "tenants", "tenants or flood")
	n := flag.Int("n", 50000, "random tenants")
	flag.Parse()

	var fetches atomic.Int64
	idp := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fetches.Add(1)
		http.NotFound(w, r)
	})}
	il, _ := net.Listen("tcp", "127.0.0.1:0")
	go idp.Serve(il)

	g, h, a := freeAddr(), freeAddr(), freeAddr()
	cmd := exec.Command(*bin)
	cmd.Env = append(os.Environ(), "EXTAUTHZ_GRPC_ADDR="+g, "EXTAUTHZ_HTTP_ADDR="+h, "EXTAUTHZ_ADMIN_ADDR="+a,
		"EXTAUTHZ_LOG_LEVEL=error", "EXTAUTHZ_SESSION_SECRETS="+strings.Repeat("s-0123456789abcd", 4),
		"TENANT_HOST_PATTERN=^(.*)\\.app\\.localhost$", "EXTAUTHZ_OIDC_ISSUER=http://"+il.Addr().String()+"/{tenant}",
		"EXTAUTHZ_OIDC_CLIENT_ID=client", "GOGC="+os.Getenv("MEASURE_GOGC"))
	if v := os.Getenv("MEASURE_MAXHDR"); v != "" {
		cmd.Env = append(cmd.Env, "EXTAUTHZ_MAX_HEADER_BYTES="+v)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		panic(err)
	}
	defer cmd.Process.Kill()
	for range 100 {
		if r, err := http.Get("http://" + a + "/healthz"); err == nil {
			r.Body.Close()
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	pid := cmd.Process.Pid
	conn, _ := grpc.NewClient(g, grpc.WithTransportCredentials(insecure.NewCredentials()), grpc.WithDefaultCallOptions(grpc.MaxCallSendMsgSize(64<<20)))
	client := authv3.NewAuthorizationClient(conn)
	check := func(host string, headers map[string]string, hm []*corev3.HeaderValue) (*authv3.CheckResponse, error) {
		req := &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{Http: &authv3.AttributeContext_HttpRequest{
			Method: "GET", Host: host, Path: "/x", Scheme: "https", Headers: headers}}}}
		if hm != nil {
			req.Attributes.Request.Http.HeaderMap = &corev3.HeaderMap{Headers: hm}
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		return client.Check(ctx, req)
	}
	check("warm.app.localhost", nil, nil)
	check("warm.app.localhost", map[string]string{"x-requested-with": "XMLHttpRequest"}, nil)
	rss0, hwm0 := memory(pid)
	s0 := series(a)

	switch *mode {
	case "tenants":
		start := time.Now()
		var wg sync.WaitGroup
		next := make(chan int)
		statuses := sync.Map{}
		for range 8 {
			wg.Go(func() {
				for i := range next {
					host := fmt.Sprintf("t%012x.app.localhost", rand.Uint64()&0xffffffffffff)
					var hd map[string]string
					if i%2 == 1 {
						hd = map[string]string{"x-requested-with": "XMLHttpRequest"}
					}
					resp, err := check(host, hd, nil)
					k := fmt.Sprint(resp.GetDeniedResponse().GetStatus().GetCode(), err != nil)
					v, _ := statuses.LoadOrStore(k, new(atomic.Int64))
					v.(*atomic.Int64).Add(1)
				}
			})
		}
		for i := range *n {
			next <- i
		}
		close(next)
		wg.Wait()
		rss1, hwm1 := memory(pid)
		fmt.Printf("%d random tenants (half navigations, half scripts) in %v\n", *n, time.Since(start).Round(time.Millisecond))
		statuses.Range(func(k, v any) bool { fmt.Printf("  answers %v: %d\n", k, v.(*atomic.Int64).Load()); return true })
		fmt.Printf("  extauthz_checks_total series: %d -> %d\n  RSS %d -> %d KiB (peak %d -> %d KiB)\n  outbound discovery fetches: %d\n",
			s0, series(a), rss0, rss1, hwm0, hwm1, fetches.Load())
	case "flood":
		const size = 975 << 10
		var hm []*corev3.HeaderValue
		for got := 0; got < size; got += len("cookie") + 10 + 6 {
			hm = append(hm, &corev3.HeaderValue{Key: "cookie", RawValue: fmt.Appendf(nil, "c=%08d", len(hm))})
		}
		t0 := time.Now()
		resp, err := check("warm.app.localhost", nil, hm)
		fmt.Printf("gRPC header_map, %d cookie entries (~975 KB): %v status %d in %v\n", len(hm), err, resp.GetDeniedResponse().GetStatus().GetCode(), time.Since(t0).Round(time.Millisecond))
		hmap := map[string]string{"cookie": "big=" + strings.Repeat("z", size)}
		t0 = time.Now()
		resp, err = check("warm.app.localhost", hmap, nil)
		fmt.Printf("gRPC headers map, one 975 KB cookie: %v status %d in %v\n", err, resp.GetDeniedResponse().GetStatus().GetCode(), time.Since(t0).Round(time.Millisecond))
		c, _ := net.Dial("tcp", h)
		t0 = time.Now()
		go func() {
			w := bufio.NewWriter(c)
			fmt.Fprintf(w, "GET /x HTTP/1.1\r\nHost: warm.app.localhost\r\n")
			for i := 0; i < size/20; i++ {
				fmt.Fprintf(w, "Cookie: c=%08d\r\n", i)
			}
			io.WriteString(w, "\r\n")
			w.Flush()
		}()
		r, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err == nil {
			fmt.Printf("HTTP, %d Cookie lines (~975 KB): %d in %v\n", size/20, r.StatusCode, time.Since(t0).Round(time.Millisecond))
		} else {
			fmt.Printf("HTTP: %v after %v\n", err, time.Since(t0))
		}
		rss1, hwm1 := memory(pid)
		fmt.Printf("  RSS %d -> %d KiB (peak %d -> %d KiB)\n", rss0, rss1, hwm0, hwm1)
	}
}
