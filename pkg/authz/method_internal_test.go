package authz

import (
	"strings"
	"testing"
)

// Reading the keys of an ordinary query costs no allocation, escaped ones
// (JSON:API's page%5Bnumber%5D, jQuery's $.param) included.
func TestOverrideKeysDoNotAllocate(t *testing.T) {
	for _, k := range []string{"page%5Bnumber%5D", "filter%5Bname%5D", "%24filter", "q", "a+b", "_method%5B%5D"} {
		if n := testing.AllocsPerRun(100, func() { isOverrideKey(k) }); n != 0 {
			t.Errorf("isOverrideKey(%q): %v allocations", k, n)
		}
	}
}

// FuzzImpliedMethods: whatever the query and headers, no panic, at most
// maxImplied methods, each a valid method other than the request's own.
func FuzzImpliedMethods(f *testing.F) {
	for _, q := range []string{"_method=DELETE", "%5B_method%5D=PUT&x=1", "]]_method=PATCH;a=b", "X-HTTP-Method-Override%01=DELETE",
		"_method%00x=DELETE", "%u005Fmethod=GET", strings.Repeat("+", 50) + "_method=HEAD", "page%5Bnumber%5D=1&$filter=a%20eq%20b"} {
		f.Add("POST", q, "DELETE")
	}
	f.Fuzz(func(t *testing.T, method, query, override string) {
		implied, ok := impliedMethods(method, query, map[string]string{"x-http-method-override": override})
		if !ok {
			return
		}
		if len(implied) > maxImplied {
			t.Fatalf("%d implied methods", len(implied))
		}
		for _, m := range implied {
			if !validMethod(m) || m == method {
				t.Fatalf("implied %q for %q", m, method)
			}
		}
	})
}
