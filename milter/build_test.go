package milter

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"

	"github.com/mailnode/mailnode/spam/spamtest"
)

// TestBuilderReloadKeepsNoSockets: milterd's SIGHUP builds a new Filter;
// the resolver is kept while node.resolver stays the same and closed when
// it changed, so that after many reloads with DNS traffic in between the
// process holds no more sockets than one resolver's idle ones (at most 16),
// and none once the Builder is closed.
func TestBuilderReloadKeepsNoSockets(t *testing.T) {
	fds := func() int {
		es, err := os.ReadDir("/proc/self/fd")
		if err != nil {
			t.Skip("no /proc/self/fd:", err)
		}
		return len(es)
	}
	servers := []*spamtest.DNS{spamtest.StartDNS(t, ""), spamtest.StartDNS(t, "")}
	local, _ := testKeys(t)
	base := fds()
	b := &Builder{DNSTimeout: time.Second}
	var n int
	reload := func(i int) {
		inv := testInventory(t)
		inv.Node.Resolver = servers[i/3%2].Addr // three reloads on one, three on the other
		f := b.Filter(inv, local)
		lookup := f.Checks[1].(*DKIMCheck).LookupTXT
		var wg sync.WaitGroup
		for range 8 { // several sockets at once, uncached names
			n++
			wg.Add(1)
			go func(n int) {
				defer wg.Done()
				lookup(context.Background(), fmt.Sprintf("s%d._domainkey.example.com", n))
			}(n)
		}
		wg.Wait()
	}
	for i := range 30 {
		reload(i)
		if got := fds(); got > base+16 {
			t.Fatalf("after %d reloads: %d open descriptors, %d before the first", i+1, got, base)
		}
	}
	b.Close()
	if got := fds(); got != base {
		t.Errorf("after Close: %d open descriptors, %d before the first filter", got, base)
	}
}

// The Builder's filter tries milterd's DNS cache first everywhere it
// looks up: the inbound checks and the ARC sealers' keys, with or without
// metrics around the resolver.
func TestBuilderChecksCacheFirst(t *testing.T) {
	local, _ := testKeys(t)
	for _, m := range []*Metrics{nil, NewMetrics()} {
		b := &Builder{DNSTimeout: time.Second, Metrics: m}
		inv := testInventory(t)
		f := b.Filter(inv, local)
		if f.ARC == nil || !f.ARC.CacheFirst {
			t.Errorf("metrics %v: ARC sealing %+v, want CacheFirst", m != nil, f.ARC)
		}
		for _, c := range f.Checks {
			var first bool
			switch c := c.(type) {
			case *SPFCheck:
				first = c.CacheFirst
			case *DKIMCheck:
				first = c.CacheFirst
			case *DMARCCheck:
				first = c.CacheFirst
			case *SpamCheck:
				first = c.CacheFirst
			}
			if !first {
				t.Errorf("metrics %v: %s does not try the cache first", m != nil, c.Name())
			}
		}
		b.Close()
	}
}
