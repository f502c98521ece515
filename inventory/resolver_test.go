package inventory

import (
	"strings"
	"testing"
)

// TestResolverAnchorFile: node.resolver_anchor_file defaults to Debian's
// auto-trust-anchor-file, takes another absolute path, and refuses what
// unbound could not keep (relative, a directory, dns-root-data's own
// directory) or what would break unbound.conf's quoting.
func TestResolverAnchorFile(t *testing.T) {
	parse := func(node string) (*Inventory, error) {
		return Parse([]byte("node: {hostname: mx1.example.com"+node+"}\ndomains:\n  - name: example.com\n"), "anchor.yaml")
	}
	inv, err := parse("")
	if err != nil {
		t.Fatal(err)
	}
	if inv.Node.ResolverAnchorFile != DefaultResolverAnchorFile || DefaultResolverAnchorFile != "/var/lib/unbound/root.key" {
		t.Errorf("default %q", inv.Node.ResolverAnchorFile)
	}
	if inv, err := parse(", resolver_anchor_file: /srv/unbound/root.key"); err != nil || inv.Node.ResolverAnchorFile != "/srv/unbound/root.key" {
		t.Errorf("set: %v", err)
	}
	for _, bad := range []string{"root.key", "/var/lib/unbound/", "/", "/usr/share/dns/root.key", "/var/lib/unbound/root key", `/var/lib/\"x`} {
		_, err := parse(`, resolver_anchor_file: "` + bad + `"`)
		if err == nil || !strings.Contains(err.Error(), "node.resolver_anchor_file") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}
