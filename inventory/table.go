package inventory

import "hash/maphash"

// table maps an address to a list of addresses: the index's owners,
// aliases and lists. It is three arrays and a hash of positions: keys, one
// backing array for every list, and where each key's list starts. A Go map
// of string to []string costs some 90-115 bytes an entry at 100,000
// mailboxes; a table costs about 30 bytes an entry and 16 a list member, in
// a handful of large objects. It is built in those arrays from the start:
// a map built first and frozen after would hold every entry twice at the
// top of a reload's peak. A nil *table is empty.
//
// Building: set appends; freeze makes the hash (the last set of a key
// wins). A set after freeze, while the index is still being built, goes to
// a small map beside the arrays, which get reads first; the next freeze
// folds it in. From the last freeze on, the table is read-only.
type table struct {
	keys  []string
	start []uint32 // keys[i]'s list is vals[start[i]:start[i+1]]
	vals  []string
	slots []uint32 // open addressing, linear probing: 1 + an index of keys; 0 is empty
	seed  maphash.Seed

	frozen bool                // slots are made
	more   map[string][]string // set after freeze, until the next

	m *mtable // not nil: the table is a snapshot's, read in place (snapshot.go)
}

// newTable returns an empty table with room for keys entries and vals list
// members in all.
func newTable(keys, vals int) *table {
	return &table{keys: make([]string, 0, keys), start: append(make([]uint32, 0, keys+1), 0), vals: make([]string, 0, vals)}
}

// set gives key the list l (building only; l is copied).
func (t *table) set(key string, l []string) {
	if t.frozen {
		if t.more == nil {
			t.more = map[string][]string{}
		}
		t.more[key] = append([]string(nil), l...)
		return
	}
	t.keys = append(t.keys, key)
	t.vals = append(t.vals, l...)
	t.start = append(t.start, uint32(len(t.vals)))
}

// get returns key's list and whether key is in the table. The list has no
// room to append over its neighbour.
func (t *table) get(key string) ([]string, bool) {
	if t == nil {
		return nil, false
	}
	if t.m != nil {
		return t.m.get(key)
	}
	if t.more != nil {
		if l, ok := t.more[key]; ok {
			return l[:len(l):len(l)], true
		}
	} else if !t.frozen && len(t.keys) > 0 {
		panic("inventory: table read before freeze")
	}
	i := t.find(key)
	if i < 0 {
		return nil, false
	}
	return t.list(i), true
}

func (t *table) list(i int) []string {
	return t.vals[t.start[i]:t.start[i+1]:t.start[i+1]]
}

// has reports whether key is in the table.
func (t *table) has(key string) bool {
	if t != nil && t.m != nil {
		return t.m.has(key)
	}
	_, ok := t.get(key)
	return ok
}

func (t *table) len() int {
	if t == nil {
		return 0
	}
	if t.m != nil {
		return t.m.n
	}
	n := len(t.keys)
	for k := range t.more {
		if t.find(k) < 0 {
			n++
		}
	}
	return n
}

// each calls fn for every key and its list, in no particular order.
func (t *table) each(fn func(key string, l []string)) {
	if t == nil {
		return
	}
	if t.m != nil {
		t.m.each(fn)
		return
	}
	for i, k := range t.keys {
		if l, ok := t.more[k]; ok {
			fn(k, l[:len(l):len(l)])
			continue
		}
		fn(k, t.list(i))
	}
	for k, l := range t.more {
		if t.find(k) < 0 {
			fn(k, l[:len(l):len(l)])
		}
	}
}

func (t *table) find(key string) int {
	if len(t.slots) == 0 {
		return -1
	}
	mask := uint64(len(t.slots) - 1)
	for h := maphash.String(t.seed, key) & mask; ; h = (h + 1) & mask {
		s := t.slots[h]
		if s == 0 {
			return -1
		}
		if t.keys[s-1] == key {
			return int(s - 1)
		}
	}
}

// freeze makes the hash of positions, with the sets made since the last
// freeze folded in.
func (t *table) freeze() {
	if t == nil {
		return
	}
	if t.frozen && t.more == nil {
		return
	}
	if t.more != nil {
		t.fold()
	}
	if !t.hash() {
		t.dedup()
		t.hash()
	}
	t.frozen = true
}

// hash makes the slots; false when a key was set twice.
func (t *table) hash() bool {
	size := 8
	for size < 2*len(t.keys) {
		size *= 2
	}
	if len(t.slots) != size {
		t.slots = make([]uint32, size)
	} else {
		clear(t.slots)
	}
	t.seed = maphash.MakeSeed()
	mask := uint64(size - 1)
	for i, k := range t.keys {
		h := maphash.String(t.seed, k) & mask
		for t.slots[h] != 0 {
			if t.keys[t.slots[h]-1] == k {
				return false
			}
			h = (h + 1) & mask
		}
		t.slots[h] = uint32(i + 1)
	}
	return true
}

// dedup keeps the last entry of each key set more than once.
func (t *table) dedup() {
	last := make(map[string]int, len(t.keys))
	for i, k := range t.keys {
		last[k] = i
	}
	t.rebuild(func(i int, k string) bool { return last[k] == i }, nil, nil)
}

// fold moves the sets made after freeze into the arrays.
func (t *table) fold() {
	var add map[string][]string
	for k, l := range t.more {
		if t.find(k) < 0 {
			if add == nil {
				add = map[string][]string{}
			}
			add[k] = l
		}
	}
	t.rebuild(func(int, string) bool { return true }, t.more, add)
}

// rebuild makes the arrays anew: the entries keep keeps, each with its list
// in over if it has one there, then the keys of add.
func (t *table) rebuild(keep func(i int, key string) bool, over, add map[string][]string) {
	old := *t
	listOf := func(i int) []string {
		if l, ok := over[old.keys[i]]; ok {
			return l
		}
		return old.list(i)
	}
	n, total := len(add), 0
	for _, l := range add {
		total += len(l)
	}
	for i, k := range old.keys {
		if keep(i, k) {
			n++
			total += len(listOf(i))
		}
	}
	t.keys, t.start, t.vals = make([]string, 0, n), append(make([]uint32, 0, n+1), 0), make([]string, 0, total)
	t.frozen, t.more = false, nil
	for i, k := range old.keys {
		if keep(i, k) {
			t.set(k, listOf(i))
		}
	}
	for k, l := range add {
		t.set(k, l)
	}
}
