package inventory

import (
	"net/netip"
	"slices"
	"strings"
)

// A tier (tier.nodes) is several functionally identical mail nodes behind
// one round-robin MX. One inventory serves every node: each node loads it
// as itself (LoadOptions.Node, render-config --node), which makes that
// node's hostname and addresses node.hostname and node.addresses, so that
// render, policyd, milterd and the DNS tools all see the same node. What
// the tier shares (the zone's MX set, SPF, PTR checks) comes from
// TierNodes.

// InTier reports whether the inventory describes a tier (tier.nodes set).
func (inv *Inventory) InTier() bool { return len(inv.Tier.Nodes) > 0 }

// TierNodes are the nodes that receive the local domains' mail: every node
// of tier.nodes, or, without a tier, node.hostname with node.addresses.
func (inv *Inventory) TierNodes() []TierNode {
	if inv.InTier() {
		return inv.Tier.Nodes
	}
	return []TierNode{{Hostname: inv.Node.Hostname, Addresses: inv.Node.Addresses}}
}

// TierHostnames lists the hostnames of tier.nodes, in inventory order.
func (inv *Inventory) TierHostnames() []string {
	names := make([]string, len(inv.Tier.Nodes))
	for i, n := range inv.Tier.Nodes {
		names[i] = n.Hostname
	}
	return names
}

// normalizeHostname is how node names are compared: lower case, no
// surrounding space, no trailing dot.
func normalizeHostname(s string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(s)), ".")
}

// selectNode checks tier.nodes and makes the node the inventory is loaded
// as (name, else node.hostname) the inventory's node: its hostname and
// addresses replace node.hostname and node.addresses. It runs after
// normalize and before validate.
func (inv *Inventory) selectNode(v *validator, name string) {
	name = normalizeHostname(name)
	if !inv.InTier() {
		if name != "" && inv.Node.Hostname != "" && name != inv.Node.Hostname {
			v.add([]any{"node", "hostname"}, "--node %q: the inventory has no tier.nodes; the only node it describes is %s", name, inv.Node.Hostname)
		}
		return
	}
	if inv.NullClient() {
		v.add([]any{"tier"}, nullClientWhy+"is no MX and belongs to no tier: tier.nodes goes in the inventory of the mail nodes it relays through; remove it")
		return
	}
	if !inv.checkTier(v) {
		return
	}
	known := strings.Join(inv.TierHostnames(), ", ")
	fileNode := -1 // node.hostname's entry
	if inv.Node.Hostname != "" {
		fileNode = slices.Index(inv.TierHostnames(), inv.Node.Hostname)
		if fileNode < 0 && name == "" {
			v.add([]any{"node", "hostname"}, "%q is not a node of tier.nodes (%s): list it there, or load the inventory as one of them with --node", inv.Node.Hostname, known)
			return
		}
	}
	if fileNode >= 0 && len(inv.Node.Addresses) > 0 && !sameAddresses(inv.Node.Addresses, inv.Tier.Nodes[fileNode].Addresses) {
		v.add([]any{"node", "addresses"}, "differ from tier.nodes[%d].addresses of %s: with a tier, leave node.addresses out (tier.nodes gives every node's addresses)", fileNode, inv.Node.Hostname)
		return
	}
	chosen := fileNode
	if name != "" {
		chosen = slices.Index(inv.TierHostnames(), name)
		if chosen < 0 {
			v.add([]any{"tier", "nodes"}, "--node %q is not a node of the tier; its nodes are: %s", name, known)
			inv.Node.Hostname = name // said: no "missing" besides
			return
		}
	}
	if chosen < 0 {
		return // no node.hostname and no --node: validate says what to do
	}
	n := inv.Tier.Nodes[chosen]
	inv.Node.Hostname = n.Hostname
	inv.Node.Addresses = slices.Clone(n.Addresses)
}

// checkTier validates and normalizes tier.nodes: fully qualified, unique
// hostnames; at least one address each (the zone's A/AAAA and SPF and the
// PTR checks need them); valid addresses that no two nodes share. It
// reports whether all is well.
func (inv *Inventory) checkTier(v *validator) bool {
	before := len(v.problems)
	hosts := map[string]int{}
	addrs := map[netip.Addr]int{}
	for i := range inv.Tier.Nodes {
		n := &inv.Tier.Nodes[i]
		p := func(k ...any) []any { return append([]any{"tier", "nodes", i}, k...) }
		switch h, err := NormalizeDomain(normalizeHostname(n.Hostname)); {
		case strings.TrimSpace(n.Hostname) == "":
			v.add(p("hostname"), "missing: the node's fully qualified host name (its myhostname, MX target and PTR name)")
		case err != nil:
			v.add(p("hostname"), "%v", err)
		case !strings.Contains(h, "."):
			v.add(p("hostname"), "%q is not fully qualified (e.g. mx2.example.com)", h)
		default:
			n.Hostname = h
			if j, dup := hosts[h]; dup {
				v.add(p("hostname"), "%s is already tier.nodes[%d]: every node of the tier has its own name", h, j)
			}
			hosts[h] = i
		}
		if len(n.Addresses) == 0 {
			v.add(p("addresses"), "missing: the node's IPv4/IPv6 addresses (its A/AAAA records, the SPF policy and the PTR checks need them)")
		}
		for k, a := range n.Addresses {
			ip, err := netip.ParseAddr(strings.TrimSpace(a))
			if err != nil {
				v.add(p("addresses", k), "%q is not an IPv4 or IPv6 address", a)
				continue
			}
			ip = ip.Unmap()
			n.Addresses[k] = ip.String()
			if j, dup := addrs[ip]; dup {
				if j == i {
					v.add(p("addresses", k), "%s is listed twice for this node", ip)
				} else {
					v.add(p("addresses", k), "%s is already an address of tier.nodes[%d] (%s): two nodes cannot share an address (its PTR names one host)", ip, j, inv.Tier.Nodes[j].Hostname)
				}
				continue
			}
			addrs[ip] = i
		}
	}
	return len(v.problems) == before
}

// sameAddresses reports whether a and b hold the same addresses, in any order.
func sameAddresses(a, b []string) bool {
	set := func(l []string) []netip.Addr {
		var out []netip.Addr
		for _, s := range l {
			if ip, err := netip.ParseAddr(strings.TrimSpace(s)); err == nil {
				out = append(out, ip.Unmap())
			} else {
				return nil
			}
		}
		slices.SortFunc(out, netip.Addr.Compare)
		return slices.Compact(out)
	}
	sa, sb := set(a), set(b)
	return sa != nil && slices.Equal(sa, sb)
}
