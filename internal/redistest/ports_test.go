package redistest

import (
	"os"
	"os/exec"
	"strconv"
	"strings"
	"testing"
)

// TestFreePortReserved: ports are outside the ephemeral range, never handed
// out twice, and a second test process does not get one this process holds.
func TestFreePortReserved(t *testing.T) {
	if os.Getenv("FREEPORT_CHILD") != "" {
		for range 200 {
			p, err := FreePort()
			if err != nil {
				t.Fatal(err)
			}
			os.Stdout.WriteString(strconv.Itoa(p) + "\n")
		}
		return
	}
	lo, hi := portRange()
	mine := map[int]bool{}
	for range 200 {
		p, err := FreePort()
		if err != nil {
			t.Fatal(err)
		}
		if p < lo || p >= hi {
			t.Fatalf("port %d outside [%d, %d)", p, lo, hi)
		}
		if mine[p] {
			t.Fatalf("port %d handed out twice", p)
		}
		mine[p] = true
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestFreePortReserved$")
	cmd.Env = append(os.Environ(), "FREEPORT_CHILD=1")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
	n := 0
	for _, f := range strings.Fields(string(out)) {
		p, err := strconv.Atoi(f)
		if err != nil {
			continue // go test's own PASS line
		}
		n++
		if mine[p] {
			t.Errorf("another process got port %d, which this one holds", p)
		}
	}
	if n != 200 {
		t.Fatalf("child printed %d ports, want 200:\n%s", n, out)
	}
}
