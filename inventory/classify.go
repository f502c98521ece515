package inventory

import (
	"net/netip"
	"slices"
	"strings"
)

// The domain of the node's own host name serves the unix users through
// local(8) (Postfix's mydestination); it is a local domain for the matrix.

// newIndex builds the lookup tables of the classifier and the renderer.
func (inv *Inventory) newIndex() *index { return inv.newIndexOf(true, false) }

// newIndexOf builds the lookup tables; without addresses, only the
// classes, domains and trusted networks (the address tables stay nil).
// With release, each domain lets go of its addresses (mailboxes, aliases,
// lists, recipients, transports) as soon as they are in the tables: a
// daemon keeps only the tables, and at 100,000 mailboxes the domains'
// copies are some 24 MiB that would otherwise stay alive beside the tables
// being built, at the top of a reload's peak.
func (inv *Inventory) newIndexOf(addresses, release bool) *index {
	// The tables' sizes, entries and list members, so that each is made
	// once (0 without addresses).
	var nMailbox, nOwned, nVirtual, nTargets, nLists, nMembers int
	for i := range inv.Domains {
		if !addresses {
			break
		}
		d := &inv.Domains[i]
		if d.Class == "relay" {
			continue
		}
		nMailbox += len(d.Mailboxes)
		nVirtual += len(d.Aliases) + len(d.Lists)
		nLists += len(d.Lists)
		for _, m := range d.Mailboxes {
			nOwned += 1 + len(m.Aliases)
			nVirtual += len(m.Aliases)
			nTargets += len(m.Aliases)
		}
		for _, l := range d.Aliases {
			nTargets += len(l)
		}
		for _, l := range d.Lists {
			nTargets += len(l)
			nMembers += len(l)
		}
	}
	x := &index{
		owners:  newTable(nMailbox, nOwned),
		lists:   newTable(nLists, nMembers),
		virtual: newTable(nVirtual, nTargets),
		routed:  map[string]bool{},
		delim:   inv.Postfix.RecipientDelimiter,
	}
	for _, n := range inv.Node.TrustedNetworks {
		if p, err := ParsePrefix(n); err == nil {
			x.trusted = append(x.trusted, p)
		}
	}
	x.indexDomains(inv)
	// The forwarding addresses come from the domains' aliases and lists
	// (forwardSet), before the domains let go of them.
	x.forwards = inv.forwardSet(x.classes)
	for i := range inv.Domains {
		d := &inv.Domains[i]
		if addresses && d.Class != "relay" {
			x.addDomain(d)
		}
		if release {
			d.Mailboxes, d.Aliases, d.Lists, d.Recipients, d.Transports = nil, nil, nil, nil, nil
		}
	}
	x.owners.freeze()
	x.lists.freeze()
	x.virtual.freeze()
	// A domain alias whose targets all end in one mailbox belongs to it too
	// (the order of an owner's addresses does not matter: MayUseSender looks
	// them up, Owners sorts). The owners it adds to are folded in by the
	// last freeze.
	x.virtual.each(func(a string, ts []string) {
		if len(ts) == 1 && x.owns(ts[0], a) {
			return // a mailbox's own alias, recorded above
		}
		if x.lists.has(a) {
			return
		}
		if owner := x.soleMailbox(a, 0); owner != "" && owner != a && !x.owns(owner, a) {
			own, _ := x.owners.get(owner)
			x.owners.set(owner, append(own, a))
		}
	})
	x.owners.freeze()
	return x
}

// indexDomains indexes inv's domains by name and class; the node's own
// host name is local.
func (x *index) indexDomains(inv *Inventory) {
	x.classes = make(map[string]Class, len(inv.Domains)+1)
	x.domains = make(map[string]*Domain, len(inv.Domains))
	x.classes[inv.Node.Hostname] = Local
	for i := range inv.Domains {
		d := &inv.Domains[i]
		x.domains[d.Name] = d
		if d.Class == "relay" {
			x.classes[d.Name] = Relay
		} else {
			x.classes[d.Name] = Local
		}
	}
}

// addDomain indexes the addresses of local domain d: its mailboxes, their
// aliases, the domain's aliases, lists and per-address transports.
func (x *index) addDomain(d *Domain) {
	at := "@" + d.Name
	var ts []string // one list's targets, qualified; the tables copy them
	qualify := func(l StringList) []string {
		ts = ts[:0]
		for _, t := range l {
			if strings.IndexByte(t, '@') < 0 {
				t += at
			}
			ts = append(ts, t)
		}
		return ts
	}
	x.addMailboxes(d.Mailboxes, at)
	for name, l := range d.Aliases {
		x.virtual.set(name+at, qualify(l))
	}
	for name := range d.Transports {
		x.routed[name+at] = true
	}
	for name, l := range d.Lists {
		members := qualify(l)
		x.virtual.set(name+at, members)
		x.lists.set(name+at, members)
	}
}

// addMailboxes indexes the mailboxes of one domain (at is "@domain"):
// each owns its address and its aliases, and each alias leads to it. The
// addresses are cut from one block of text per domain: at 100,000
// mailboxes that is one allocation per domain instead of some 300,000
// small ones, which the collector would scan and which, allocated among a
// load's short-lived objects, leave a daemon's heap fragmented across
// reloads.
func (x *index) addMailboxes(ms []Mailbox, at string) {
	size := 0
	for _, m := range ms {
		size += len(m.User) + len(at)
		for _, a := range m.Aliases {
			size += len(a) + len(at)
		}
	}
	var b strings.Builder
	b.Grow(size)
	for _, m := range ms {
		b.WriteString(m.User)
		b.WriteString(at)
		for _, a := range m.Aliases {
			b.WriteString(a)
			b.WriteString(at)
		}
	}
	text, off := b.String(), 0
	cut := func(local string) string {
		s := text[off : off+len(local)+len(at)]
		off += len(s)
		return s
	}
	var owned []string // one mailbox's addresses; the tables copy them
	for _, m := range ms {
		addr := cut(m.User)
		owned = append(owned[:0], addr)
		for _, a := range m.Aliases {
			alias := cut(a)
			x.virtual.set(alias, owned[:1])
			owned = append(owned, alias)
		}
		x.owners.set(addr, owned)
	}
}

// soleMailbox follows aliases from a and returns the one mailbox they all
// reach, or "" when they reach several, none, or leave the node.
func (x *index) soleMailbox(a string, depth int) string {
	if x.isMailbox(a) {
		return a
	}
	ts, ok := x.virtual.get(a)
	if !ok || depth > 20 {
		return ""
	}
	found := ""
	for _, t := range ts {
		m := x.soleMailbox(t, depth+1)
		if m == "" || (found != "" && m != found) {
			return ""
		}
		found = m
	}
	return found
}

// isMailbox reports whether a is a mailbox address: every mailbox, and
// only a mailbox, owns addresses (a set of its own would repeat 100,000
// keys at 100,000 mailboxes).
func (x *index) isMailbox(a string) bool {
	return x.owners.has(a)
}

// owns reports whether mailbox owns address a.
func (x *index) owns(mailbox, a string) bool {
	own, _ := x.owners.get(mailbox)
	return contains(own, a)
}

func contains(l []string, s string) bool {
	for _, x := range l {
		if x == s {
			return true
		}
	}
	return false
}

// SplitAddress returns the local part and the normalized domain of an
// address. An address without '@' has an empty domain.
func SplitAddress(addr string) (local, domain string) {
	addr = strings.TrimSpace(addr)
	addr = strings.TrimSuffix(strings.TrimPrefix(addr, "<"), ">")
	at := strings.LastIndexByte(addr, '@')
	if at < 0 {
		return strings.ToLower(addr), ""
	}
	local = strings.ToLower(addr[:at])
	d, err := NormalizeDomain(addr[at+1:])
	if err != nil {
		// Not a valid host name: keep a lower-cased form that can match nothing local.
		return local, "invalid:" + strings.ToLower(addr[at+1:])
	}
	return local, d
}

// NormalizeAddress returns local@domain in the normalized form used by maps.
func NormalizeAddress(addr string) string {
	l, d := SplitAddress(addr)
	if d == "" {
		return l
	}
	return l + "@" + d
}

// ClassifyDomain returns the class of a domain name (any case, trailing dot, IDN).
func (inv *Inventory) ClassifyDomain(domain string) Class {
	d, err := NormalizeDomain(domain)
	if err != nil {
		return Outside
	}
	return inv.idx.classes[d]
}

// Classify returns the class of an address's domain. An address without a
// domain, or with an invalid one, is outside. The null sender is the
// caller's business (see policy): here "" is outside.
func (inv *Inventory) Classify(address string) Class {
	_, d := SplitAddress(address)
	if d == "" {
		return Outside
	}
	return inv.idx.classes[d]
}

// Authorized tells whether a session is SASL-authenticated (any non-empty
// login), from a trusted network, or neither. A missing or unparsable client
// address is never trusted.
func (inv *Inventory) Authorized(clientAddr, saslUser string) Auth {
	if strings.TrimSpace(saslUser) != "" {
		return AuthSASL
	}
	if inv.Trusted(clientAddr) {
		return AuthTrust
	}
	return AuthNone
}

// Trusted reports whether clientAddr lies in node.trusted_networks.
func (inv *Inventory) Trusted(clientAddr string) bool {
	clientAddr = strings.TrimSpace(clientAddr)
	if clientAddr == "" {
		return false
	}
	if strings.HasPrefix(clientAddr, "[") && strings.HasSuffix(clientAddr, "]") {
		clientAddr = clientAddr[1 : len(clientAddr)-1]
	}
	clientAddr = strings.TrimPrefix(strings.TrimPrefix(clientAddr, "IPv6:"), "ipv6:")
	a, err := netip.ParseAddr(clientAddr)
	if err != nil {
		return false
	}
	a = a.Unmap()
	for _, p := range inv.idx.trusted {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// IsList reports whether address is an internal list of a local domain,
// with or without an extension (postfix.recipient_delimiter).
func (inv *Inventory) IsList(address string) bool {
	return inv.idx.lists.has(inv.BaseAddress(address))
}

// ListMembers returns the qualified members of an internal list.
func (inv *Inventory) ListMembers(address string) []string {
	l, _ := inv.idx.lists.get(inv.BaseAddress(address))
	return l
}

// IsMailbox reports whether address is a mailbox on this node.
func (inv *Inventory) IsMailbox(address string) bool {
	return inv.idx.isMailbox(NormalizeAddress(address))
}

// MayUseSender implements sender_login strict: login (a mailbox address)
// may send as its own address, its aliases, and domain aliases that reach
// only its mailbox.
//
// With postfix.recipient_delimiter, the extension forms of those addresses
// are the login's too (bob+news@ when bob@ is).
func (inv *Inventory) MayUseSender(login, sender string) bool {
	own, _ := inv.idx.owners.get(NormalizeAddress(login))
	l, d := SplitAddress(sender)
	a := l
	if d != "" {
		a = l + "@" + d
	}
	if contains(own, a) {
		return true
	}
	if b := inv.idx.base(l, d); b != "" {
		return contains(own, b)
	}
	return false
}

// Owners returns, per sender address, the SASL logins allowed to use it
// (Postfix's sender_login_maps), sorted by address.
func (inv *Inventory) Owners() []Entry {
	// One (address, login) pair per ownership, sorted, then grouped: a map
	// from address to logins costs several times more at 100,000 mailboxes.
	type pair struct{ addr, login string }
	n := 0
	inv.idx.owners.each(func(_ string, addrs []string) { n += len(addrs) })
	pairs := make([]pair, 0, n)
	inv.idx.owners.each(func(login string, addrs []string) {
		for _, a := range addrs {
			pairs = append(pairs, pair{a, login})
		}
	})
	slices.SortFunc(pairs, func(x, y pair) int {
		if c := strings.Compare(x.addr, y.addr); c != 0 {
			return c
		}
		return strings.Compare(x.login, y.login)
	})
	out := make([]Entry, 0, len(pairs))
	for i := 0; i < len(pairs); {
		j := i + 1
		for j < len(pairs) && pairs[j].addr == pairs[i].addr {
			j++
		}
		logins := make([]string, j-i)
		for k := i; k < j; k++ {
			logins[k-i] = pairs[k].login
		}
		out = append(out, Entry{Key: pairs[i].addr, Values: logins})
		i = j
	}
	return out
}

// VirtualAliases returns every alias and list with qualified targets, sorted.
func (inv *Inventory) VirtualAliases() []Entry {
	out := make([]Entry, 0, inv.idx.virtual.len())
	inv.idx.virtual.each(func(a string, ts []string) { out = append(out, Entry{Key: a, Values: ts}) })
	slices.SortFunc(out, func(x, y Entry) int { return strings.Compare(x.Key, y.Key) })
	return out
}

// Entry is one key of a lookup table and its values.
type Entry struct {
	Key    string
	Values []string
}

// Domain returns the inventory domain with this name, or nil.
func (inv *Inventory) Domain(name string) *Domain {
	d, err := NormalizeDomain(name)
	if err != nil {
		return nil
	}
	return inv.idx.domains[d]
}

// LocalDomains returns the local domains in inventory order.
func (inv *Inventory) LocalDomains() []*Domain { return inv.domainsOf("local") }

// RelayDomains returns the relay domains in inventory order.
func (inv *Inventory) RelayDomains() []*Domain { return inv.domainsOf("relay") }

func (inv *Inventory) domainsOf(class string) []*Domain {
	var out []*Domain
	for i := range inv.Domains {
		if inv.Domains[i].Class == class {
			out = append(out, &inv.Domains[i])
		}
	}
	return out
}

// PolicyEnabled reports whether main.cf wires policyd (default true; never
// on a null client, which runs no policyd).
func (inv *Inventory) PolicyEnabled() bool {
	return !inv.NullClient() && (inv.Policy.Enabled == nil || *inv.Policy.Enabled)
}

// MilterEnabled reports whether main.cf wires milterd (default true).
func (inv *Inventory) MilterEnabled() bool { return inv.Milter.Enabled == nil || *inv.Milter.Enabled }
