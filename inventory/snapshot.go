package inventory

import (
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/bits"
	"net/netip"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
)

// A snapshot is what a daemon keeps of its inventory (Load with
// KeepDecisions or KeepDomains), written by one process and opened by
// another, as Postfix's daemons open the maps postmap built. A daemon's
// reload runs the load in a helper process (mailnode load-inventory): the
// text, the decoded domains and the tables being built live and die
// there, and the daemon opens the result. policyd maps the address tables
// (owners, lists, virtual) without copying them into its heap: at 100,000
// mailboxes they are some 20 MiB, which a reload built inside the daemon
// held twice, the running tables beside the new ones.
//
// A snapshot is two parts. The head is what the daemon keeps in its heap:
//
//	u64 length, then JSON of snapshotHead (the inventory's settings)
//	the domains: uvarint count, then each: name, class, next hop,
//	  uvarint selectors, each: selector, algorithm
//	the routed and forwarding addresses: each a byte (0: none, 1: a set),
//	  uvarint count, the addresses
//
// every string a uvarint length and its bytes. The classes are made from
// the domains as Load makes them. The tables, integers little-endian:
//
//	snapshotMagic
//	per table present (head.Tables): u64 length, then the table
//
// snapshotMagic changes with the layout: a daemon whose binary was
// replaced under it refuses its helper's snapshot and loads in process.
//
// A table:
//
//	u32 keys, u32 slots (a power of two)
//	u32 slot[slots]: 0 empty, else the offset of a record in the table
//	records: uvarint len, key, uvarint n, n × (uvarint len, member)
//
// A key is found by FNV-1a of its text and linear probing. Every read is
// bounds-checked: a damaged table answers "not found", never a crash.

const snapshotMagic = "mailnode inventory snapshot 1\n"

type snapshotHead struct {
	Inventory *Inventory // without its domains
	Trusted   []netip.Prefix
	Delim     string
	Tables    [3]bool // owners, lists, virtual
}

// WriteSnapshot writes inv, which Load kept for a daemon (KeepDecisions or
// KeepDomains), as a snapshot: its head to head, its tables to w.
func (inv *Inventory) WriteSnapshot(head, w io.Writer) error {
	x := inv.idx
	if x == nil {
		return errors.New("inventory: a snapshot needs a loaded inventory")
	}
	for _, d := range inv.Domains {
		if d.Mailboxes != nil || d.Aliases != nil || d.Lists != nil || d.Recipients != nil || d.Transports != nil || d.MTASTS != nil || d.TLSRPT != "" {
			return errors.New("inventory: a snapshot holds what a daemon keeps: load with KeepDecisions or KeepDomains")
		}
	}
	tables := [3]*table{x.owners, x.lists, x.virtual}
	settings := *inv
	settings.Domains, settings.idx, settings.mapped = nil, nil, nil
	h := snapshotHead{Inventory: &settings, Trusted: x.trusted, Delim: x.delim}
	for i, t := range tables {
		h.Tables[i] = t != nil
	}
	js, err := json.Marshal(h)
	if err != nil {
		return fmt.Errorf("inventory: snapshot: %w", err)
	}
	var n [8]byte
	binary.LittleEndian.PutUint64(n[:], uint64(len(js)))
	hb := append(n[:], js...)
	str := func(s string) { hb = appendText(hb, s) }
	hb = binary.AppendUvarint(hb, uint64(len(inv.Domains)))
	for _, d := range inv.Domains {
		str(d.Name)
		str(d.Class)
		str(d.Nexthop)
		hb = binary.AppendUvarint(hb, uint64(len(d.DKIM)))
		for _, sel := range d.DKIM {
			str(sel.Selector)
			str(sel.Algorithm)
		}
	}
	for _, set := range []map[string]bool{x.routed, x.forwards} {
		if set == nil {
			hb = append(hb, 0)
			continue
		}
		hb = append(hb, 1)
		hb = binary.AppendUvarint(hb, uint64(len(set)))
		// Sorted: the same inventory writes the same head, which a reload
		// compares with the running one's (OpenSnapshot).
		for _, a := range slices.Sorted(maps.Keys(set)) {
			str(a)
		}
	}
	if _, err := head.Write(hb); err != nil {
		return fmt.Errorf("inventory: snapshot: %w", err)
	}
	write := func(b []byte) {
		if err == nil {
			_, err = w.Write(b)
		}
	}
	write([]byte(snapshotMagic))
	for _, t := range tables {
		if t == nil {
			continue
		}
		if err == nil {
			err = t.writeTable(w)
		}
	}
	return err
}

// appendText appends s with its length before it.
func appendText(b []byte, s string) []byte {
	return append(binary.AppendUvarint(b, uint64(len(s))), s...)
}

// uvarintLen is the length of v as a uvarint.
func uvarintLen(v int) int { return (bits.Len64(uint64(v)|1) + 6) / 7 }

// uvarintAt reads the uvarint at off of b, a length that fits in b, and
// returns the offset after it; false when there is none.
func uvarintAt[T ~string | ~[]byte](b T, off int) (int, int, bool) {
	var v uint64
	for i, shift := off, uint(0); i >= 0 && i < len(b) && shift < 64; i, shift = i+1, shift+7 {
		c := b[i]
		v |= uint64(c&0x7f) << shift
		if c < 0x80 {
			if v > uint64(len(b)) {
				return 0, 0, false
			}
			return int(v), i + 1, true
		}
	}
	return 0, 0, false
}

// textAt reads the length at off of b and the text after it (appendText),
// and returns the offset after it.
func textAt[T ~string | ~[]byte](b T, off int) (T, int, bool) {
	l, p, ok := uvarintAt(b, off)
	if !ok || l > len(b)-p {
		var none T
		return none, 0, false
	}
	return b[p : p+l], p + l, true
}

func fnv1a(s string) uint32 {
	h := uint32(2166136261)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= 16777619
	}
	return h
}

// writeTable writes t as a snapshot table, its length first, without
// holding it whole: the records' places are worked out first (the slots),
// then the records are written in the same order.
func (t *table) writeTable(w io.Writer) error {
	if t.more != nil || t.m != nil {
		return errors.New("inventory: snapshot: a table still being built")
	}
	n := len(t.keys)
	size := 8
	for size < 2*n {
		size *= 2
	}
	text := func(s string) int { return uvarintLen(len(s)) + len(s) }
	slots := make([]byte, 8+4*size)
	binary.LittleEndian.PutUint32(slots[0:], uint32(n))
	binary.LittleEndian.PutUint32(slots[4:], uint32(size))
	mask := uint32(size - 1)
	off := uint64(len(slots))
	for i, key := range t.keys {
		if off > 1<<32-1 {
			return errors.New("inventory: snapshot: a table over 4 GiB")
		}
		for h := fnv1a(key) & mask; ; h = (h + 1) & mask {
			if p := 8 + 4*h; binary.LittleEndian.Uint32(slots[p:]) == 0 {
				binary.LittleEndian.PutUint32(slots[p:], uint32(off))
				break
			}
		}
		l := t.list(i)
		off += uint64(text(key) + uvarintLen(len(l)))
		for _, m := range l {
			off += uint64(text(m))
		}
	}
	var b []byte
	b = binary.LittleEndian.AppendUint64(b, off)
	if _, err := w.Write(b); err != nil {
		return err
	}
	if _, err := w.Write(slots); err != nil {
		return err
	}
	for i, key := range t.keys {
		b = appendText(b[:0], key)
		l := t.list(i)
		b = binary.AppendUvarint(b, uint64(len(l)))
		for _, m := range l {
			b = appendText(b, m)
		}
		if _, err := w.Write(b); err != nil {
			return err
		}
	}
	return nil
}

// mapping is the memory a snapshot's tables are mapped in. It stays mapped
// while its owner holds it or a lookup pins it.
type mapping struct {
	data    []byte
	refs    atomic.Int64 // the owner's reference (until Release) + pins; 0: unmapped
	release sync.Once
	done    chan struct{}
}

func (m *mapping) pin() bool {
	for {
		r := m.refs.Load()
		if r <= 0 {
			return false
		}
		if m.refs.CompareAndSwap(r, r+1) {
			return true
		}
	}
}

func (m *mapping) unpin() {
	if m.refs.Add(-1) == 0 {
		syscall.Munmap(m.data)
		close(m.done)
	}
}

// mtable is a snapshot table read in place.
type mtable struct {
	b    []byte
	n    int
	mask uint32
	m    *mapping // nil: b is in the heap
}

func newMtable(b []byte, m *mapping) (*mtable, error) {
	if len(b) < 8 {
		return nil, errors.New("table too short")
	}
	n, size := binary.LittleEndian.Uint32(b), binary.LittleEndian.Uint32(b[4:])
	if size == 0 || size&(size-1) != 0 || uint64(8+4*uint64(size)) > uint64(len(b)) || uint64(n) > uint64(size) {
		return nil, errors.New("table header damaged")
	}
	return &mtable{b: b, n: int(n), mask: size - 1, m: m}, nil
}

// find returns the offset of key's list count.
func (t *mtable) find(key string) (int, bool) {
	for h, probes := fnv1a(key)&t.mask, uint32(0); probes <= t.mask; h, probes = (h+1)&t.mask, probes+1 {
		off := int(binary.LittleEndian.Uint32(t.b[8+4*h:]))
		if off == 0 {
			return 0, false
		}
		k, next, ok := textAt(t.b, off)
		if !ok {
			return 0, false
		}
		if string(k) == key {
			return next, true
		}
	}
	return 0, false
}

// list copies the members at off, in one string of which each is a part:
// no string outlives the mapping.
func (t *mtable) list(off int) ([]string, bool) {
	n, start, ok := uvarintAt(t.b, off)
	if !ok {
		return nil, false
	}
	end := start
	for i := 0; i < n; i++ {
		if _, end, ok = textAt(t.b, end); !ok {
			return nil, false
		}
	}
	all := string(t.b[start:end])
	l := make([]string, 0, n)
	for p := 0; p < len(all); {
		var m string
		m, p, _ = textAt(all, p)
		l = append(l, m)
	}
	return l, true
}

func (t *mtable) pin() bool {
	return t.m == nil || t.m.pin()
}

func (t *mtable) unpin() {
	if t.m != nil {
		t.m.unpin()
	}
}

func (t *mtable) get(key string) ([]string, bool) {
	if !t.pin() {
		return nil, false
	}
	defer t.unpin()
	off, ok := t.find(key)
	if !ok {
		return nil, false
	}
	return t.list(off)
}

func (t *mtable) has(key string) bool {
	if !t.pin() {
		return false
	}
	defer t.unpin()
	_, ok := t.find(key)
	return ok
}

// each calls fn for every key and its list (copies).
func (t *mtable) each(fn func(key string, l []string)) {
	if !t.pin() {
		return
	}
	defer t.unpin()
	for h := uint32(0); h <= t.mask; h++ {
		off := int(binary.LittleEndian.Uint32(t.b[8+4*h:]))
		if off == 0 {
			continue
		}
		k, next, ok := textAt(t.b, off)
		if !ok {
			continue
		}
		if l, ok := t.list(next); ok {
			fn(string(k), l)
		}
	}
}

// SnapshotTables says where OpenSnapshot puts the address tables.
type SnapshotTables int

const (
	// TablesMapped reads them in place, out of the Go heap (policyd):
	// the Inventory must be Released, and each request Pins it.
	TablesMapped SnapshotTables = iota
	// TablesInHeap copies them into the heap and reads them there
	// (milterd: a milter session holds its inventory for as long as the
	// SMTP session lasts).
	TablesInHeap
)

// OpenSnapshot opens the snapshot whose head is head and whose tables are
// in f (WriteSnapshot); f may be closed afterwards.
//
// prev is the inventory the daemon runs (a reload; nil at start). When the
// head's domains and address sets are byte for byte those prev was opened
// with, and the node's hostname is the same, the new inventory shares
// prev's domains and their index instead of decoding a second copy: most
// reloads change mailboxes, aliases or settings, not the domains, and a
// daemon then holds its domains once, not twice, while it reloads. What
// is shared is never written after it is opened.
func OpenSnapshot(head []byte, f *os.File, where SnapshotTables, prev *Inventory) (*Inventory, error) {
	st, err := f.Stat()
	if err != nil {
		return nil, err
	}
	size := st.Size()
	if size < int64(len(snapshotMagic)) || size > 1<<40 {
		return nil, fmt.Errorf("inventory: snapshot tables of %d bytes", size)
	}
	data, err := syscall.Mmap(int(f.Fd()), 0, int(size), syscall.PROT_READ, syscall.MAP_SHARED)
	if err != nil {
		return nil, fmt.Errorf("inventory: map the snapshot: %w", err)
	}
	m := &mapping{data: data, done: make(chan struct{})}
	m.refs.Store(1)
	inv, err := openSnapshot(head, data, m, where, prev)
	if err != nil || inv.mapped == nil {
		m.release.Do(m.unpin)
	}
	return inv, err
}

func openSnapshot(hb, data []byte, m *mapping, where SnapshotTables, prev *Inventory) (*Inventory, error) {
	bad := func(what string) error { return fmt.Errorf("inventory: snapshot damaged: %s", what) }
	if string(data[:len(snapshotMagic)]) != snapshotMagic {
		return nil, bad("not a snapshot")
	}
	p := len(snapshotMagic)
	section := func() ([]byte, error) {
		if len(data)-p < 8 {
			return nil, bad("truncated")
		}
		l := binary.LittleEndian.Uint64(data[p:])
		p += 8
		if l > uint64(len(data)-p) {
			return nil, bad("truncated")
		}
		s := data[p : p+int(l)]
		p += int(l)
		return s, nil
	}
	if len(hb) < 8 || binary.LittleEndian.Uint64(hb) > uint64(len(hb)-8) {
		return nil, bad("head truncated")
	}
	jl := int(binary.LittleEndian.Uint64(hb))
	var head snapshotHead
	if err := json.Unmarshal(hb[8:8+jl], &head); err != nil || head.Inventory == nil {
		return nil, bad(fmt.Sprintf("head: %v", err))
	}
	inv := head.Inventory
	var x *index
	if rest := hb[8+jl:]; prev != nil && prev.idx != nil && prev.idx.head != "" &&
		prev.Node.Hostname == inv.Node.Hostname && string(rest) == prev.idx.head {
		p := prev.idx
		inv.Domains = prev.Domains
		x = &index{classes: p.classes, domains: p.domains, routed: p.routed, forwards: p.forwards, head: p.head}
	} else {
		var err error
		if x, err = decodeHead(inv, string(rest)); err != nil {
			return nil, bad(err.Error())
		}
	}
	x.trusted, x.delim = head.Trusted, head.Delim
	tables := [3]**table{&x.owners, &x.lists, &x.virtual}
	mapped := false
	for i, present := range head.Tables {
		if !present {
			continue
		}
		b, err := section()
		if err != nil {
			return nil, err
		}
		mt, err := newMtable(b, m)
		if err != nil {
			return nil, bad(err.Error())
		}
		if where == TablesInHeap {
			mt.b, mt.m = bytes.Clone(b), nil // before OpenSnapshot unmaps b
		} else {
			mapped = true
		}
		*tables[i] = &table{m: mt}
	}
	inv.idx = x
	if mapped {
		inv.mapped = m
	}
	return inv, nil
}

// Pin keeps inv's mapped tables in place until Unpin; false once Release
// has let them go (then the caller takes the inventory in use again). An
// inventory loaded in the heap always pins.
func (inv *Inventory) Pin() bool { return inv.mapped == nil || inv.mapped.pin() }

// Unpin ends a Pin that returned true.
func (inv *Inventory) Unpin() {
	if inv.mapped != nil {
		inv.mapped.unpin()
	}
}

// Release lets go of inv's mapped tables once no Pin holds them; the
// channel is closed when they are unmapped. Lookups after it find
// nothing. An inventory in the heap is released at once.
func (inv *Inventory) Release() <-chan struct{} {
	if inv.mapped == nil {
		c := make(chan struct{})
		close(c)
		return c
	}
	inv.mapped.release.Do(inv.mapped.unpin)
	return inv.mapped.done
}

// Mapped reports whether inv's address tables are mapped from a snapshot.
func (inv *Inventory) Mapped() bool { return inv.mapped != nil }

// Prefault reads inv's mapped tables once, so that they are resident (and
// counted in the daemon's RSS) from now on rather than as lookups first
// touch them.
func (inv *Inventory) Prefault() {
	m := inv.mapped
	if m == nil || !m.pin() {
		return
	}
	defer m.unpin()
	var sum byte
	for i := 0; i < len(m.data); i += 4096 {
		sum += m.data[i]
	}
	prefaultSink.Store(uint32(sum))
}

var prefaultSink atomic.Uint32

// decodeHead reads the domains and address sets of a snapshot's head into
// inv and a new index. Every string is a part of hs, one block.
func decodeHead(inv *Inventory, hs string) (*index, error) {
	p := 0
	errShort := errors.New("head truncated")
	num := func() (int, error) {
		v, next, ok := uvarintAt(hs, p)
		if !ok {
			return 0, errShort
		}
		p = next
		return v, nil
	}
	str := func() (string, error) {
		v, next, ok := textAt(hs, p)
		if !ok {
			return "", errShort
		}
		p = next
		return v, nil
	}
	n, err := num()
	if err != nil {
		return nil, err
	}
	inv.Domains = make([]Domain, n)
	for i := range inv.Domains {
		d := &inv.Domains[i]
		var class string
		if d.Name, err = str(); err == nil {
			if class, err = str(); err == nil {
				d.Nexthop, err = str()
			}
		}
		if err != nil {
			return nil, err
		}
		d.Class = internClass(class)
		k, err := num()
		if err != nil {
			return nil, err
		}
		if k > 0 {
			d.DKIM = make([]Selector, k)
			for j := range d.DKIM {
				if d.DKIM[j].Selector, err = str(); err == nil {
					d.DKIM[j].Algorithm, err = str()
				}
				if err != nil {
					return nil, err
				}
			}
		}
	}
	x := &index{head: hs}
	x.indexDomains(inv)
	var sets [2]map[string]bool
	for i := range sets {
		if p >= len(hs) {
			return nil, errShort
		}
		present := hs[p]
		p++
		if present == 0 {
			continue
		}
		k, err := num()
		if err != nil {
			return nil, err
		}
		sets[i] = make(map[string]bool, k)
		for j := 0; j < k; j++ {
			a, err := str()
			if err != nil {
				return nil, err
			}
			sets[i][a] = true
		}
	}
	x.routed, x.forwards = sets[0], sets[1]
	return x, nil
}
