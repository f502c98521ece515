package render

import (
	"github.com/mailnode/mailnode/test/invgen"
	"os"
	"testing"
)

// TestWriteBenchInventory writes the benchmark inventory to the file named
// by $MAILNODE_BENCH_INVENTORY, for timing the real command:
//
//	MAILNODE_BENCH_INVENTORY=/tmp/bench.yaml go test ./render -run TestWriteBenchInventory
//	/usr/bin/time -v mailnode render-config --inventory /tmp/bench.yaml --out /tmp/bench-out
func TestWriteBenchInventory(t *testing.T) {
	out := os.Getenv("MAILNODE_BENCH_INVENTORY")
	if out == "" {
		t.Skip("set MAILNODE_BENCH_INVENTORY=FILE to write the benchmark inventory")
	}
	if err := os.WriteFile(out, invgen.Generate(benchDomains, benchMailboxes), 0o644); err != nil {
		t.Fatal(err)
	}
}
