package inventory

import (
	"slices"
	"strings"
	"testing"
)

const tierInv = `
tier:
  nodes:
    - {hostname: MX1.Example.com., addresses: [203.0.113.10, "::ffff:203.0.113.20"]}
    - {hostname: mx2.example.com, addresses: [203.0.113.11, "2001:db8::11"]}
domains:
  - name: example.com
`

// One inventory, loaded as each node, gives each node's hostname and
// addresses to every consumer, including the classification of the node's
// own name (user@<hostname> is a local address).
func TestLoadAsTierNode(t *testing.T) {
	for _, c := range []struct {
		node, host string
		addrs      []string
	}{
		{"mx1.example.com", "mx1.example.com", []string{"203.0.113.10", "203.0.113.20"}},
		{"MX2.example.com.", "mx2.example.com", []string{"203.0.113.11", "2001:db8::11"}},
	} {
		inv, err := ParseWith([]byte(tierInv), "tier.yaml", LoadOptions{Node: c.node})
		if err != nil {
			t.Fatalf("--node %s: %v", c.node, err)
		}
		if inv.Node.Hostname != c.host || !slices.Equal(inv.Node.Addresses, c.addrs) {
			t.Errorf("--node %s: node %s %v, want %s %v", c.node, inv.Node.Hostname, inv.Node.Addresses, c.host, c.addrs)
		}
		if got := inv.Classify("root@" + c.host); got != Local {
			t.Errorf("--node %s: root@%s is %v, want local", c.node, c.host, got)
		}
		if got := inv.TierHostnames(); !slices.Equal(got, []string{"mx1.example.com", "mx2.example.com"}) {
			t.Errorf("tier hostnames %v", got)
		}
		if len(inv.TierNodes()) != 2 {
			t.Errorf("TierNodes: %v", inv.TierNodes())
		}
	}
	// node.hostname is the default node, and node.addresses may repeat its entry.
	withNode := "node: {hostname: mx2.example.com, addresses: [\"2001:db8::11\", 203.0.113.11]}\n" + tierInv
	inv, err := Parse([]byte(withNode), "tier.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if inv.Node.Hostname != "mx2.example.com" {
		t.Errorf("default node %s, want node.hostname", inv.Node.Hostname)
	}
	// --node overrides node.hostname.
	if inv, err = ParseWith([]byte(withNode), "tier.yaml", LoadOptions{Node: "mx1.example.com"}); err != nil || inv.Node.Hostname != "mx1.example.com" {
		t.Errorf("--node mx1 over node.hostname mx2: %v, %v", err, inv)
	}
}

func TestLoadAsUnknownNode(t *testing.T) {
	_, err := ParseWith([]byte(tierInv), "tier.yaml", LoadOptions{Node: "mx9.example.com"})
	want := `tier.yaml:4: tier.nodes: --node "mx9.example.com" is not a node of the tier; its nodes are: mx1.example.com, mx2.example.com`
	if err == nil || err.Error() != want {
		t.Errorf("got %v\nwant %s", err, want)
	}
	// Without a tier, --node can only name node.hostname.
	single := "node: {hostname: mx1.example.com}\ndomains: [{name: example.com}]\n"
	if _, err := ParseWith([]byte(single), "one.yaml", LoadOptions{Node: "mx1.example.com"}); err != nil {
		t.Errorf("--node node.hostname: %v", err)
	}
	_, err = ParseWith([]byte(single), "one.yaml", LoadOptions{Node: "mx2.example.com"})
	if err == nil || !strings.Contains(err.Error(), `one.yaml:1: node.hostname: --node "mx2.example.com": the inventory has no tier.nodes`) {
		t.Errorf("--node other than node.hostname without a tier: %v", err)
	}
}

// Without tier.nodes the node itself is the tier.
func TestTierNodesOfSingleNode(t *testing.T) {
	inv, err := Parse([]byte("node: {hostname: mx1.example.com, addresses: [192.0.2.1]}\ndomains: [{name: example.com}]\n"), "one.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if n := inv.TierNodes(); inv.InTier() || len(n) != 1 || n[0].Hostname != "mx1.example.com" || !slices.Equal(n[0].Addresses, []string{"192.0.2.1"}) {
		t.Errorf("TierNodes %v, InTier %v", n, inv.InTier())
	}
}
