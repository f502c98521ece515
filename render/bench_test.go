package render

import (
	"fmt"
	"runtime"
	"strings"
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

// GenerateInventory returns a valid inventory document with the given
// number of domains (every tenth a relay domain) and mailboxes spread over
// the local ones, each local domain with aliases, a list and DKIM selectors.
func GenerateInventory(domains, mailboxes int) []byte {
	var b strings.Builder
	b.WriteString(`node:
  hostname: mx1.bench.test
  addresses: [203.0.113.10, "2001:db8::10"]
  trusted_networks: [127.0.0.0/8, 10.20.0.0/16]
unix_users: [root]
dkim: {key_dir: /nonexistent/mailnode-bench}
domains:
`)
	local := domains - domains/10
	perDomain := mailboxes / local
	extra := mailboxes % local
	const hash = "{SHA512-CRYPT}$6$e292H7vf11AQhxPe$GRNYo3/TyFuf4C.TIJj55u..HzXLVeiSv3CZ.3vXJqJYj36syKSOuwXyvtXeBh8oJ3wJf110K0/i2M3mJBJML."
	li := 0
	for i := 0; i < domains; i++ {
		if i%10 == 9 {
			fmt.Fprintf(&b, "  - name: relay%d.test\n    class: relay\n    nexthop: \"[mx.relay%d.test]:25\"\n", i, i)
			continue
		}
		n := perDomain
		if li < extra {
			n++
		}
		li++
		fmt.Fprintf(&b, "  - name: d%d.test\n    dkim: [{selector: s1, algorithm: rsa}, {selector: s2, algorithm: ed25519}]\n    mailboxes:\n", i)
		for j := 0; j < n; j++ {
			fmt.Fprintf(&b, "      - {user: u%d, password: %q, aliases: [a%d]}\n", j, hash, j)
		}
		b.WriteString("    aliases: {postmaster: u0, sales: [u0, \"x@outside.test\"]}\n")
		b.WriteString("    lists: {staff: [u0")
		for j := 1; j < min(n, 5); j++ {
			fmt.Fprintf(&b, ", u%d", j)
		}
		b.WriteString("]}\n")
	}
	return []byte(b.String())
}

func benchInventory(b *testing.B) *inventory.Inventory {
	b.Helper()
	inv, err := inventory.Parse(GenerateInventory(benchDomains, benchMailboxes), "bench.yaml")
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
	doc := GenerateInventory(benchDomains, benchMailboxes)
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
