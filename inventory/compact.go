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
	tables := []*table{x.owners, x.lists, x.virtual}
	for _, t := range tables {
		if t == nil {
			continue
		}
		for _, k := range t.keys {
			a.add(k)
		}
		for _, s := range t.vals {
			a.add(s)
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
	for _, t := range tables {
		if t == nil {
			continue
		}
		for i, k := range t.keys {
			t.keys[i] = a.get(k)
		}
		for i, s := range t.vals {
			t.vals[i] = a.get(s)
		}
	}
	x.routed, x.forwards = a.set(x.routed), a.set(x.forwards)
}

// stringBlock gives each distinct string added a place in one string.
type stringBlock struct {
	at    map[string]int // string -> its offset in all
	order []string       // in the order of their offsets
	size  int
	all   string
}

func (a *stringBlock) add(s string) {
	if s == "" {
		return
	}
	if a.at == nil {
		a.at = map[string]int{}
	}
	if _, ok := a.at[s]; !ok {
		a.at[s] = a.size
		a.order = append(a.order, s)
		a.size += len(s)
	}
}

// seal writes the block; get works from then on.
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
	i := a.at[s]
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
