// Package tracing is extauthz's OpenTelemetry traces: one span per check,
// joined to the trace Envoy started (W3C traceparent/tracestate, or B3, in
// the check request's gRPC metadata or HTTP headers), with child spans for
// the session store calls and the identity provider calls it makes.
//
// Tracing is off unless an OTLP endpoint is configured
// (OTEL_EXPORTER_OTLP_ENDPOINT or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT); New
// then returns nil, nothing is wrapped and the check path does no tracing
// work at all. The exporter, the sampler and the resource read the standard
// OTEL_* variables. Spans carry the decision, its reason, the tenant and
// the status; never a token, a cookie, a query string or a secret.
package tracing

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"go.opentelemetry.io/contrib/propagators/b3"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.37.0"
	"go.opentelemetry.io/otel/trace"

	"github.com/extauthz/extauthz/pkg/authz"
)

// ScopeName is the instrumentation scope of extauthz's spans.
const ScopeName = "github.com/extauthz/extauthz"

// Tracer makes extauthz's spans. A nil *Tracer is tracing off: its
// wrappers return what they wrap.
type Tracer struct {
	tracer trace.Tracer
	prop   propagation.TextMapPropagator
}

// NewWithProvider returns a Tracer on a TracerProvider (tests: the SDK's
// with an in-memory exporter).
func NewWithProvider(tp trace.TracerProvider, version string) *Tracer {
	return &Tracer{
		tracer: tp.Tracer(ScopeName, trace.WithInstrumentationVersion(version)),
		// B3 first: when a request carries both, W3C's traceparent wins.
		prop: propagation.NewCompositeTextMapPropagator(
			b3.New(b3.WithInjectEncoding(b3.B3MultipleHeader|b3.B3SingleHeader)),
			propagation.TraceContext{},
		),
	}
}

// Enabled says whether the environment turns tracing on: an OTLP endpoint
// is set, the SDK is not disabled and the traces exporter is not "none".
func Enabled(getenv func(string) string) bool {
	if strings.EqualFold(getenv("OTEL_SDK_DISABLED"), "true") {
		return false
	}
	switch strings.ToLower(strings.TrimSpace(getenv("OTEL_TRACES_EXPORTER"))) {
	case "", "otlp":
	default:
		return false
	}
	return getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != ""
}

// New returns the Tracer the environment configures, exporting over OTLP
// (OTEL_EXPORTER_OTLP_TRACES_PROTOCOL or OTEL_EXPORTER_OTLP_PROTOCOL:
// grpc, or http/protobuf, the default), and a function that flushes and
// stops it; nil and a no-op when tracing is off (see Enabled). The
// exporter's endpoint, headers, TLS and timeout, the sampler
// (OTEL_TRACES_SAMPLER, default parentbased_always_on: Envoy's sampling
// decision is kept) and the resource (OTEL_SERVICE_NAME, default
// "extauthz"; OTEL_RESOURCE_ATTRIBUTES) are read by OpenTelemetry's SDK
// from the process environment.
func New(ctx context.Context, getenv func(string) string, version string) (*Tracer, func(context.Context) error, error) {
	if !Enabled(getenv) {
		return nil, func(context.Context) error { return nil }, nil
	}
	protocol := getenv("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
	if protocol == "" {
		protocol = getenv("OTEL_EXPORTER_OTLP_PROTOCOL")
	}
	var (
		exp sdktrace.SpanExporter
		err error
	)
	switch protocol {
	case "", "http/protobuf":
		exp, err = otlptracehttp.New(ctx)
	case "grpc":
		exp, err = otlptracegrpc.New(ctx)
	default:
		return nil, nil, fmt.Errorf("OTEL_EXPORTER_OTLP_PROTOCOL: %q is neither grpc nor http/protobuf", protocol)
	}
	if err != nil {
		return nil, nil, fmt.Errorf("OpenTelemetry exporter: %w", err)
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(semconv.ServiceVersion(version)))
	if err == nil && getenv("OTEL_SERVICE_NAME") == "" && !strings.Contains(getenv("OTEL_RESOURCE_ATTRIBUTES"), "service.name=") {
		res, err = resource.Merge(res, resource.NewSchemaless(semconv.ServiceName("extauthz")))
	}
	if err != nil && !errors.Is(err, resource.ErrSchemaURLConflict) {
		return nil, nil, fmt.Errorf("OpenTelemetry resource: %w", err)
	}
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	return NewWithProvider(tp, version), tp.Shutdown, nil
}

// Carrier reads the check request's headers: gRPC metadata or HTTP
// headers, by lower-case name.
type Carrier func(name string) string

func (c Carrier) Get(key string) string { return c(key) }
func (Carrier) Set(string, string)      {}
func (Carrier) Keys() []string          { return nil }

// StartCheck starts the span of one check, as the child of the span the
// proxy sent in the check request's headers (its own ext_authz span), if
// any. The returned function ends it with the decision's outcome.
func (t *Tracer) StartCheck(ctx context.Context, protocol string, headers func(string) string) (context.Context, func(*authz.Request, *authz.Decision)) {
	ctx = t.prop.Extract(ctx, Carrier(headers))
	ctx, span := t.tracer.Start(ctx, "extauthz.Check", trace.WithSpanKind(trace.SpanKindServer),
		trace.WithAttributes(attribute.String("extauthz.protocol", protocol)))
	return ctx, func(r *authz.Request, d *authz.Decision) {
		if span.IsRecording() {
			path, _, _ := strings.Cut(r.Path, "?") // the query can carry codes and states
			attrs := []attribute.KeyValue{
				semconv.HTTPRequestMethodOriginal(r.Method), semconv.ServerAddress(r.Host), semconv.URLPath(path),
				semconv.HTTPResponseStatusCode(d.Status),
				attribute.String("extauthz.decision", decision(d.Allow)), attribute.String("extauthz.reason", string(d.Reason)),
			}
			if d.Tenant != "" {
				attrs = append(attrs, attribute.String("extauthz.tenant", d.Tenant), attribute.Bool("extauthz.tenant_verified", d.TenantVerified))
			}
			span.SetAttributes(attrs...)
			if d.Status >= 500 {
				span.SetStatus(codes.Error, string(d.Reason))
			}
		}
		span.End()
	}
}

func decision(allow bool) string {
	if allow {
		return "allow"
	}
	return "deny"
}

// child starts a client span under the check's span; none (ok false)
// outside a sampled check, so that background work (readiness pings, the
// session cache's touches) makes no traces of its own.
func (t *Tracer) child(ctx context.Context, name string, attrs ...attribute.KeyValue) (context.Context, trace.Span, bool) {
	if !trace.SpanFromContext(ctx).IsRecording() {
		return ctx, nil, false // no check, or one Envoy's sampler left out
	}
	ctx, span := t.tracer.Start(ctx, name, trace.WithSpanKind(trace.SpanKindClient), trace.WithAttributes(attrs...))
	return ctx, span, true
}

// end ends a child span, with err as its status.
func end(span trace.Span, err error) {
	if err != nil {
		span.SetStatus(codes.Error, err.Error())
	}
	span.End()
}
