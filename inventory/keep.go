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

// keepOnly drops what k does not keep. The strings kept are copied: those
// the fast decoder made share the text of their whole domain item, password
// hashes included, and would keep it alive.
func (inv *Inventory) keepOnly(k Keep) {
	if k == KeepAll {
		return
	}
	x := inv.idx
	// The targets of aliases and lists may be text of the item; the other
	// table entries were built by concatenation and share nothing.
	for i := range inv.Domains {
		d := &inv.Domains[i]
		if d.Class == "relay" {
			continue
		}
		at := "@" + d.Name
		for name := range d.Aliases {
			cloneAll(x.virtual[name+at])
		}
		for name := range d.Lists {
			cloneAll(x.virtual[name+at]) // the same slice as x.lists'
		}
	}
	domains := make([]Domain, len(inv.Domains))
	x.domains = make(map[string]*Domain, len(domains))
	classes := make(map[string]Class, len(domains)+1)
	classes[inv.Node.Hostname] = Local
	for i := range inv.Domains {
		d := &inv.Domains[i]
		n := &domains[i]
		n.Name = strings.Clone(d.Name)
		n.Class = internClass(d.Class)
		n.Nexthop = strings.Clone(d.Nexthop)
		if len(d.DKIM) > 0 {
			n.DKIM = make([]Selector, len(d.DKIM))
			for j, s := range d.DKIM {
				n.DKIM[j] = Selector{Selector: strings.Clone(s.Selector), Algorithm: strings.Clone(s.Algorithm)}
			}
		}
		x.domains[n.Name] = n
		classes[n.Name] = x.classes[d.Name]
	}
	x.classes = classes
	inv.Domains = domains
	if k == KeepDomains && inv.Policy.SenderLogin != "strict" {
		x.owners, x.lists, x.virtual, x.routed = nil, nil, nil, nil
	}
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
