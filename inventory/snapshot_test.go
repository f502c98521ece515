package inventory

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"

	"github.com/mailnode/mailnode/test/invgen"
)

// snapshotOf writes inv's snapshot to a file and opens it.
func snapshotOf(t testing.TB, inv *Inventory, where SnapshotTables) *Inventory {
	t.Helper()
	return snapshotAfter(t, inv, where, nil)
}

// snapshotAfter is snapshotOf for a reload of prev.
func snapshotAfter(t testing.TB, inv *Inventory, where SnapshotTables, prev *Inventory) *Inventory {
	t.Helper()
	f, err := os.Create(filepath.Join(t.TempDir(), "snap"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var head bytes.Buffer
	if err := inv.WriteSnapshot(&head, f); err != nil {
		t.Fatal(err)
	}
	got, err := OpenSnapshot(head.Bytes(), f, where, prev)
	if err != nil {
		t.Fatal(err)
	}
	return got
}

// tableContents reads every key and list of t, sorted lists.
func tableContents(t *table) map[string][]string {
	if t == nil {
		return nil
	}
	m := map[string][]string{}
	t.each(func(k string, l []string) {
		c := append([]string{}, l...)
		sort.Strings(c)
		m[k] = c
	})
	return m
}

// sameAnswers checks that b answers every question a daemon asks as a does.
func sameAnswers(t *testing.T, a, b *Inventory) {
	t.Helper()
	ca, cb := *a, *b
	ca.idx, cb.idx, ca.mapped, cb.mapped = nil, nil, nil, nil
	if !reflect.DeepEqual(ca, cb) {
		t.Fatalf("the inventories differ\nloaded:   %+v\nsnapshot: %+v", ca, cb)
	}
	xa, xb := a.idx, b.idx
	if !reflect.DeepEqual(xa.classes, xb.classes) || !reflect.DeepEqual(xa.trusted, xb.trusted) ||
		!reflect.DeepEqual(xa.routed, xb.routed) || !reflect.DeepEqual(xa.forwards, xb.forwards) || xa.delim != xb.delim {
		t.Fatal("the index's sets differ")
	}
	if len(xa.domains) != len(xb.domains) {
		t.Fatal("the domains differ")
	}
	for k, d := range xa.domains {
		if e, ok := xb.domains[k]; !ok || !reflect.DeepEqual(*d, *e) {
			t.Fatalf("domain %s differs", k)
		}
	}
	var addrs []string
	for _, tt := range [][2]*table{{xa.owners, xb.owners}, {xa.lists, xb.lists}, {xa.virtual, xb.virtual}} {
		if (tt[0] == nil) != (tt[1] == nil) || tt[0].len() != tt[1].len() {
			t.Fatal("a table is missing or of another size")
		}
		ma, mb := tableContents(tt[0]), tableContents(tt[1])
		if !reflect.DeepEqual(ma, mb) {
			t.Fatal("a table's contents differ")
		}
		for k, l := range ma {
			addrs = append(addrs, k)
			addrs = append(addrs, l...)
		}
	}
	addrs = append(addrs, "nobody@example.com", "x@outside.test", "postmaster", "", "@", "a+b@example.com")
	for _, ad := range addrs {
		if a.Classify(ad) != b.Classify(ad) || a.IsList(ad) != b.IsList(ad) || a.IsMailbox(ad) != b.IsMailbox(ad) ||
			a.ForwardsOutside(ad) != b.ForwardsOutside(ad) || a.BaseAddress(ad) != b.BaseAddress(ad) ||
			!reflect.DeepEqual(a.ListMembers(ad), b.ListMembers(ad)) || !reflect.DeepEqual(a.LookupAddress(ad), b.LookupAddress(ad)) {
			t.Fatalf("%q is answered differently", ad)
		}
	}
	if xa.owners != nil {
		for login, own := range tableContents(xa.owners) {
			for _, s := range append(own, "x@outside.test", addrs[0]) {
				if a.MayUseSender(login, s) != b.MayUseSender(login, s) {
					t.Fatalf("MayUseSender(%q, %q) differs", login, s)
				}
			}
		}
	}
	if !reflect.DeepEqual(a.Owners(), b.Owners()) || !reflect.DeepEqual(a.VirtualAliases(), b.VirtualAliases()) {
		t.Fatal("Owners or VirtualAliases differ")
	}
}

func TestSnapshotAnswersAsLoaded(t *testing.T) {
	gen := filepath.Join(t.TempDir(), "gen.yaml")
	if err := os.WriteFile(gen, invgen.Generate(40, 400), 0o644); err != nil {
		t.Fatal(err)
	}
	strict := filepath.Join(t.TempDir(), "strict.yaml")
	src, err := os.ReadFile("../examples/inventory.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(strict, bytes.Replace(src, []byte("sender_login: domain"), []byte("sender_login: strict"), 1), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"../examples/inventory.yaml", strict, gen} {
		for _, keep := range []Keep{KeepDecisions, KeepDomains} {
			inv, err := LoadWith(path, LoadOptions{Keep: keep})
			if err != nil {
				t.Fatal(err)
			}
			for _, where := range []SnapshotTables{TablesMapped, TablesInHeap} {
				got := snapshotOf(t, inv, where)
				if got.Mapped() != (where == TablesMapped && inv.idx.owners != nil) {
					t.Fatalf("%s keep %d where %d: mapped %v", path, keep, where, got.Mapped())
				}
				sameAnswers(t, inv, got)
				<-got.Release()
			}
		}
	}
}

// A reload whose domains are those running shares them (one copy in the
// daemon, not two) and answers as the inventory it was loaded from; one
// that changes a domain, a forwarding alias or the node's hostname decodes
// its own.
func TestSnapshotSharesUnchangedDomains(t *testing.T) {
	dir := t.TempDir()
	base := invgen.Generate(40, 400)
	write := func(name string, doc []byte) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, doc, 0o644); err != nil {
			t.Fatal(err)
		}
		return path
	}
	edit := func(old, new string) []byte {
		if !bytes.Contains(base, []byte(old)) {
			t.Fatalf("the generated inventory has no %q", old)
		}
		return bytes.Replace(base, []byte(old), []byte(new), 1)
	}
	running := write("running.yaml", base)
	for _, c := range []struct {
		name   string
		doc    []byte
		shared bool
	}{
		{"same", base, true},
		{"mailbox added", invgen.AddMailbox(base, "new1"), true},
		{"alias inside", edit("aliases: {postmaster: u0,", "aliases: {staff2: u3, postmaster: u0,"), true},
		{"domain renamed", edit("  - name: d1.test\n", "  - name: e1.test\n"), false},
		{"forwarding alias", edit("aliases: {postmaster: u0,", "aliases: {fwd: \"y@outside.test\", postmaster: u0,"), false},
		{"hostname", edit("hostname: mx1.bench.test", "hostname: mx9.bench.test"), false},
	} {
		for _, keep := range []Keep{KeepDecisions, KeepDomains} {
			for _, where := range []SnapshotTables{TablesMapped, TablesInHeap} {
				was, err := LoadWith(running, LoadOptions{Keep: keep})
				if err != nil {
					t.Fatal(err)
				}
				prev := snapshotOf(t, was, where)
				inv, err := LoadWith(write(c.name+".yaml", c.doc), LoadOptions{Keep: keep})
				if err != nil {
					t.Fatalf("%s: %v", c.name, err)
				}
				got := snapshotAfter(t, inv, where, prev)
				if shared := &got.Domains[0] == &prev.Domains[0]; shared != c.shared {
					t.Errorf("%s, keep %d: domains shared %v, want %v", c.name, keep, shared, c.shared)
				}
				sameAnswers(t, inv, got)
				<-prev.Release()
				sameAnswers(t, inv, got) // prev's tables gone, what got shares stays
				<-got.Release()
			}
		}
	}
}

// A snapshot holds what a daemon keeps; an inventory kept whole is refused,
// not written without its mailboxes.
func TestSnapshotRefusesKeepAll(t *testing.T) {
	inv, err := Load("../examples/inventory.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var head, tables bytes.Buffer
	if err := inv.WriteSnapshot(&head, &tables); err == nil || !strings.Contains(err.Error(), "KeepDecisions") {
		t.Fatalf("an inventory kept whole: %v", err)
	}
}

// A mapped inventory, once released, answers nothing and never faults;
// a pin taken before holds the mapping until it ends.
func TestSnapshotRelease(t *testing.T) {
	inv, err := LoadWith("../examples/inventory.yaml", LoadOptions{Keep: KeepDecisions})
	if err != nil {
		t.Fatal(err)
	}
	got := snapshotOf(t, inv, TablesMapped)
	var mbox string
	got.idx.owners.each(func(k string, _ []string) { mbox = k })
	if mbox == "" || !got.IsMailbox(mbox) {
		t.Fatalf("no mailbox in the example (%q)", mbox)
	}
	if !got.Pin() {
		t.Fatal("a new inventory does not pin")
	}
	done := got.Release()
	select {
	case <-done:
		t.Fatal("released while pinned")
	default:
	}
	if !got.IsMailbox(mbox) {
		t.Fatal("a pinned inventory stopped answering")
	}
	got.Unpin()
	<-done
	if got.Pin() {
		t.Fatal("a released inventory pins")
	}
	if got.IsMailbox(mbox) || got.ListMembers(mbox) != nil || got.MayUseSender(mbox, mbox) {
		t.Fatal("a released inventory still answers")
	}
	got.Prefault() // no fault either
}

// A damaged snapshot is refused or answers "not found": never a panic.
func TestSnapshotDamaged(t *testing.T) {
	inv, err := LoadWith("../examples/inventory.yaml", LoadOptions{Keep: KeepDecisions})
	if err != nil {
		t.Fatal(err)
	}
	var buf, head bytes.Buffer
	if err := inv.WriteSnapshot(&head, &buf); err != nil {
		t.Fatal(err)
	}
	good := buf.Bytes()
	var addrs []string
	inv.idx.virtual.each(func(k string, l []string) { addrs = append(addrs, k) })
	try := func(hb, data []byte) {
		f, err := os.Create(filepath.Join(t.TempDir(), "snap"))
		if err != nil {
			t.Fatal(err)
		}
		defer f.Close()
		f.Write(data)
		got, err := OpenSnapshot(hb, f, TablesMapped, nil)
		if err != nil {
			if !strings.Contains(err.Error(), "snapshot") {
				t.Fatalf("an error that does not say what: %v", err)
			}
			return
		}
		for _, a := range addrs {
			got.IsList(a)
			got.ListMembers(a)
			got.LookupAddress(a)
		}
		got.Owners()
		<-got.Release()
	}
	for cut := 0; cut < len(good); cut += 97 {
		try(head.Bytes(), good[:cut])
	}
	for cut := 0; cut < head.Len(); cut += 101 {
		try(head.Bytes()[:cut], good)
	}
	// Damage the tables byte by byte.
	for i := len(snapshotMagic); i < len(good); i += 13 {
		for _, v := range []byte{0, 0xff, 0x7f, 0x80} {
			d := bytes.Clone(good)
			d[i] = v
			try(head.Bytes(), d)
		}
	}
}

func BenchmarkSnapshotLookup(b *testing.B) {
	dir := b.TempDir()
	gen := filepath.Join(dir, "gen.yaml")
	if err := os.WriteFile(gen, invgen.Generate(1000, 10000), 0o644); err != nil {
		b.Fatal(err)
	}
	inv, err := LoadWith(gen, LoadOptions{Keep: KeepDecisions})
	if err != nil {
		b.Fatal(err)
	}
	var addrs []string
	inv.idx.virtual.each(func(k string, _ []string) { addrs = append(addrs, k) })
	mapped := snapshotOf(b, inv, TablesMapped)
	for _, c := range []struct {
		name string
		inv  *Inventory
	}{{"heap", inv}, {"mapped", mapped}} {
		b.Run(c.name, func(b *testing.B) {
			b.ReportAllocs()
			for i := 0; b.Loop(); i++ {
				a := c.inv.LookupAddress(addrs[i%len(addrs)])
				if !a.List && !c.inv.IsMailbox(a.Normalized()) && a.Class != Local {
					b.Fatal("not found")
				}
			}
		})
	}
}
