package harness

import (
	"fmt"
	"os/exec"
	"strings"
	"testing"
)

// StartTier starts one node per address of addrs from the same inventory
// and options, as functionally identical nodes of a tier behind one
// round-robin MX: node i listens on addrs[i] (a non-loopback address is
// added to lo for the test and removed afterwards), is called mx<i+1> in
// the domain of the inventory's node.hostname, and signs with the DKIM
// keys of node 0 (one set of keys published for the tier). What they
// share beyond that (policy.state in one Redis) comes from opt.Edit. Each
// node is stopped in t.Cleanup.
func StartTier(t testing.TB, addrs []string, opt Options) []*Node {
	t.Helper()
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
		i := i
		o.Edit = func(doc map[string]any) {
			if opt.Edit != nil {
				opt.Edit(doc)
			}
			if h, _ := Get(doc, "node.hostname").(string); i > 0 && strings.Contains(h, ".") {
				_, domain, _ := strings.Cut(h, ".")
				Set(doc, "node.hostname", fmt.Sprintf("mx%d.%s", i+1, domain))
			}
			if i > 0 {
				Set(doc, "dkim.key_dir", nodes[0].Inv.DKIM.KeyDir)
			}
		}
		nodes = append(nodes, StartNode(t, o))
	}
	return nodes
}
