package tracing_test

import (
	"context"
	"testing"

	"google.golang.org/grpc/metadata"
)

// BenchmarkCheck is a valid session's check through the gRPC adapter, the
// engine and the store: tracing off (nothing wrapped: the cost must be the
// one without tracing), on but not sampled, and on with every check
// sampled and exported (in memory). Envoy's traceparent in the metadata.
func BenchmarkCheck(b *testing.B) {
	for _, c := range []struct {
		name           string
		traced, sample bool
	}{{"off", false, false}, {"on-unsampled", true, false}, {"on-sampled", true, true}} {
		b.Run(c.name, func(b *testing.B) {
			f := newFixture(b, c.traced, c.sample, nil)
			req := checkRequest(f.cookie)
			sampled := "01"
			if !c.sample {
				sampled = "00"
			}
			ctx := metadata.NewIncomingContext(context.Background(), metadata.Pairs("traceparent", "00-"+traceID+"-"+parentID+"-"+sampled))
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				if resp, _ := f.svc.Check(ctx, req); resp.GetOkResponse() == nil {
					b.Fatal("not allowed")
				}
				if i%1024 == 0 {
					f.spans.Reset()
				}
			}
		})
	}
}
