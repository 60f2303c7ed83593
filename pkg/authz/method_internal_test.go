package authz

import "testing"

// Reading the keys of an ordinary query costs no allocation, escaped ones
// (JSON:API's page%5Bnumber%5D, jQuery's $.param) included.
func TestOverrideKeysDoNotAllocate(t *testing.T) {
	for _, k := range []string{"page%5Bnumber%5D", "filter%5Bname%5D", "%24filter", "q", "a+b", "_method%5B%5D"} {
		if n := testing.AllocsPerRun(100, func() { isOverrideKey(k) }); n != 0 {
			t.Errorf("isOverrideKey(%q): %v allocations", k, n)
		}
	}
}
