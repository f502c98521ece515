package inventory

import "strings"

// Keep says how much of the inventory Load keeps once it is validated.
// render-config and the tools need all of it; a daemon decides with a few
// lookup tables and keeps its inventory for as long as it runs, across
// reloads, on a node that may hold 100,000 mailboxes. What it does not keep
// is validated all the same: a daemon refuses the inventory render-config
// refuses, with the same problems.
type Keep int

const (
	// KeepAll keeps everything (render-config, the DNS and DKIM tools).
	KeepAll Keep = iota
	// KeepDecisions keeps what policyd decides with: the lookup tables
	// (classes, trusted networks, mailboxes and the addresses each may send
	// as, aliases, lists, per-address transports, the recipient delimiter)
	// and each domain's name, class, next hop and DKIM selectors. The
	// domains' mailboxes (password hashes, quotas), aliases, lists,
	// recipients and transports are dropped: Domain() and LocalDomains()
	// return them without those fields.
	KeepDecisions
	// KeepDomains keeps what milterd decides with: KeepDecisions' domains,
	// the classes and trusted networks, and the address tables only where
	// policy.sender_login is strict (milterd then holds From: to the
	// login's addresses).
	KeepDomains
)

// keepOnly drops what k does not keep, once the tables are built and
// every check has run. Each domain has shed its hashes and quotas, and had
// its strings copied, as it was decoded (shed).
func (inv *Inventory) keepOnly(k Keep) {
	if k == KeepAll {
		return
	}
	x := inv.idx
	if !inv.keepsAddresses(k) {
		x.owners, x.lists, x.virtual, x.routed = nil, nil, nil, nil
	}
	inv.compact()
}

// keepsAddresses reports whether k keeps the address tables (owners,
// aliases, lists, transports). Where it does not, they are not even built:
// at 100,000 mailboxes they are some 30 MiB of milterd's reload peak.
func (inv *Inventory) keepsAddresses(k Keep) bool {
	return k != KeepDomains || inv.Policy.SenderLogin == "strict"
}

// shed drops, from a domain just decoded and checked, what no daemon
// decides with (password hashes, quotas), and copies the rest: the fast
// decoder's strings share the text of the whole item, hashes included.
// What stays is what the checks across domains and the lookup tables
// still read.
func (d *Domain) shed(k Keep) {
	if k == KeepAll {
		return
	}
	d.Name = strings.Clone(d.Name)
	d.Class = internClass(d.Class)
	d.Nexthop = strings.Clone(d.Nexthop)
	for i := range d.DKIM {
		s := &d.DKIM[i]
		s.Selector, s.Algorithm = strings.Clone(s.Selector), strings.Clone(s.Algorithm)
	}
	for i := range d.Mailboxes {
		m := &d.Mailboxes[i]
		m.User, m.Password, m.Quota = strings.Clone(m.User), "", ""
		cloneAll(m.Aliases)
	}
	d.Aliases, d.Lists = cloneLists(d.Aliases), cloneLists(d.Lists)
	cloneAll(d.Recipients)
	if d.Transports != nil {
		t := make(map[string]string, len(d.Transports))
		for k, v := range d.Transports {
			t[strings.Clone(k)] = strings.Clone(v)
		}
		d.Transports = t
	}
}

func cloneLists(m map[string]StringList) map[string]StringList {
	if m == nil {
		return nil
	}
	out := make(map[string]StringList, len(m))
	for k, l := range m {
		cloneAll(l)
		out[strings.Clone(k)] = l
	}
	return out
}

func cloneAll(l []string) {
	for i, s := range l {
		l[i] = strings.Clone(s)
	}
}

// internClass returns the constant spelling of a domain's class.
func internClass(c string) string {
	switch c {
	case "local":
		return "local"
	case "relay":
		return "relay"
	}
	return strings.Clone(c)
}
