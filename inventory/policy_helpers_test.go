package inventory

import (
	"strings"
	"testing"
)

var lookupSeeds = []string{
	"alice@example.com", "ALICE@EXAMPLE.COM", "alice@example.com.", "<alice@example.com>",
	"x@Corp-B.test.", "x@sub.corp-b.test", "x@example.com.evil.org", "x@xn--bcher-kva.example",
	"x@bücher.example", "root@mx1.example.com", "", "alice", "x@", "x@.", "x@a..b",
	"x@[127.0.0.1]", "x@exa mple.com", "a@b@example.com", "all-staff@example.com",
	"All-Staff@Example.COM.", "x@ab--cd.example", "x@-a.example", "x@a-.example",
	"x@example.com..", " alice@example.com", "x@XN--BCHER-KVA.EXAMPLE", "\"a@b\"@example.com",
	"team@xn--bcher-kva.example.", "x@xn--zz.example", "x@xn--bcher-kva.example.evil", "x@ab--cd.xn--bcher-kva.example",
}

// checkLookup asserts that the fast path agrees with the slow one.
func checkLookup(t *testing.T, inv *Inventory, addr string) {
	a := inv.LookupAddress(addr)
	if c := inv.Classify(addr); a.Class != c {
		t.Errorf("LookupAddress(%q).Class = %v, Classify = %v", addr, a.Class, c)
	}
	if l := inv.IsList(addr); a.List != l {
		t.Errorf("LookupAddress(%q).List = %v, IsList = %v", addr, a.List, l)
	}
	if n := NormalizeAddress(addr); a.Normalized() != n {
		t.Errorf("LookupAddress(%q).Normalized() = %q, NormalizeAddress = %q", addr, a.Normalized(), n)
	}
	if l, d := SplitAddress(addr); a.Local != l || a.Domain != d {
		t.Errorf("LookupAddress(%q) = %q, %q; SplitAddress = %q, %q", addr, a.Local, a.Domain, l, d)
	}
}

func TestLookupAddressAgreesWithClassify(t *testing.T) {
	inv := mustParse(t, small)
	for _, s := range lookupSeeds {
		checkLookup(t, inv, s)
	}
	if a := inv.LookupAddress("All-Staff@Example.COM."); !a.List || a.Class != Local {
		t.Errorf("list not found: %+v", a)
	}
}

func FuzzLookupAddress(f *testing.F) {
	for _, s := range lookupSeeds {
		f.Add(s)
	}
	inv := mustParse(f, small)
	f.Fuzz(func(t *testing.T, addr string) {
		checkLookup(t, inv, addr)
	})
}

// FuzzNormalizeDomain: NormalizeDomain's hand-checked path for plain ASCII
// names gives what IDNA gives, and refuses what IDNA refuses.
func FuzzNormalizeDomain(f *testing.F) {
	for _, s := range lookupSeeds {
		f.Add(s)
		if at := strings.LastIndexByte(s, '@'); at >= 0 {
			f.Add(s[at+1:])
		}
	}
	for _, s := range []string{"EXAMPLE.com", "a.b.c.", " mx1.example.com ", "a--b.example", "1.2.3.4", "x" + string(make([]byte, 64))} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, gerr := NormalizeDomain(s)
		want, werr := normalizeDomainIDNA(s)
		if got != want || (gerr == nil) != (werr == nil) {
			t.Fatalf("NormalizeDomain(%q) = %q, %v; through IDNA %q, %v", s, got, gerr, want, werr)
		}
	})
}
