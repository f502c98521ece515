package harness

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

// StartTier starts one node per address of addrs as the nodes of one tier,
// the way an operator runs a tier: the inventory lists them in tier.nodes
// (node i is mx<i+1> in the domain of the inventory's node.hostname, with
// addrs[i] as its address; node.hostname and node.addresses are left
// out), and each node's render-config, policyd and milterd run with
// --node for its own entry (Options.Node). Node i listens on addrs[i] (a
// non-loopback address is added to lo for the test and removed
// afterwards), and signs with the DKIM keys of node 0 (one set of keys
// published for the tier) and its SRS secret. Each node has a private tree of its own, so
// the paths and ports of the inventories differ; tier.nodes is the same.
// What they share beyond that (policy.state in one Redis) comes from
// opt.Edit. Each node is stopped in t.Cleanup.
func StartTier(t testing.TB, addrs []string, opt Options) []*Node {
	t.Helper()
	hosts, err := tierHostnames(opt, len(addrs))
	if err != nil {
		t.Fatalf("tier: %v", err)
	}
	var tierNodes []any
	for i, a := range addrs {
		tierNodes = append(tierNodes, map[string]any{"hostname": hosts[i], "addresses": []any{a}})
	}
	var nodes []*Node
	for i, a := range addrs {
		if !strings.HasPrefix(a, "127.") {
			if out, err := exec.Command("ip", "addr", "replace", a+"/32", "dev", "lo").CombinedOutput(); err != nil {
				t.Fatalf("ip addr replace %s: %v\n%s", a, err, out)
			}
			t.Cleanup(func() { exec.Command("ip", "addr", "del", a+"/32", "dev", "lo").Run() })
		}
		o := opt
		o.ListenAddr = a
		o.Dir = ""
		o.Node = hosts[i]
		o.Edit = func(doc map[string]any) {
			if opt.Edit != nil {
				opt.Edit(doc)
			}
			if node, ok := doc["node"].(map[string]any); ok {
				delete(node, "hostname")
				delete(node, "addresses")
			}
			Set(doc, "tier", map[string]any{"nodes": tierNodes})
			if i > 0 {
				Set(doc, "dkim.key_dir", nodes[0].Inv.DKIM.KeyDir)
				// One SRS secret for the tier: a bounce may come back to any node.
				Set(doc, "forwarding.srs_secret_file", nodes[0].Inv.Forwarding.SRSSecretFile)
			}
		}
		nodes = append(nodes, StartNode(t, o))
	}
	return nodes
}

// tierHostnames names n tier nodes mx1, mx2, ... in the domain of the
// node.hostname of opt's inventory (after opt.Edit).
func tierHostnames(opt Options, n int) ([]string, error) {
	src, err := opt.inventoryFile()
	if err != nil {
		return nil, err
	}
	raw, err := os.ReadFile(src)
	if err != nil {
		return nil, err
	}
	var doc map[string]any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", src, err)
	}
	if opt.Edit != nil {
		opt.Edit(doc)
	}
	h, _ := Get(doc, "node.hostname").(string)
	_, domain, ok := strings.Cut(h, ".")
	if !ok || domain == "" {
		return nil, fmt.Errorf("%s: node.hostname %q is not fully qualified: the tier's nodes are named mx<N> in its domain", src, h)
	}
	var hosts []string
	for i := range n {
		hosts = append(hosts, fmt.Sprintf("mx%d.%s", i+1, domain))
	}
	return hosts, nil
}
