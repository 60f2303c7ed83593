package tracing_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"log/slog"
	"net"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"

	"github.com/extauthz/extauthz/pkg/authz"
	"github.com/extauthz/extauthz/pkg/envoy"
	"github.com/extauthz/extauthz/pkg/idp"
	"github.com/extauthz/extauthz/pkg/session"
	"github.com/extauthz/extauthz/pkg/tenant"
	"github.com/extauthz/extauthz/pkg/tracing"
	"github.com/extauthz/extauthz/proto/sessionpb"
)

const (
	traceID     = "4bf92f3577b34da6a3ce929d0e0e4736"
	parentID    = "00f067aa0ba902b7"
	traceparent = "00-" + traceID + "-" + parentID + "-01"
	accessToken = "the-access-token-never-in-a-span"
	secret      = "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"
)

// fixture is extauthz's check path as run wires it: the engine on a
// memory store holding one session, the store traced, the adapters traced.
type fixture struct {
	spans  *tracetest.InMemoryExporter
	tracer *tracing.Tracer
	engine *authz.Engine
	cookie string
	log    *bytes.Buffer
	svc    *envoy.Service
	http   *envoy.HTTPHandler
}

// newFixture: tracer nil is tracing off; sample false is a provider that
// samples nothing.
func newFixture(tb testing.TB, traced, sample bool, idpClient idp.Client) *fixture {
	tb.Helper()
	f := &fixture{spans: tracetest.NewInMemoryExporter(), log: &bytes.Buffer{}}
	if traced {
		sampler := sdktrace.ParentBased(sdktrace.AlwaysSample())
		if !sample {
			sampler = sdktrace.NeverSample()
		}
		tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(f.spans), sdktrace.WithSampler(sampler))
		f.tracer = tracing.NewWithProvider(tp, "test")
	}
	var store session.Store = session.NewMemoryStore(nil)
	if traced {
		store = f.tracer.InstrumentStore(store)
	}
	keys, err := session.NewKeys([]byte(secret))
	if err != nil {
		tb.Fatal(err)
	}
	sessions := session.NewManager(store, keys, session.Options{IdleTimeout: time.Hour, MaxLifetime: 2 * time.Hour})
	_, f.cookie, err = sessions.Create(context.Background(), &sessionpb.Session{
		AccessToken: accessToken, IdToken: "id-token", RefreshToken: "refresh-token", AccessTokenExpiry: time.Now().Add(time.Hour).Unix(),
	})
	if err != nil {
		tb.Fatal(err)
	}
	f.spans.Reset()
	tenants, err := tenant.New(tenant.Options{AllowedHosts: []string{"app.example"}})
	if err != nil {
		tb.Fatal(err)
	}
	var providers authz.Providers
	if idpClient != nil {
		build := func(string) (idp.Client, error) { return idpClient, nil }
		if traced {
			build = f.tracer.InstrumentIDP(build)
		}
		c, _ := build("")
		providers = authz.StaticProvider{P: c}
	}
	level := slog.LevelDebug // the decision's line
	if _, bench := tb.(*testing.B); bench {
		level = slog.LevelInfo // as in production
	}
	log := slog.New(slog.NewJSONHandler(f.log, &slog.HandlerOptions{Level: level}))
	f.engine = authz.New(sessions, providers, tenants, authz.Options{CookieName: "JSESSIONID"}, log)
	f.svc = envoy.NewService(f.engine, nil, log)
	f.http = envoy.NewHTTPHandler(f.engine, nil, log, "")
	if traced {
		f.svc.Trace(f.tracer)
		f.http.Trace(f.tracer)
	}
	return f
}

func checkRequest(cookie string) *authv3.CheckRequest {
	h := map[string]string{"accept": "text/html"}
	if cookie != "" {
		h["cookie"] = "JSESSIONID=" + cookie
	}
	return &authv3.CheckRequest{Attributes: &authv3.AttributeContext{Request: &authv3.AttributeContext_Request{
		Http: &authv3.AttributeContext_HttpRequest{Method: "GET", Host: "app.example", Path: "/orders?code=secret-code", Scheme: "https", Headers: h}}}}
}

// spansByName are the ended spans, by name.
func (f *fixture) spansByName(t *testing.T) map[string]tracetest.SpanStub {
	t.Helper()
	out := map[string]tracetest.SpanStub{}
	for _, s := range f.spans.GetSpans() {
		out[s.Name] = s
	}
	return out
}

func attr(s tracetest.SpanStub, key string) attribute.Value {
	for _, a := range s.Attributes {
		if string(a.Key) == key {
			return a.Value
		}
	}
	return attribute.Value{}
}

// noSecrets: no span attribute holds the cookie, a token or the query.
func (f *fixture) noSecrets(t *testing.T) {
	t.Helper()
	for _, s := range f.spans.GetSpans() {
		for _, a := range s.Attributes {
			v := a.Value.String()
			for _, secret := range []string{f.cookie, accessToken, "id-token", "refresh-token", "secret-code"} {
				if strings.Contains(v, secret) {
					t.Errorf("span %s attribute %s holds %q", s.Name, a.Key, secret)
				}
			}
		}
	}
}

// TestGRPCCheckJoinsEnvoysTrace: a check over real gRPC (the fast
// decoder) whose metadata carries Envoy's traceparent yields the check's
// span in that trace, child of Envoy's span, and the store's span under it;
// the debug line carries the trace id.
func TestGRPCCheckJoinsEnvoysTrace(t *testing.T) {
	f := newFixture(t, true, true, nil)
	gs := grpc.NewServer(f.svc.ServerOptions()...)
	f.svc.Register(gs)
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	go gs.Serve(lis)
	defer gs.Stop()
	conn, err := grpc.NewClient(lis.Addr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx := metadata.AppendToOutgoingContext(context.Background(), "traceparent", traceparent, "tracestate", "envoy=1")
	resp, err := authv3.NewAuthorizationClient(conn).Check(ctx, checkRequest(f.cookie))
	if err != nil || resp.GetOkResponse() == nil {
		t.Fatalf("check: %v %v", resp, err)
	}

	spans := f.spansByName(t)
	check, ok := spans["extauthz.Check"]
	if !ok {
		t.Fatalf("no check span: %v", f.spans.GetSpans())
	}
	if check.SpanContext.TraceID().String() != traceID || check.Parent.SpanID().String() != parentID || !check.Parent.IsRemote() {
		t.Errorf("check span in trace %s under %s, want trace %s under Envoy's span %s", check.SpanContext.TraceID(), check.Parent.SpanID(), traceID, parentID)
	}
	if check.Parent.TraceState().Get("envoy") != "1" {
		t.Errorf("tracestate not kept: %v", check.Parent.TraceState())
	}
	if check.SpanKind != trace.SpanKindServer || attr(check, "extauthz.decision").AsString() != "allow" || attr(check, "extauthz.reason").AsString() != "session" ||
		attr(check, "http.response.status_code").AsInt64() != 200 || attr(check, "extauthz.protocol").AsString() != "grpc" || attr(check, "url.path").AsString() != "/orders" {
		t.Errorf("check span attributes: %v", check.Attributes)
	}
	get, ok := spans["session.store get"]
	if !ok {
		t.Fatalf("no store span: %v", spans)
	}
	if get.Parent.SpanID() != check.SpanContext.SpanID() || get.SpanContext.TraceID() != check.SpanContext.TraceID() || get.SpanKind != trace.SpanKindClient {
		t.Errorf("store span's parent %s, want the check's %s", get.Parent.SpanID(), check.SpanContext.SpanID())
	}
	f.noSecrets(t)

	var line map[string]any
	if err := json.Unmarshal([]byte(lastLine(f.log.String())), &line); err != nil {
		t.Fatal(err)
	}
	if line["msg"] != "check" || line["trace_id"] != traceID || line["span_id"] != check.SpanContext.SpanID().String() {
		t.Errorf("the decision's debug line: %v, want trace_id %s", line, traceID)
	}
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}

// TestHTTPCheckJoinsB3: the HTTP protocol, with Istio's B3 headers (the
// multi-header form, then the single header).
func TestHTTPCheckJoinsB3(t *testing.T) {
	for name, headers := range map[string]map[string]string{
		"x-b3-*":      {"X-B3-TraceId": traceID, "X-B3-SpanId": parentID, "X-B3-Sampled": "1"},
		"b3":          {"b3": traceID + "-" + parentID + "-1"},
		"traceparent": {"traceparent": traceparent},
	} {
		f := newFixture(t, true, true, nil)
		req := httptest.NewRequest("GET", "/orders", nil)
		req.Host = "app.example"
		req.Header.Set("cookie", "JSESSIONID="+f.cookie)
		for k, v := range headers {
			req.Header.Set(k, v)
		}
		w := httptest.NewRecorder()
		f.http.ServeHTTP(w, req)
		if w.Code != 200 {
			t.Fatalf("%s: %d", name, w.Code)
		}
		check := f.spansByName(t)["extauthz.Check"]
		if check.SpanContext.TraceID().String() != traceID || check.Parent.SpanID().String() != parentID || attr(check, "extauthz.protocol").AsString() != "http" {
			t.Errorf("%s: check span in trace %s under %s", name, check.SpanContext.TraceID(), check.Parent.SpanID())
		}
		f.noSecrets(t)
	}
}

// TestUnsampledMakesNoSpans: Envoy's "not sampled" is kept, and a check
// without a trace starts its own only if the sampler says so.
func TestUnsampledMakesNoSpans(t *testing.T) {
	f := newFixture(t, true, true, nil)
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("traceparent", "00-"+traceID+"-"+parentID+"-00"))
	if resp, _ := f.svc.Check(ctx, checkRequest(f.cookie)); resp.GetOkResponse() == nil {
		t.Fatal("not allowed")
	}
	if n := len(f.spans.GetSpans()); n != 0 {
		t.Errorf("%d spans of an unsampled trace", n)
	}
	// No parent: a new trace (the default sampler is parent-based, always on).
	if resp, _ := f.svc.Check(context.Background(), checkRequest(f.cookie)); resp.GetOkResponse() == nil {
		t.Fatal("not allowed")
	}
	spans := f.spansByName(t)
	if c := spans["extauthz.Check"]; c.Parent.IsValid() || !c.SpanContext.IsValid() || spans["session.store get"].Parent.SpanID() != c.SpanContext.SpanID() {
		t.Errorf("a check without a trace: %v", spans)
	}
}

// fakeIDP answers as an identity provider would, discovery included.
type fakeIDP struct{ refreshErr error }

func (fakeIDP) AuthCodeURL(context.Context, string, string, string, string) (string, error) {
	return "https://idp.example/authorize", nil
}
func (fakeIDP) Exchange(context.Context, string, string, string, string) (*idp.Tokens, error) {
	return &idp.Tokens{AccessToken: accessToken}, nil
}
func (f fakeIDP) Refresh(context.Context, string, string) (*idp.Tokens, error) {
	return nil, f.refreshErr
}
func (fakeIDP) LogoutURL(context.Context, string, string) (string, error) {
	return "https://idp.example/logout", nil
}
func (fakeIDP) Discover(context.Context) error { return errors.New("discovery: connection refused") }
func (fakeIDP) VerifyLogoutToken(context.Context, string) (*idp.Logout, error) {
	return nil, idp.ErrUnsupported
}

// TestIDPSpans: the identity provider's calls are spans under the check's,
// named by what they do, with their errors; the registry still finds
// Discover on the wrapped client.
func TestIDPSpans(t *testing.T) {
	f := newFixture(t, true, true, fakeIDP{refreshErr: idp.ErrRejected})
	// A browser without a session: the check asks the provider for the
	// authorize URL.
	ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("traceparent", traceparent))
	resp, _ := f.svc.Check(ctx, checkRequest(""))
	if resp.GetDeniedResponse().GetStatus().GetCode() != 302 {
		t.Fatalf("want the login redirect: %v", resp)
	}
	spans := f.spansByName(t)
	check, authorize := spans["extauthz.Check"], spans["idp.authorize_url"]
	if authorize.Parent.SpanID() != check.SpanContext.SpanID() || attr(check, "extauthz.reason").AsString() != "login_redirect" {
		t.Errorf("authorize span %v under %s, check %v", authorize.Name, authorize.Parent.SpanID(), check.Attributes)
	}

	build := f.tracer.InstrumentIDP(func(string) (idp.Client, error) { return fakeIDP{refreshErr: idp.ErrRejected}, nil })
	c, _ := build("acme")
	d, ok := c.(interface{ Discover(context.Context) error })
	if !ok {
		t.Fatal("the wrapped client lost Discover: the registry would no longer discover up front")
	}
	f.spans.Reset()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSyncer(f.spans))
	pctx, parent := tp.Tracer("t").Start(context.Background(), "check")
	_ = d.Discover(pctx)
	_, _ = c.Refresh(pctx, "refresh-token", "subject")
	_, _ = c.Exchange(pctx, "code", "verifier", "https://app.example/login/callback", "nonce")
	parent.End()
	spans = f.spansByName(t)
	for name, wantErr := range map[string]bool{"idp.discovery": true, "idp.refresh": true, "idp.exchange": false} {
		s, ok := spans[name]
		if !ok {
			t.Errorf("no %s span: %v", name, spans)
			continue
		}
		if s.Parent.SpanID() != parent.SpanContext().SpanID() || attr(s, "extauthz.tenant").AsString() != "acme" || (s.Status.Code == codes.Error) != wantErr {
			t.Errorf("%s: parent %s, attributes %v, status %v", name, s.Parent.SpanID(), s.Attributes, s.Status)
		}
	}
	if !attr(spans["idp.refresh"], "extauthz.idp.rejected").AsBool() {
		t.Error("a refused refresh is not marked rejected")
	}
	f.noSecrets(t)

	// Outside a check (no span in the context): nothing.
	f.spans.Reset()
	_ = d.Discover(context.Background())
	if n := len(f.spans.GetSpans()); n != 0 {
		t.Errorf("%d spans outside a check", n)
	}
}

// TestOff: without an OTLP endpoint tracing is off: New returns nil, and
// the nil Tracer's wrappers return what they wrap.
func TestOff(t *testing.T) {
	env := func(kv ...string) func(string) string {
		return func(k string) string {
			for i := 0; i < len(kv); i += 2 {
				if kv[i] == k {
					return kv[i+1]
				}
			}
			return ""
		}
	}
	for _, c := range []struct {
		env []string
		on  bool
	}{
		{nil, false},
		{[]string{"OTEL_SERVICE_NAME", "x", "OTEL_TRACES_SAMPLER", "always_on"}, false},
		{[]string{"OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318"}, true},
		{[]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://collector:4318/v1/traces"}, true},
		{[]string{"OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318", "OTEL_SDK_DISABLED", "true"}, false},
		{[]string{"OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318", "OTEL_TRACES_EXPORTER", "none"}, false},
	} {
		if got := tracing.Enabled(env(c.env...)); got != c.on {
			t.Errorf("%v: enabled %v, want %v", c.env, got, c.on)
		}
	}
	tr, stop, err := tracing.New(context.Background(), env(), "test")
	if tr != nil || err != nil || stop(context.Background()) != nil {
		t.Fatalf("off: %v %v", tr, err)
	}
	s := session.NewMemoryStore(nil)
	if tr.InstrumentStore(s) != session.Store(s) {
		t.Error("a nil Tracer wraps the store")
	}
	if _, _, err := tracing.New(context.Background(), env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1", "OTEL_EXPORTER_OTLP_PROTOCOL", "thrift"), "test"); err == nil {
		t.Error("an unknown OTLP protocol is accepted")
	}
	for _, proto := range []string{"grpc", "http/protobuf"} {
		tr, stop, err := tracing.New(context.Background(), env("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:1", "OTEL_EXPORTER_OTLP_PROTOCOL", proto), "test")
		if tr == nil || err != nil {
			t.Fatalf("%s: %v", proto, err)
		}
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		_ = stop(ctx) // nothing listens: the flush may fail; it must return
		cancel()
	}
}
