package render

import (
	"github.com/mailnode/mailnode/test/invgen"
	"runtime"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailnode/mailnode/inventory"
)

// Benchmark size of the issue: 10,000 domains and 100,000 mailboxes.
const (
	benchDomains   = 10000
	benchMailboxes = 100000
)

func benchInventory(b *testing.B) *inventory.Inventory {
	b.Helper()
	inv, err := inventory.Parse(invgen.Generate(benchDomains, benchMailboxes), "bench.yaml")
	if err != nil {
		b.Fatal(err)
	}
	return inv
}

// peakHeap samples the heap while f runs and returns the highest HeapAlloc.
func peakHeap(f func()) uint64 {
	var peak atomic.Uint64
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			if ms.HeapAlloc > peak.Load() {
				peak.Store(ms.HeapAlloc)
			}
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	f()
	close(stop)
	<-done
	return peak.Load()
}

// BenchmarkRender renders the whole tree for 10,000 domains and 100,000
// mailboxes (inventory already loaded). Target: < 2 s, < 256 MiB.
func BenchmarkRender(b *testing.B) {
	inv := benchInventory(b)
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	invHeap := float64(ms.HeapAlloc) / (1 << 20)
	b.ResetTimer()
	var peak uint64
	for i := 0; i < b.N; i++ {
		p := peakHeap(func() {
			files, err := Render(inv)
			if err != nil {
				b.Fatal(err)
			}
			if len(files) < benchDomains-benchDomains/10 {
				b.Fatalf("%d files", len(files))
			}
		})
		peak = max(peak, p)
	}
	b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
	b.ReportMetric(invHeap, "inventory-heap-MiB")
}

// BenchmarkLoadAndRender is what `mailnode render-config` does before
// writing: parse and validate the YAML, then render.
func BenchmarkLoadAndRender(b *testing.B) {
	doc := invgen.Generate(benchDomains, benchMailboxes)
	runtime.GC()
	b.ResetTimer()
	var peak uint64
	for i := 0; i < b.N; i++ {
		p := peakHeap(func() {
			inv, err := inventory.Parse(doc, "bench.yaml")
			if err != nil {
				b.Fatal(err)
			}
			if _, err := Render(inv); err != nil {
				b.Fatal(err)
			}
		})
		peak = max(peak, p)
	}
	b.ReportMetric(float64(peak)/(1<<20), "peak-heap-MiB")
}
