package authz_test

import (
	"flag"
	"fmt"
	"os"
	"testing"
)

// fixtureCache: the engine's tests run twice, the second time with the
// session cache in front of the store (as cmd/extauthz runs by default).
// Benchmarks run once (BenchmarkCheckValidSessionCached is the cache's).
var fixtureCache bool

func TestMain(m *testing.M) {
	code := m.Run()
	if code != 0 || flag.Lookup("test.bench").Value.String() != "" {
		os.Exit(code)
	}
	fixtureCache = true
	fmt.Println("again with the session cache:")
	os.Exit(m.Run())
}
