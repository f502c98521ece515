package main

import (
	"encoding/json"
	"os"
	"strings"
	"testing"

	"github.com/mailnode/mailnode/dns/dnstest"
)

// parents delegates the example domains from servers without addresses,
// so that the check does not ask port 53 of any host from a unit test;
// the reverse zones carry the node's PTR records.
const parents = `
com.  SOA a.nic.test. hostmaster.nic.test. 1 3600 900 1209600 300
com.  NS  a.nic.test.
net.  SOA a.nic.test. hostmaster.nic.test. 1 3600 900 1209600 300
net.  NS  a.nic.test.
org.  SOA a.nic.test. hostmaster.nic.test. 1 3600 900 1209600 300
partner.org. MX 10 mx.partner.org.
partner.org. MX 20 mx1.example.com.
113.0.203.in-addr.arpa.     SOA ns.example.org. hostmaster.example.org. 1 3600 900 1209600 300
10.113.0.203.in-addr.arpa.  PTR mx1.example.com.
8.b.d.0.1.0.0.2.ip6.arpa.   SOA ns.example.org. hostmaster.example.org. 1 3600 900 1209600 300
0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa. PTR mx1.example.com.
`

func TestDNSCheckCommand(t *testing.T) {
	srv := dnstest.Start(t, parents)
	_, invPath := testNode(t, "127.0.0.1:9") // node.resolver unused: --resolver wins
	withoutMTASTS(t, invPath)
	publish(t, srv, invPath)

	out, errs, code := runApp(t, "dns", "check", "--inventory", invPath, "--resolver", srv.Addr)
	if code != 0 {
		t.Fatalf("dns check: exit %d\n%s%s", code, out, errs)
	}
	if !strings.Contains(out, "every required check passes") || !strings.Contains(out, "example.com      dkim:mx2026e") {
		t.Errorf("table:\n%s", out)
	}

	// One domain, JSON, DMARC gone: exit 1 and the JSON says why.
	srv.Remove("_dmarc.example.net.", 16)
	out, errs, code = runApp(t, "dns", "check", "--inventory", invPath, "--resolver", srv.Addr, "--domain", "example.net", "--json")
	if code != 1 {
		t.Fatalf("dns check without DMARC: exit %d\n%s%s", code, out, errs)
	}
	var rep struct {
		OK      bool
		Results []struct{ Domain, Check, Status, Problem string }
	}
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatalf("%v:\n%s", err, out)
	}
	var failed []string
	for _, r := range rep.Results {
		if r.Domain == "example.com" {
			t.Errorf("--domain example.net checked %s", r.Check)
		}
		if r.Status == "fail" {
			failed = append(failed, r.Domain+" "+r.Check+" "+r.Problem)
		}
	}
	if rep.OK || len(failed) != 1 || failed[0] != "example.net dmarc NXDOMAIN" {
		t.Errorf("ok=%v failed=%q", rep.OK, failed)
	}

	if _, _, code := runApp(t, "dns", "check", "--inventory", invPath, "--domain", "nowhere.test"); code != 2 {
		t.Errorf("unknown domain: exit %d, want 2", code)
	}
}

// A --resolver that is not HOST:PORT is bad input (exit 2) for every
// command that takes one, named in the message.
func TestBadResolverFlag(t *testing.T) {
	for _, args := range [][]string{
		{"dns", "check"},
		{"dkim", "status"},
		{"dkim", "rotate", "--domain", "example.com", "--retire", "mx2026e"},
	} {
		name := strings.Join(args[:2], " ")
		_, errs, code := runApp(t, append(args, "-i", "../../examples/inventory.yaml", "--resolver", "bad")...)
		if code != 2 || !strings.Contains(errs, name+`: --resolver "bad" is not HOST:PORT`) {
			t.Errorf("%s: exit %d: %s", name, code, errs)
		}
	}
}

// withoutMTASTS takes example.com's mta_sts out of the inventory: its
// policy check would connect to the example's addresses (203.0.113.10:443),
// which a unit test must not do. Package dns checks policies against a
// local HTTPS server; test/dns_e2e_test.go serves them on those addresses
// inside the test's namespace.
func withoutMTASTS(t *testing.T, invPath string) {
	t.Helper()
	b, err := os.ReadFile(invPath)
	if err != nil {
		t.Fatal(err)
	}
	var keep []string
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), "mta_sts:") {
			keep = append(keep, l)
		}
	}
	if len(keep) == strings.Count(string(b), "\n")+1 {
		t.Fatal("no mta_sts line in the example inventory")
	}
	if err := os.WriteFile(invPath, []byte(strings.Join(keep, "\n")), 0o640); err != nil {
		t.Fatal(err)
	}
}
