package inventory

import (
	"fmt"
	"os"
	"runtime"
	"strings"
	"testing"

	"github.com/mailnode/mailnode/test/invgen"
)

// keepDocs are inventories whose lookups must not change with Keep: the
// example node (recipient delimiter, transports, lists), the small one of
// the tests, and a generated one on both decoders' paths.
func keepDocs(t *testing.T) map[string][]byte {
	example, err := os.ReadFile("../examples/inventory.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return map[string][]byte{
		"example":   example,
		"strict":    []byte(strings.Replace(string(example), "sender_login: domain", "sender_login: strict", 1)),
		"small":     []byte(small),
		"generated": invgen.Generate(30, 200),
	}
}

// keepProbes are addresses to look up in inv: every address it knows, with
// and without an extension, in upper case, and some it does not.
func keepProbes(inv *Inventory) []string {
	probes := []string{"", "x", "x@", "x@outside.test", "root@" + inv.Node.Hostname, "root", "postmaster@" + inv.Node.Hostname}
	for _, e := range append(inv.Owners(), inv.VirtualAliases()...) {
		for _, a := range append([]string{e.Key}, e.Values...) {
			l, d, _ := strings.Cut(a, "@")
			probes = append(probes, a, strings.ToUpper(a), l+"+ext@"+d, l+"-x@"+d, "nobody@"+d)
		}
	}
	return probes
}

func TestKeepDecidesAlike(t *testing.T) {
	for name, doc := range keepDocs(t) {
		t.Run(name, func(t *testing.T) {
			all, err := Parse(doc, "k.yaml")
			if err != nil {
				t.Fatal(err)
			}
			probes := keepProbes(all)
			logins := probes[:min(len(probes), 200)]
			for _, k := range []Keep{KeepDecisions, KeepDomains} {
				kept, err := ParseWith(doc, "k.yaml", LoadOptions{Keep: k})
				if err != nil {
					t.Fatal(err)
				}
				if kept.Digest != all.Digest || len(kept.Domains) != len(all.Domains) {
					t.Fatalf("keep %d: digest or domains differ", k)
				}
				for i, d := range kept.Domains {
					w := all.Domains[i]
					if d.Name != w.Name || d.Class != w.Class || d.Nexthop != w.Nexthop || fmt.Sprint(d.DKIM) != fmt.Sprint(w.DKIM) {
						t.Errorf("keep %d: domain %d is %+v, want %s", k, i, d, w.Name)
					}
					if len(d.Mailboxes)+len(d.Aliases)+len(d.Lists)+len(d.Transports)+len(d.Recipients) != 0 {
						t.Errorf("keep %d: domain %s kept its addresses", k, d.Name)
					}
					if kept.Domain(d.Name) != &kept.Domains[i] {
						t.Errorf("keep %d: Domain(%s) is not the kept domain", k, d.Name)
					}
				}
				if len(kept.LocalDomains()) != len(all.LocalDomains()) || len(kept.RelayDomains()) != len(all.RelayDomains()) {
					t.Errorf("keep %d: local or relay domains differ", k)
				}
				tables := k == KeepDecisions || all.Policy.SenderLogin == "strict"
				for _, a := range probes {
					if kept.Classify(a) != all.Classify(a) || kept.ClassifyDomain(a) != all.ClassifyDomain(a) {
						t.Errorf("keep %d: %q classified differently", k, a)
					}
					if !tables {
						continue
					}
					if kept.LookupAddress(a) != all.LookupAddress(a) || kept.IsMailbox(a) != all.IsMailbox(a) ||
						kept.BaseAddress(a) != all.BaseAddress(a) || fmt.Sprint(kept.ListMembers(a)) != fmt.Sprint(all.ListMembers(a)) {
						t.Errorf("keep %d: %q looked up differently", k, a)
					}
					for _, l := range logins {
						if kept.MayUseSender(l, a) != all.MayUseSender(l, a) {
							t.Errorf("keep %d: MayUseSender(%q, %q) differs", k, l, a)
						}
					}
				}
				for _, c := range []string{"127.0.0.1", "10.20.3.4", "192.0.2.7", "2001:db8:1::5", "203.0.113.99", ""} {
					if kept.Trusted(c) != all.Trusted(c) {
						t.Errorf("keep %d: Trusted(%q) differs", k, c)
					}
				}
			}
		})
	}
}

// A daemon refuses what render-config refuses, with the same problems.
func TestKeepRefusesAlike(t *testing.T) {
	bad := strings.Replace(string(invgen.Generate(30, 200)), "password: ", "password: x", 1)
	_, werr := Parse([]byte(bad), "k.yaml")
	_, kerr := ParseWith([]byte(bad), "k.yaml", LoadOptions{Keep: KeepDecisions})
	if werr == nil || kerr == nil || werr.Error() != kerr.Error() {
		t.Fatalf("problems differ:\n%v\n%v", werr, kerr)
	}
}

// BenchmarkKeep loads 10,000 domains with 100,000 mailboxes with each Keep
// and reports the heap still in use once the inventory is loaded (live-MiB)
// and the bytes allocated by the load (B/op): what a daemon holds for as
// long as it runs, and what a reload churns through.
func BenchmarkKeep(b *testing.B) {
	data := invgen.Generate(10000, 100000)
	for _, k := range []struct {
		name string
		keep Keep
	}{{"all", KeepAll}, {"decisions", KeepDecisions}, {"domains", KeepDomains}} {
		b.Run(k.name, func(b *testing.B) {
			b.ReportAllocs()
			var live uint64
			for i := 0; i < b.N; i++ {
				var before, after runtime.MemStats
				runtime.GC()
				runtime.ReadMemStats(&before)
				inv, err := ParseWith(data, "bench.yaml", LoadOptions{Keep: k.keep})
				if err != nil {
					b.Fatal(err)
				}
				runtime.GC()
				runtime.ReadMemStats(&after)
				live += after.HeapAlloc - before.HeapAlloc
				runtime.KeepAlive(inv)
			}
			b.ReportMetric(float64(live)/float64(b.N)/(1<<20), "live-MiB")
		})
	}
}
