package inventory

import (
	"fmt"
	"runtime"
	"slices"
	"testing"

	"github.com/mailnode/mailnode/test/invgen"
)

// A table answers every lookup as the map it was built from: once frozen,
// with keys set twice (the last wins), with sets made after a freeze (read
// beside the arrays, then folded in by the next freeze).
func TestTableFrozenAnswersAsMap(t *testing.T) {
	list := func(i, round int) []string {
		switch i % 4 {
		case 0: // nil: a key with no list
			return nil
		case 1:
			return []string{}
		}
		var l []string
		for j := 0; j < i%4+1+round; j++ {
			l = append(l, fmt.Sprintf("t%d.%d.%d@x.test", i, j, round))
		}
		return l
	}
	check := func(t *testing.T, name string, tb *table, want map[string][]string) {
		t.Helper()
		if tb.len() != len(want) {
			t.Fatalf("%s: len %d, want %d", name, tb.len(), len(want))
		}
		for k, l := range want {
			got, ok := tb.get(k)
			if !ok || !tb.has(k) || !slices.Equal(got, l) {
				t.Fatalf("%s: get(%q) = %q, %v; want %q", name, k, got, ok, l)
			}
			if len(got) > 0 && cap(got) != len(got) {
				t.Fatalf("%s: get(%q) has room to append over its neighbour (cap %d)", name, k, cap(got))
			}
		}
		for _, k := range []string{"", "a@d0.test", "A0@d0.test", "a999999@d0.test"} {
			if _, ok := tb.get(k); ok || tb.has(k) {
				t.Fatalf("%s: %q found", name, k)
			}
		}
		seen := 0
		tb.each(func(k string, l []string) {
			seen++
			if w, ok := want[k]; !ok || !slices.Equal(w, l) {
				t.Fatalf("%s: each gave %q %q", name, k, l)
			}
		})
		if seen != len(want) {
			t.Fatalf("%s: each visited %d, want %d", name, seen, len(want))
		}
	}
	for _, n := range []int{0, 1, 7, 8, 9, 1000, 5000} {
		want := map[string][]string{}
		tb := newTable(n/2, n) // room for less: the arrays grow
		key := func(i int) string { return fmt.Sprintf("a%d@d%d.test", i, i%13) }
		for i := 0; i < n; i++ {
			want[key(i)] = list(i, 0)
			tb.set(key(i), list(i, 0))
		}
		for i := 0; i < n; i += 7 { // set twice before the freeze: the last wins
			want[key(i)] = list(i, 1)
			tb.set(key(i), list(i, 1))
		}
		tb.freeze()
		if !tb.frozen || tb.more != nil {
			t.Fatalf("n=%d: not frozen", n)
		}
		check(t, fmt.Sprintf("n=%d frozen", n), tb, want)
		// Sets after the freeze: to keys it has and to new ones.
		for i := 0; i < n+5; i += 3 {
			want[key(i)] = list(i+1, 2)
			tb.set(key(i), list(i+1, 2))
		}
		check(t, fmt.Sprintf("n=%d set after freeze", n), tb, want)
		tb.freeze()
		if tb.more != nil {
			t.Fatalf("n=%d: the sets after the freeze were not folded in", n)
		}
		check(t, fmt.Sprintf("n=%d folded", n), tb, want)
	}
	var none *table
	if _, ok := none.get("a"); ok || none.has("a") || none.len() != 0 {
		t.Fatal("a nil table is not empty")
	}
	none.each(func(string, []string) { t.Fatal("a nil table has keys") })
	none.freeze()
}

// What policyd keeps of 100,000 mailboxes fits in 24 MiB of live heap
// (19.8 with the tables in arrays and the string block; 31.7 as Go maps of
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
