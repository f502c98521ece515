package main

import (
	"testing"
	"time"

	"github.com/mailnode/mailnode/test/harness"
)

func TestMain(m *testing.M) { harness.Main(m) }

// TestQuick runs the benchmark's smoke mode (`-quick`: every scenario on
// every stack, a few messages each) so that `make test` keeps `make
// bench-e2e` working. It asserts what must hold on any machine: every
// accepted message arrived at the sink exactly once and the queue was empty
// after each measurement, the trusted path signed (mailnode and rspamd RSA+Ed25519,
// classic RSA), the outside path verified. Not the speed targets: those
// need a quiet machine and the full run.
func TestQuick(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end benchmark: skipped with -short")
	}
	t0 := time.Now()
	cfg := Config{Quick: true, Runs: 1, Scale: 1, Sizes: []int{2048, 65536}, Sessions: []int{1, 8}, Timeout: 30 * time.Second, Logf: t.Logf}
	b, err := Setup(cfg)
	defer b.Close()
	if err != nil {
		t.Fatal(err)
	}
	scs := cfg.Scenarios()
	results, err := RunAll(b, scs, t.Logf)
	if err != nil {
		t.Fatal(err)
	}
	if want := len(scs) * len(stackNames); len(results) != want {
		t.Fatalf("%d measurements, want %d", len(results), want)
	}
	for _, r := range results {
		if r.Lost != 0 || r.Duplicates != 0 {
			t.Errorf("%s, %s: %d lost, %d duplicated", r.Stack, r.Scenario, r.Lost, r.Duplicates)
		}
		if r.Accepted <= 0 || r.Delivered <= 0 {
			t.Errorf("%s, %s: accepted %.1f/s, delivered %.1f/s", r.Stack, r.Scenario, r.Accepted, r.Delivered)
		}
	}
	for name, s := range b.stacks {
		for d, kib := range s.hwm() {
			if kib <= 0 {
				t.Errorf("%s/%s: no VmHWM", name, d)
			}
		}
	}
	t.Logf("quick benchmark: %d measurements in %v", len(results), time.Since(t0).Round(time.Millisecond))
}
