package dns_test

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/mailnode/mailnode/dkim"
	"github.com/mailnode/mailnode/dns"
	"github.com/mailnode/mailnode/dns/dnstest"
	"github.com/mailnode/mailnode/inventory"
	"github.com/mailnode/mailnode/render"
)

var keyDir string

func TestMain(m *testing.M) {
	d, err := os.MkdirTemp("", "mailnode-dns-keys")
	if err != nil {
		panic(err)
	}
	keyDir = d
	code := m.Run()
	os.RemoveAll(d)
	os.Exit(code)
}

// loadInventory is the example inventory with its DKIM keys in keyDir,
// created on first use (RSA keys are slow to make on a busy machine).
func loadInventory(t *testing.T) *inventory.Inventory {
	t.Helper()
	return loadAs(t, "../examples/inventory.yaml", "")
}

// loadAs is loadInventory for the inventory file, loaded as the tier node
// named node.
func loadAs(t *testing.T, file, node string) *inventory.Inventory {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	data = bytes.Replace(data, []byte("key_dir: /etc/mailnode/dkim"), []byte("key_dir: "+keyDir), 1)
	inv, err := inventory.ParseWith(data, "inventory.yaml", inventory.LoadOptions{Node: node})
	if err != nil {
		t.Fatal(err)
	}
	for _, d := range inv.LocalDomains() {
		for _, s := range d.DKIM {
			path := dkim.KeyPath(keyDir, d.Name, s.Selector)
			if _, err := os.Stat(path); err == nil {
				continue
			}
			k, err := dkim.Generate(s.Algorithm)
			if err == nil {
				err = dkim.WriteKey(path, k)
			}
			if err != nil && !os.IsExist(err) {
				t.Fatal(err)
			}
		}
	}
	return inv
}

// world is what the rest of the DNS says about the node besides the zones
// render-config writes: the parents that delegate the domains (their
// servers are this same test server), the reverse zones with the node's
// PTR records, and the relay domain's MX list with the node as backup.
const world = `
com.                        SOA a.nic.com. hostmaster.nic.com. 1 3600 900 1209600 300
com.                        NS  a.nic.com.
a.nic.com.                  A   127.0.0.1
net.                        SOA a.nic.com. hostmaster.nic.com. 1 3600 900 1209600 300
net.                        NS  a.nic.com.
org.                        SOA a.nic.com. hostmaster.nic.com. 1 3600 900 1209600 300
partner.org.                MX  10 mx.partner.org.
partner.org.                MX  20 mx1.example.com.
113.0.203.in-addr.arpa.     SOA ns.example.org. hostmaster.example.org. 1 3600 900 1209600 300
10.113.0.203.in-addr.arpa.  PTR mx1.example.com.
8.b.d.0.1.0.0.2.ip6.arpa.   SOA ns.example.org. hostmaster.example.org. 1 3600 900 1209600 300
0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa. PTR mx1.example.com.
`

// serve starts a test server with the zones render-config produced for
// inv plus world.
func serve(t *testing.T, inv *inventory.Inventory) *dnstest.Server {
	t.Helper()
	return serveWith(t, inv, world)
}

// serveWith is serve with another world around the zones.
func serveWith(t *testing.T, inv *inventory.Inventory, world string) *dnstest.Server {
	t.Helper()
	files, err := render.Render(inv)
	if err != nil {
		t.Fatal(err)
	}
	s := dnstest.Start(t, world)
	n := 0
	for name, b := range files {
		if strings.HasPrefix(name, "dns/") && strings.HasSuffix(name, ".zone") {
			if err := s.Add(string(b)); err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			n++
		}
	}
	if n != 2 {
		t.Fatalf("render-config wrote %d zone files, want 2 (example.com, example.net)", n)
	}
	return s
}

func check(t *testing.T, inv *inventory.Inventory, s *dnstest.Server) dns.Report {
	t.Helper()
	return checkWith(inv, s, startPolicyWeb(t, inv))
}

func dump(rep dns.Report) string {
	var b bytes.Buffer
	rep.WriteTable(&b)
	return b.String()
}

func TestCheckPassesOnRenderedZones(t *testing.T) {
	inv := loadInventory(t)
	s := serve(t, inv)
	rep := check(t, inv, s)
	if !rep.OK {
		t.Fatalf("dns check fails on the rendered zones:\n%s", dump(rep))
	}
	var names []string
	for _, r := range rep.Results {
		if r.Status != dns.StatusOK {
			t.Errorf("%s %s: %s (expected %q, found %q, %s)", r.Domain, r.Check, r.Status, r.Expected, r.Found, r.Detail)
		}
		names = append(names, r.Domain+" "+r.Check)
	}
	// Every check the issue names ran, for each local domain.
	for _, want := range []string{
		"mx1.example.com a", "mx1.example.com aaaa", "mx1.example.com ptr:203.0.113.10", "mx1.example.com ptr:2001:db8::10",
		"example.com ns", "example.com soa", "example.com mx", "example.com spf", "example.com dkim:mx2026r",
		"example.com dkim:mx2026e", "example.com dmarc", "example.com name:mail", "example.com name:imap/aaaa",
		"example.com name:pop3", "example.com name:smtp", "example.com srv:_imap._tcp", "example.com srv:_submission._tcp",
		"example.net ns", "example.net mx", "example.net spf", "example.net dmarc", "example.net name:imap",
		"partner.org mx-backup",
	} {
		if !slices.Contains(names, want) {
			t.Errorf("no check %q among %q", want, names)
		}
	}
	// The SPF check evaluated the policy, per address.
	for _, r := range rep.Results {
		if r.Check == "spf" && !strings.Contains(r.Found, "203.0.113.10 pass") {
			t.Errorf("spf found %q: not an evaluation", r.Found)
		}
	}
	if n := s.Queries.Load(); n == 0 {
		t.Errorf("no query reached the server")
	}
}

// TestCheckNamesEachFault breaks one thing at a time and wants exactly the
// checks that depend on it to fail, each saying how.
func TestCheckNamesEachFault(t *testing.T) {
	inv := loadInventory(t)
	other, err := dkim.Generate("ed25519")
	if err != nil {
		t.Fatal(err)
	}
	otherTXT, _ := dkim.TXTValue(other)
	for _, tc := range []struct {
		name    string
		break_  func(s *dnstest.Server) error
		fails   []string // "domain check"
		problem string   // Problem of the first failing check
		found   string   // substring of its Found or Detail
	}{
		{"missing MX", func(s *dnstest.Server) error { s.Remove("example.com.", mdns.TypeMX); return nil },
			// The policy's mx line then matches no MX: the same fault seen from MTA-STS.
			[]string{"example.com mx", "example.com mta-sts-policy"}, dns.ProblemNoData, "NODATA"},
		{"wrong A", func(s *dnstest.Server) error {
			return s.Replace("mx1.example.com.", "mx1.example.com. 3600 IN A 203.0.113.99")
		},
			// The PTR of .10 is no longer forward-confirmed: that is the same fault seen from the address.
			[]string{"mx1.example.com a", "mx1.example.com ptr:203.0.113.10"}, "", "203.0.113.99"},
		{"SPF without the node", func(s *dnstest.Server) error {
			return s.Replace("example.com.", `example.com. 3600 IN TXT "v=spf1 ip4:198.51.100.0/24 -all"`)
		},
			[]string{"example.com spf"}, "", "203.0.113.10 fail"},
		{"DKIM key mismatch", func(s *dnstest.Server) error {
			return s.Replace("mx2026e._domainkey.example.com.", "mx2026e._domainkey.example.com. 3600 IN TXT "+dns.QuoteTXT(otherTXT))
		},
			[]string{"example.com dkim:mx2026e"}, "", "not the key on disk"},
		{"DKIM record a verifier refuses (p= twice)", func(s *dnstest.Server) error {
			return s.Replace("mx2026e._domainkey.example.com.", "mx2026e._domainkey.example.com. 3600 IN TXT "+dns.QuoteTXT(otherTXT+"; p=x"))
		},
			[]string{"example.com dkim:mx2026e"}, "", "malformed"},
		{"no DMARC", func(s *dnstest.Server) error { s.Remove("_dmarc.example.com.", mdns.TypeTXT); return nil },
			[]string{"example.com dmarc"}, dns.ProblemNXDomain, "NXDOMAIN"},
		{"missing PTR", func(s *dnstest.Server) error {
			s.Remove("10.113.0.203.in-addr.arpa.", mdns.TypePTR)
			return nil
		},
			[]string{"mx1.example.com ptr:203.0.113.10"}, dns.ProblemNXDomain, "NXDOMAIN"},
		{"SERVFAIL", func(s *dnstest.Server) error {
			s.Fail("example.net.", mdns.TypeMX, mdns.RcodeServerFailure)
			return nil
		},
			[]string{"example.net mx"}, dns.ProblemServFail, "SERVFAIL"},
		{"timeout", func(s *dnstest.Server) error { s.Drop("mx2026r._domainkey.example.com.", mdns.TypeTXT); return nil },
			[]string{"example.com dkim:mx2026r"}, dns.ProblemTimeout, "timeout"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := serve(t, inv)
			if err := tc.break_(s); err != nil {
				t.Fatal(err)
			}
			rep := check(t, inv, s)
			if rep.OK {
				t.Fatalf("dns check passes:\n%s", dump(rep))
			}
			var failed []string
			for _, r := range rep.Failed() {
				failed = append(failed, r.Domain+" "+r.Check)
			}
			if !slices.Equal(failed, tc.fails) {
				t.Fatalf("failed checks %q, want %q:\n%s", failed, tc.fails, dump(rep))
			}
			first := rep.Failed()[0]
			if first.Problem != tc.problem {
				t.Errorf("%s: problem %q, want %q", first.Check, first.Problem, tc.problem)
			}
			if !strings.Contains(first.Found+" "+first.Detail, tc.found) {
				t.Errorf("%s: found %q / %q, want it to say %q", first.Check, first.Found, first.Detail, tc.found)
			}
			// The human table names the fault too.
			if tab := dump(rep); !strings.Contains(tab, first.Check) || !strings.Contains(tab, "fail") {
				t.Errorf("table does not show the failing check:\n%s", tab)
			}
		})
	}
}

// TestCheckNotDelegated: the parent's server has no delegation for the
// domain (it answers NXDOMAIN for it from its own zone): ns fails even
// though the resolver (here: a second server holding the child zone)
// still finds the zone.
func TestCheckNotDelegated(t *testing.T) {
	inv := loadInventory(t)
	s := serve(t, inv)
	parent := dnstest.Start(t, `com. SOA a.nic.com. hostmaster.nic.com. 1 3600 900 1209600 300
com. NS a.nic.com.`)
	w := startPolicyWeb(t, inv)
	c := &dns.Checker{Resolver: s.Addr, Timeout: 200 * time.Millisecond, AuthPort: parent.Port(), RootCAs: w.pool, Dial: w.dial}
	rep := c.Run(context.Background(), inv, []*inventory.Domain{inv.Domain("example.com")})
	var failed []string
	for _, r := range rep.Failed() {
		failed = append(failed, r.Domain+" "+r.Check)
	}
	if !slices.Equal(failed, []string{"example.com ns"}) {
		t.Fatalf("failed %q, want only example.com ns:\n%s", failed, dump(rep))
	}
	if f := rep.Failed()[0]; !strings.Contains(f.Found, "no delegation in com.") {
		t.Errorf("ns found %q", f.Found)
	}
}

func TestReportJSON(t *testing.T) {
	inv := loadInventory(t)
	s := serve(t, inv)
	s.Remove("_dmarc.example.net.", mdns.TypeTXT)
	rep := check(t, inv, s)
	var b bytes.Buffer
	if err := rep.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var back struct {
		OK      bool `json:"ok"`
		Results []struct {
			Domain, Check, Status, Problem string
			Required                       bool
		} `json:"results"`
	}
	if err := json.Unmarshal(b.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if back.OK {
		t.Errorf("JSON says ok with DMARC missing")
	}
	var hit bool
	for _, r := range back.Results {
		if r.Domain == "example.net" && r.Check == "dmarc" {
			hit = r.Status == "fail" && r.Problem == "NXDOMAIN" && r.Required
		}
	}
	if !hit {
		t.Errorf("JSON lacks the failing dmarc check:\n%s", b.String())
	}
}

// tierWorld is world for the two-node tier of render/testdata/tier.yaml:
// both nodes' PTR records, and both nodes as the relay domain's backup MX.
const tierWorld = `
com.                        SOA a.nic.com. hostmaster.nic.com. 1 3600 900 1209600 300
com.                        NS  a.nic.com.
a.nic.com.                  A   127.0.0.1
net.                        SOA a.nic.com. hostmaster.nic.com. 1 3600 900 1209600 300
net.                        NS  a.nic.com.
org.                        SOA a.nic.com. hostmaster.nic.com. 1 3600 900 1209600 300
partner.org.                MX  10 mx.partner.org.
partner.org.                MX  20 mx1.example.com.
partner.org.                MX  20 mx2.example.com.
113.0.203.in-addr.arpa.     SOA ns.example.org. hostmaster.example.org. 1 3600 900 1209600 300
10.113.0.203.in-addr.arpa.  PTR mx1.example.com.
11.113.0.203.in-addr.arpa.  PTR mx2.example.com.
8.b.d.0.1.0.0.2.ip6.arpa.   SOA ns.example.org. hostmaster.example.org. 1 3600 900 1209600 300
0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa. PTR mx1.example.com.
1.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa. PTR mx2.example.com.
`

// A tier's zones check out from either node, and the check covers every
// node: the MX set, each node's A/AAAA and forward-confirmed PTRs, SPF for
// every node's addresses, each node as the relay domain's backup MX.
func TestCheckTier(t *testing.T) {
	for _, node := range []string{"mx1.example.com", "mx2.example.com"} {
		t.Run(node, func(t *testing.T) {
			inv := loadAs(t, "../render/testdata/tier.yaml", node)
			s := serveWith(t, inv, tierWorld)
			rep := check(t, inv, s)
			var names []string
			for _, r := range rep.Results {
				if r.Status != dns.StatusOK {
					t.Errorf("%s %s: %s (expected %q, found %q, %s)", r.Domain, r.Check, r.Status, r.Expected, r.Found, r.Detail)
				}
				names = append(names, r.Domain+" "+r.Check)
			}
			for _, want := range []string{
				"mx1.example.com a", "mx1.example.com ptr:203.0.113.10", "mx1.example.com ptr:2001:db8::10",
				"mx2.example.com a", "mx2.example.com aaaa", "mx2.example.com ptr:203.0.113.11", "mx2.example.com ptr:2001:db8::11",
				"example.com mx", "example.com spf", "example.net srv:_imap._tcp",
			} {
				if !slices.Contains(names, want) {
					t.Errorf("no check %q among %q", want, names)
				}
			}
			if n := strings.Count(strings.Join(names, "\n"), "partner.org mx-backup"); n != 2 {
				t.Errorf("%d mx-backup checks of partner.org, want one per node", n)
			}
			for _, r := range rep.Results {
				if r.Check == "spf" && !strings.Contains(r.Found, "203.0.113.10 pass") || r.Check == "spf" && !strings.Contains(r.Found, "2001:db8::11 pass") {
					t.Errorf("spf found %q: not every node's addresses", r.Found)
				}
				if r.Domain == "example.com" && r.Check == "mx" && r.Expected != "10 mx1.example.com., 10 mx2.example.com." {
					t.Errorf("mx expected %q", r.Expected)
				}
			}
		})
	}
}

// Faults of a tier: each names the node it concerns.
func TestCheckTierFaults(t *testing.T) {
	inv := loadAs(t, "../render/testdata/tier.yaml", "mx1.example.com")
	for _, tc := range []struct {
		name   string
		break_ func(s *dnstest.Server) error
		fails  []string
		status dns.Status // of example.com mx
		detail string     // in the first failing check's (or mx's) Found or Detail
	}{
		{"second node missing from the MX set", func(s *dnstest.Server) error {
			return s.Replace("example.com.", "example.com. 3600 IN MX 10 mx1.example.com.")
		}, []string{"example.com mx", "example.com mta-sts-policy"}, dns.StatusFail, "no MX points at mx2.example.com."},
		{"a host outside the tier among the MX", func(s *dnstest.Server) error {
			return s.Replace("example.com.", "example.com. 3600 IN MX 10 mx1.example.com.", "example.com. 3600 IN MX 10 mx2.example.com.",
				"example.com. 3600 IN MX 10 mx9.example.org.")
		}, []string{"example.com mx", "example.com mta-sts-policy"}, dns.StatusFail, "not a node of the tier, at the lowest preference: mx9.example.org."},
		{"unequal preferences", func(s *dnstest.Server) error {
			return s.Replace("example.com.", "example.com. 3600 IN MX 10 mx1.example.com.", "example.com. 3600 IN MX 20 mx2.example.com.")
		}, nil, dns.StatusWarn, "not at the tier's preference (no round robin): 20 mx2.example.com."},
		{"PTR of the second node names the first", func(s *dnstest.Server) error {
			return s.Replace("11.113.0.203.in-addr.arpa.", "11.113.0.203.in-addr.arpa. 3600 IN PTR mx1.example.com.")
		}, []string{"mx2.example.com ptr:203.0.113.11"}, dns.StatusOK, "does not name the node's hostname"},
		{"second node's AAAA gone", func(s *dnstest.Server) error {
			s.Remove("mx2.example.com.", mdns.TypeAAAA)
			return nil
		}, []string{"mx2.example.com aaaa", "mx2.example.com ptr:2001:db8::11"}, dns.StatusOK, "NODATA"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := serveWith(t, inv, tierWorld)
			if err := tc.break_(s); err != nil {
				t.Fatal(err)
			}
			rep := check(t, inv, s)
			var failed []string
			for _, r := range rep.Failed() {
				failed = append(failed, r.Domain+" "+r.Check)
			}
			if !slices.Equal(failed, tc.fails) {
				t.Fatalf("failed checks %q, want %q:\n%s", failed, tc.fails, dump(rep))
			}
			if rep.OK != (len(tc.fails) == 0) {
				t.Errorf("report ok %v with failures %q", rep.OK, failed)
			}
			var mx, about dns.Result
			for _, r := range rep.Results {
				if r.Domain == "example.com" && r.Check == "mx" {
					mx = r
				}
			}
			about = mx
			if len(tc.fails) > 0 {
				about = rep.Failed()[0]
			}
			if mx.Status != tc.status {
				t.Errorf("example.com mx: %s, want %s (%s)", mx.Status, tc.status, mx.Detail)
			}
			if !strings.Contains(about.Found+" "+about.Detail, tc.detail) {
				t.Errorf("%s %s: found %q / %q, want it to say %q", about.Domain, about.Check, about.Found, about.Detail, tc.detail)
			}
		})
	}
}
