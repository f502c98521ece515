package inventory

import "hash/maphash"

// table maps an address to a list of addresses: the index's owners,
// aliases and lists. It is a Go map while the index is built (set, add)
// and, once frozen, three arrays and a hash of positions: keys, one
// backing array for every list, and where each key's list starts. A Go map
// of string to []string costs some 90-115 bytes an entry at 100,000
// mailboxes; frozen, a table costs about 30 bytes an entry and 16 a list
// member, in a handful of large objects. A nil *table is empty.
type table struct {
	m map[string][]string // while building; nil once frozen

	keys  []string
	start []uint32 // keys[i]'s list is vals[start[i]:start[i+1]]
	vals  []string
	slots []uint32 // open addressing, linear probing: 1 + an index of keys; 0 is empty
	seed  maphash.Seed
}

func newTable(size int) *table { return &table{m: make(map[string][]string, size)} }

// set gives key the list l (building only).
func (t *table) set(key string, l []string) { t.m[key] = l }

// get returns key's list and whether key is in the table.
func (t *table) get(key string) ([]string, bool) {
	if t == nil {
		return nil, false
	}
	if t.m != nil {
		l, ok := t.m[key]
		return l, ok
	}
	i := t.find(key)
	if i < 0 {
		return nil, false
	}
	return t.vals[t.start[i]:t.start[i+1]:t.start[i+1]], true
}

// has reports whether key is in the table.
func (t *table) has(key string) bool {
	_, ok := t.get(key)
	return ok
}

func (t *table) len() int {
	if t == nil {
		return 0
	}
	if t.m != nil {
		return len(t.m)
	}
	return len(t.keys)
}

// each calls fn for every key and its list, in no particular order.
func (t *table) each(fn func(key string, l []string)) {
	if t == nil {
		return
	}
	if t.m != nil {
		for k, l := range t.m {
			fn(k, l)
		}
		return
	}
	for i, k := range t.keys {
		fn(k, t.vals[t.start[i]:t.start[i+1]:t.start[i+1]])
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

// freeze turns the map into the arrays; the table is read-only from then on.
func (t *table) freeze() {
	if t == nil || t.m == nil {
		return
	}
	n, total := len(t.m), 0
	for _, l := range t.m {
		total += len(l)
	}
	t.keys = make([]string, 0, n)
	t.start = make([]uint32, 1, n+1)
	t.vals = make([]string, 0, total)
	for k, l := range t.m {
		t.keys = append(t.keys, k)
		t.vals = append(t.vals, l...)
		t.start = append(t.start, uint32(len(t.vals)))
	}
	size := 8
	for size < 2*n {
		size *= 2
	}
	t.slots = make([]uint32, size)
	t.seed = maphash.MakeSeed()
	mask := uint64(size - 1)
	for i, k := range t.keys {
		h := maphash.String(t.seed, k) & mask
		for t.slots[h] != 0 {
			h = (h + 1) & mask
		}
		t.slots[h] = uint32(i + 1)
	}
	t.m = nil
}
