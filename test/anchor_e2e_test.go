package test

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mailnode/mailnode/inventory"
	"github.com/mailnode/mailnode/test/harness"
)

// anchorRootAddr is the test's root name server inside the namespace.
const anchorRootAddr = "127.0.6.53"

// TestResolverKeepsRootAnchor: the rendered unbound.conf's root trust
// anchor is node.resolver_anchor_file, an auto-trust-anchor-file that
// unbound itself keeps (RFC 5011), as Debian's unbound package keeps
// /var/lib/unbound/root.key. The harness gives the node a file of its own,
// seeded from dns-root-data. The namespace cannot reach the real root, so
// the test has a root of its own: a "." zone signed with
// dnssec-keygen/dnssec-signzone, served by an authoritative unbound; the
// node's anchor file is seeded with that root's key signing key instead of
// Debian's, and the node's unbound (the rendered config, a test-only
// wrapper forwarding "." to the test's root server) must validate with it
// and rewrite the file as its RFC 5011 state: the autotrust header, the
// root's id line and the key VALID. A static trust-anchor-file would
// validate just as well but never be written: this is what tells them apart.
func TestResolverKeepsRootAnchor(t *testing.T) {
	if testing.Short() || os.Getenv(harness.EnvNetns) == "" {
		t.Skip("needs the test namespace (binds port 53 on loopback, runs unbound)")
	}
	for _, p := range []struct{ prog, pkg string }{{"unbound", "unbound"}, {"unbound-checkconf", "unbound"}, {"dnssec-keygen", "bind9-utils"}, {"dnssec-signzone", "bind9-utils"}} {
		if _, err := exec.LookPath(p.prog); err != nil {
			t.Fatalf("%s is not installed: apt-get install %s", p.prog, p.pkg)
		}
	}
	if _, err := os.Stat(inventory.RootKeyFile); err != nil {
		t.Fatalf("%v: apt-get install dns-root-data", err)
	}
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	port, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	resolver := fmt.Sprintf("127.0.0.1:%d", port)
	n := harness.StartNode(t, harness.Options{
		Inventory: filepath.Join(root, "examples", "nullclient.yaml"),
		Edit:      func(doc map[string]any) { harness.Set(doc, "node.resolver", resolver) },
	})

	// The node's own anchor file, in its tree, seeded from dns-root-data.
	anchor := n.Inv.Node.ResolverAnchorFile
	if !strings.HasPrefix(anchor, n.Dir+"/") {
		t.Fatalf("node.resolver_anchor_file %q is not in the node's tree %s", anchor, n.Dir)
	}
	seed, _ := os.ReadFile(inventory.RootKeyFile)
	if b, err := os.ReadFile(anchor); err != nil || string(b) != string(seed) {
		t.Fatalf("the harness did not seed %s from %s: %v", anchor, inventory.RootKeyFile, err)
	}
	conf := filepath.Join(n.Dir, "unbound", "unbound.conf")
	if o, err := exec.Command("unbound-checkconf", "-o", "auto-trust-anchor-file", conf).Output(); err != nil || strings.TrimSpace(string(o)) != anchor {
		t.Fatalf("rendered auto-trust-anchor-file: %q, %v; want %s", o, err, anchor)
	}

	// The test's root: one key signing key signs the zone.
	dir := t.TempDir()
	kdir := filepath.Join(dir, "keys")
	os.MkdirAll(kdir, 0o700)
	zone := filepath.Join(dir, "root.zone")
	signed := zone + ".signed"
	os.WriteFile(zone, []byte(fmt.Sprintf(`$TTL 300
. IN SOA a.root-servers.mailnode. hostmaster.mailnode. 1 3600 900 1209600 300
. IN NS a.root-servers.mailnode.
a.root-servers.mailnode. IN A %s
check.mailnode. IN MX 10 mx.check.mailnode.
mx.check.mailnode. IN A 192.0.2.25
`, anchorRootAddr)), 0o644)
	out, err := exec.Command("dnssec-keygen", "-q", "-K", kdir, "-a", "ECDSAP256SHA256", "-f", "KSK", "-n", "ZONE", ".").Output()
	if err != nil {
		t.Fatalf("dnssec-keygen: %v", err)
	}
	keyFile := filepath.Join(kdir, strings.TrimSpace(string(out))+".key")
	if o, err := exec.Command("dnssec-signzone", "-q", "-K", kdir, "-S", "-z", "-d", dir, "-o", ".", "-f", signed, zone).CombinedOutput(); err != nil {
		t.Fatalf("dnssec-signzone: %v\n%s", err, o)
	}
	kb, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	var ksk string
	for _, l := range strings.Split(string(kb), "\n") {
		if f := strings.Fields(l); len(f) > 3 && f[0] == "." && strings.Contains(l, " DNSKEY 257 ") {
			ksk = strings.Join(f, " ")
		}
	}
	if ksk == "" {
		t.Fatalf("no key signing key in %s:\n%s", keyFile, kb)
	}

	authConf := writeAuthUnbound(dir, anchorRootAddr, nil, authZone{".", signed})
	daneUnbound(t, "test root's unbound", authConf, net.JoinHostPort(anchorRootAddr, "53"), "check.mailnode.", false)

	// The node's world has the test's root: its key replaces Debian's in
	// the anchor file, as the seed would on a host whose root it is.
	if err := os.WriteFile(anchor, []byte(ksk+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	ubDir := filepath.Join(dir, "node-unbound")
	w := nodeUnboundConf(ubDir, conf)
	// A stub for "." would lose to the rendered root-hints; a forward does not.
	fmt.Fprintf(w, "forward-zone:\n    name: \".\"\n    forward-addr: %s@53\n", anchorRootAddr)
	nodeConf := writeNodeUnbound(ubDir, w)
	daneUnbound(t, "node's unbound", nodeConf, resolver, "check.mailnode.", true)

	// unbound writes its state into the anchor file once it has the
	// root's DNSKEY set validated.
	parts := strings.Split(strings.TrimSuffix(filepath.Base(keyFile), ".key"), "+")
	tagN, err := strconv.Atoi(parts[len(parts)-1])
	if err != nil {
		t.Fatalf("key file name %s: %v", keyFile, err)
	}
	tag := strconv.Itoa(tagN)
	deadline := time.Now().Add(20 * time.Second)
	for {
		b, _ := os.ReadFile(anchor)
		s := string(b)
		if strings.HasPrefix(s, "; autotrust trust anchor file\n") && strings.Contains(s, "\n;;id: . 1\n") &&
			strings.Contains(s, ";;state=2 [  VALID  ]") && strings.Contains(s, ";{id = "+tag+" (ksk)") {
			t.Logf("unbound keeps %s:\n%s", anchor, s)
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("unbound did not keep its root trust anchor %s (want the autotrust header, ;;id: . 1 and key %s VALID):\n%s\nunbound's log:\n%s",
				anchor, tag, s, anchorLog(nodeConf+".out"))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func anchorLog(p string) string {
	b, _ := os.ReadFile(p)
	return string(b)
}
