package inventory

import "strings"

// Forwarding: an alias or list of a local domain whose expansion reaches
// an address that leaves the node, outside or of a relay domain
// (forwarding.srs and forwarding.arc act on that mail: the next hop checks
// SPF against the original sender either way). Mail addressed to a relay
// domain directly is not forwarded; a local mailbox or a per-address
// transport is a delivery, not a forward.

// forwardSet returns the addresses of local domains (aliases and lists,
// qualified and normalized) from which Postfix's recursive virtual alias
// expansion reaches at least one address that leaves the node. It is built from the
// domains themselves, so that a daemon which keeps no address tables
// (milterd) still knows it; it is small: only the forwarding addresses.
func (inv *Inventory) forwardSet(classes map[string]Class) map[string]bool {
	virtual := map[string][]string{}
	for i := range inv.Domains {
		d := &inv.Domains[i]
		if d.Class == "relay" {
			continue
		}
		at := "@" + d.Name
		add := func(name string, l StringList) {
			ts := make([]string, len(l))
			for i, t := range l {
				if strings.IndexByte(t, '@') < 0 {
					t += at
				}
				ts[i] = NormalizeAddress(t)
			}
			virtual[NormalizeAddress(name+at)] = ts
		}
		for name, l := range d.Aliases {
			add(name, l)
		}
		for name, l := range d.Lists {
			add(name, l)
		}
	}
	class := func(a string) Class {
		_, d := SplitAddress(a)
		if d == "" {
			return Local // an unqualified target is a local user
		}
		return classes[d]
	}
	memo := map[string]bool{}
	var reaches func(a string, depth int) bool
	reaches = func(a string, depth int) bool {
		if v, ok := memo[a]; ok {
			return v
		}
		ts, ok := virtual[a]
		if !ok || depth > 20 { // Postfix's virtual_alias_recursion_limit is 1000; loops are refused by validation
			return class(a) != Local
		}
		memo[a] = false // a loop (refused elsewhere) ends here
		v := false
		for _, t := range ts {
			if reaches(t, depth+1) {
				v = true
				break
			}
		}
		memo[a] = v
		return v
	}
	out := map[string]bool{}
	for a := range virtual {
		if reaches(a, 0) {
			out[a] = true
		}
	}
	return out
}

// ForwardsOutside reports whether mail to rcpt, an envelope recipient as
// Postfix received it, is forwarded by an alias or list of a local domain
// (followed recursively) to at least one address that leaves the node
// (outside, or of a relay domain). With
// postfix.recipient_delimiter, sales+x@ forwards as sales@ does.
func (inv *Inventory) ForwardsOutside(rcpt string) bool {
	if len(inv.idx.forwards) == 0 {
		return false
	}
	a := NormalizeAddress(rcpt)
	if inv.idx.forwards[a] {
		return true
	}
	l, d := SplitAddress(a)
	if inv.idx.delim == "" || inv.idx.classes[d] != Local {
		return false
	}
	if b, ok := splitExtension(l, inv.idx.delim); ok {
		return inv.idx.forwards[b+"@"+d]
	}
	return false
}
