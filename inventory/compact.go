package inventory

import "strings"

// compact moves the strings of what a daemon keeps (KeepDecisions,
// KeepDomains) into one block, each distinct string once, and makes the
// domains anew with only the fields a daemon decides with (name, class,
// next hop, DKIM selectors). The load leaves those strings as small objects
// scattered among its own garbage (a text block per domain, each alias
// list, each domain's fields), and the spans holding them stay partly
// used, and with the process, after every reload. In one large block they
// fill their pages, and the small objects they replace free whole spans
// for the system. The block holds no pointers: the collector does not scan
// it.
//
// The address tables' strings are most of it (some 600,000 at 100,000
// mailboxes, 250,000 of them distinct), and a map to find each one's place
// would cost more than the block itself, at the top of a reload's peak. So
// the tables are their own index: a key goes in once (a key of a later
// table that is a key of an earlier one shares its place), and a list
// member that is a key of any table is that key; only the rest (outside
// addresses) and the domains' few strings go through the block's map.
func (inv *Inventory) compact() {
	x := inv.idx
	if x == nil {
		return
	}
	var a stringBlock
	for k := range x.classes {
		a.add(k)
	}
	for i := range inv.Domains {
		d := &inv.Domains[i]
		a.add(d.Name)
		a.add(d.Nexthop)
		for _, s := range d.DKIM {
			a.add(s.Selector)
			a.add(s.Algorithm)
		}
	}
	var tables []*table
	for _, t := range []*table{x.owners, x.virtual, x.lists} {
		if t != nil {
			tables = append(tables, t)
		}
	}
	// keyOf finds s among the keys of tables: which table, which key.
	keyOf := func(tables []*table, s string) (int, int) {
		for ti, t := range tables {
			if i := t.find(s); i >= 0 {
				return ti, i
			}
		}
		return -1, -1
	}
	keyAt := make([][]uint32, len(tables)) // each key's offset in the block
	for ti, t := range tables {
		keyAt[ti] = make([]uint32, len(t.keys))
		for i, k := range t.keys {
			if tj, j := keyOf(tables[:ti], k); tj >= 0 {
				keyAt[ti][i] = keyAt[tj][j]
			} else {
				keyAt[ti][i] = a.put(k)
			}
		}
	}
	for _, t := range tables {
		for _, s := range t.vals {
			if tj, _ := keyOf(tables, s); tj < 0 {
				a.add(s)
			}
		}
	}
	for _, m := range []map[string]bool{x.routed, x.forwards} {
		for k := range m {
			a.add(k)
		}
	}
	a.seal()

	if x.classes != nil {
		classes := make(map[string]Class, len(x.classes))
		for k, c := range x.classes {
			classes[a.get(k)] = c
		}
		x.classes = classes
	}
	domains := make([]Domain, len(inv.Domains))
	x.domains = make(map[string]*Domain, len(domains))
	for i := range inv.Domains {
		d, n := &inv.Domains[i], &domains[i]
		// Only what a daemon decides with: no mailboxes, aliases, lists,
		// recipients or transports (keepOnly).
		*n = Domain{Name: a.get(d.Name), Class: d.Class, Nexthop: a.get(d.Nexthop)}
		if len(d.DKIM) > 0 {
			n.DKIM = make([]Selector, len(d.DKIM))
			for j, s := range d.DKIM {
				n.DKIM[j] = Selector{Selector: a.get(s.Selector), Algorithm: a.get(s.Algorithm)}
			}
		}
		x.domains[n.Name] = n
	}
	inv.Domains = domains
	// The keys first: a list member that is a key then takes the key's
	// string, already in the block (the hashes find keys by their text).
	for ti, t := range tables {
		for i, k := range t.keys {
			t.keys[i] = a.at(keyAt[ti][i], len(k))
		}
	}
	for _, t := range tables {
		for i, s := range t.vals {
			if tj, j := keyOf(tables, s); tj >= 0 {
				t.vals[i] = tables[tj].keys[j]
			} else {
				t.vals[i] = a.get(s)
			}
		}
	}
	x.routed, x.forwards = a.set(x.routed), a.set(x.forwards)
}

// stringBlock gives each distinct string added a place in one string.
type stringBlock struct {
	place map[string]int // string -> its offset in all (add)
	order []string       // in the order of their offsets
	size  int
	all   string
}

func (a *stringBlock) add(s string) {
	if s == "" {
		return
	}
	if a.place == nil {
		a.place = map[string]int{}
	}
	if _, ok := a.place[s]; !ok {
		a.place[s] = a.size
		a.order = append(a.order, s)
		a.size += len(s)
	}
}

// put gives s a place of its own, without looking for it, and returns
// its offset (for at).
func (a *stringBlock) put(s string) uint32 {
	off := a.size
	a.order = append(a.order, s)
	a.size += len(s)
	return uint32(off)
}

// at returns the n bytes of the block at off (put's offset).
func (a *stringBlock) at(off uint32, n int) string {
	return a.all[off : int(off)+n]
}

// seal writes the block; get and at work from then on.
func (a *stringBlock) seal() {
	var b strings.Builder
	b.Grow(a.size)
	for _, s := range a.order {
		b.WriteString(s)
	}
	a.all, a.order = b.String(), nil
}

// get returns s as it stands in the block (s must have been added).
func (a *stringBlock) get(s string) string {
	if s == "" {
		return ""
	}
	i := a.place[s]
	return a.all[i : i+len(s)]
}

func (a *stringBlock) set(m map[string]bool) map[string]bool {
	if m == nil {
		return nil
	}
	out := make(map[string]bool, len(m))
	for k, v := range m {
		out[a.get(k)] = v
	}
	return out
}
