package inventory

import (
	"fmt"
	"runtime"
	"slices"
	"testing"

	"github.com/mailnode/mailnode/test/invgen"
)

// A frozen table answers every lookup as the map it was built from.
func TestTableFrozenAnswersAsMap(t *testing.T) {
	for _, n := range []int{0, 1, 7, 8, 9, 1000, 5000} {
		want := map[string][]string{}
		tb := newTable(0)
		for i := 0; i < n; i++ {
			k := fmt.Sprintf("a%d@d%d.test", i, i%13)
			var l []string
			switch i % 4 {
			case 0: // nil: a key with no list
			case 1:
				l = []string{}
			default:
				for j := 0; j < i%4+1; j++ {
					l = append(l, fmt.Sprintf("t%d.%d@x.test", i, j))
				}
			}
			want[k] = l
			tb.set(k, l)
		}
		tb.freeze()
		if tb.m != nil || tb.len() != n {
			t.Fatalf("n=%d: frozen %v, len %d", n, tb.m == nil, tb.len())
		}
		for k, l := range want {
			got, ok := tb.get(k)
			if !ok || !tb.has(k) || !slices.Equal(got, l) {
				t.Fatalf("n=%d: get(%q) = %q, %v; want %q", n, k, got, ok, l)
			}
			if len(got) > 0 && cap(got) != len(got) {
				t.Fatalf("n=%d: get(%q) has room to append over its neighbour (cap %d)", n, k, cap(got))
			}
		}
		for _, k := range []string{"", "a@d0.test", "A0@d0.test", fmt.Sprintf("a%d@d0.test", n)} {
			if _, ok := tb.get(k); ok || tb.has(k) {
				t.Fatalf("n=%d: %q found", n, k)
			}
		}
		seen := 0
		tb.each(func(k string, l []string) {
			seen++
			if w, ok := want[k]; !ok || !slices.Equal(w, l) {
				t.Fatalf("n=%d: each gave %q %q", n, k, l)
			}
		})
		if seen != n {
			t.Fatalf("n=%d: each visited %d", n, seen)
		}
	}
	var none *table
	if _, ok := none.get("a"); ok || none.has("a") || none.len() != 0 {
		t.Fatal("a nil table is not empty")
	}
	none.each(func(string, []string) { t.Fatal("a nil table has keys") })
	none.freeze()
}

// What policyd keeps of 100,000 mailboxes fits in 24 MiB of live heap
// (19.6 with the frozen tables and the string block; 31.7 as Go maps of
// strings). Memory, not time: the figure does not depend on the machine.
func TestKeepDecisionsHeap(t *testing.T) {
	if testing.Short() {
		t.Skip("loads 100,000 mailboxes")
	}
	data := invgen.Generate(10000, 100000)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	inv, err := ParseWith(data, "gen.yaml", LoadOptions{Keep: KeepDecisions})
	if err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	live := float64(after.HeapAlloc-before.HeapAlloc) / (1 << 20)
	t.Logf("live heap of what policyd keeps of 100,000 mailboxes: %.1f MiB", live)
	if live > 24 {
		t.Errorf("policyd keeps %.1f MiB of 100,000 mailboxes, want <= 24", live)
	}
	if !inv.IsMailbox("u1@d1.test") || !inv.IsList("staff@d1.test") || !inv.MayUseSender("u1@d1.test", "a1@d1.test") {
		t.Error("the kept inventory lost mailboxes, lists or aliases")
	}
	runtime.KeepAlive(inv)
	runtime.KeepAlive(data) // measured with the text in both readings
}
