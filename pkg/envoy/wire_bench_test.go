package envoy

import (
	"testing"

	"github.com/extauthz/extauthz/pkg/authz"
)

func BenchmarkFastDecode(b *testing.B) {
	msg := wireSamples()["full"]
	b.ReportAllocs()
	for b.Loop() {
		var r authz.Request
		if _, err := decodeCheck(msg, &r, DefaultMaxHeaderBytes); err != nil {
			b.Fatal(err)
		}
	}
}
