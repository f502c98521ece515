package test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/mailnode/mailnode/dns/dnstest"
	"github.com/mailnode/mailnode/test/harness"
)

// The node's own resolver path end to end: the real unbound runs with the
// unbound.conf render-config wrote (node.resolver on a free loopback port),
// and `mailnode dns check` asks it. The test's authoritative server holds
// the zones render-config wrote plus the parents and the reverse zones; it
// listens on 127.0.0.53:53 inside the test's namespace, so it is also the
// parent's name server the delegation check asks directly on port 53.
//
// The production config is not changed for the test: a wrapper config
// includes it and adds what only a test needs (no privilege drop, its own
// pid and log files, forward-zones to the test server, which is on
// loopback, and domain-insecure for the unsigned test zones).

const authAddr = "127.0.0.53"

// dnsE2EWorld: the parents delegate from a.nic.test (= authAddr), the
// reverse zones name the node.
var dnsE2EWorld = strings.ReplaceAll(`
com.        SOA a.nic.com. hostmaster.nic.com. 1 3600 900 1209600 300
com.        NS  a.nic.com.
a.nic.com.  A   AUTH
net.        SOA a.nic.com. hostmaster.nic.com. 1 3600 900 1209600 300
net.        NS  a.nic.com.
org.        SOA a.nic.com. hostmaster.nic.com. 1 3600 900 1209600 300
org.        NS  a.nic.com.
partner.org. MX 10 mx.partner.org.
partner.org. MX 20 mx1.example.com.
in-addr.arpa.               SOA a.nic.com. hostmaster.nic.com. 1 3600 900 1209600 300
10.113.0.203.in-addr.arpa.  PTR mx1.example.com.
ip6.arpa.                   SOA a.nic.com. hostmaster.nic.com. 1 3600 900 1209600 300
0.1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.ip6.arpa. PTR mx1.example.com.
validated.example.   SOA a.nic.com. hostmaster.nic.com. 1 3600 900 1209600 300
www.validated.example. A 192.0.2.80
`, "AUTH", authAddr)

// testZones are forwarded to the test server and taken as unsigned.
var testZones = []string{"com.", "net.", "org.", "in-addr.arpa.", "ip6.arpa."}

func TestDNSCheckThroughRenderedUnbound(t *testing.T) {
	if testing.Short() || os.Getenv(harness.EnvNetns) == "" {
		t.Skip("needs the test namespace (binds port 53, runs unbound)")
	}
	if _, err := exec.LookPath("unbound"); err != nil {
		t.Fatal("unbound is not installed: apt-get install unbound")
	}
	bin, err := harness.Binary()
	if err != nil {
		t.Fatal(err)
	}
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	port, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	resolver := fmt.Sprintf("127.0.0.1:%d", port)

	// The example inventory with keys in dir and node.resolver on the free port.
	b, err := os.ReadFile(filepath.Join(root, "examples", "inventory.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	inv := strings.Replace(string(b), "key_dir: /etc/mailnode/dkim", "key_dir: "+filepath.Join(dir, "dkim"), 1)
	inv = strings.Replace(inv, "resolver: 127.0.0.1:53 ", "resolver: "+resolver+" ", 1)
	if !strings.Contains(inv, "resolver: "+resolver) {
		t.Fatal("could not set node.resolver")
	}
	// The root trust anchor unbound keeps, this test's own, seeded as
	// Debian seeds /var/lib/unbound/root.key.
	anchor := filepath.Join(dir, "unbound-anchor", "root.key")
	if err := harness.SeedTrustAnchor(anchor); err != nil {
		t.Fatal(err)
	}
	inv = strings.Replace(inv, "resolver: "+resolver+" ", "resolver_anchor_file: "+anchor+"\n  resolver: "+resolver+" ", 1)
	invPath := filepath.Join(dir, "inventory.yaml")
	os.WriteFile(invPath, []byte(inv), 0o644)
	run := func(args ...string) (string, int) {
		cmd := exec.Command(bin, args...)
		out, err := cmd.CombinedOutput()
		code := 0
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("%s: %v", strings.Join(args, " "), err)
		}
		return string(out), code
	}
	out := filepath.Join(dir, "out")
	for _, args := range [][]string{{"dkim", "keygen", "--inventory", invPath}, {"render-config", "--inventory", invPath, "--out", out}} {
		if o, code := run(args...); code != 0 {
			t.Fatalf("mailnode %s: exit %d\n%s", args[0], code, o)
		}
	}

	// The authoritative side: rendered zones plus the world.
	auth, err := dnstest.New(net.JoinHostPort(authAddr, "53"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(auth.Close)
	if err := auth.Add(dnsE2EWorld); err != nil {
		t.Fatal(err)
	}
	zones, _ := filepath.Glob(filepath.Join(out, "dns", "*.zone"))
	if len(zones) != 2 {
		t.Fatalf("render-config wrote %d zones: %q", len(zones), zones)
	}
	for _, z := range zones {
		b, _ := os.ReadFile(z)
		if err := auth.Add(string(b)); err != nil {
			t.Fatalf("%s: %v", z, err)
		}
	}

	// The test-only wrapper around the rendered config.
	var w strings.Builder
	fmt.Fprintf(&w, "include: %q\nserver:\n", filepath.Join(out, "unbound", "unbound.conf"))
	fmt.Fprintf(&w, "    username: \"\"\n    chroot: \"\"\n    directory: %q\n    pidfile: %q\n", dir, filepath.Join(dir, "unbound.pid"))
	fmt.Fprintf(&w, "    use-syslog: no\n    logfile: %q\n    verbosity: 1\n", filepath.Join(dir, "unbound.log"))
	w.WriteString("    do-not-query-localhost: no\n")
	// The example node uses documentation addresses (RFC 5737, RFC 3849),
	// whose reverse zones unbound answers itself by default (RFC 6303).
	w.WriteString("    local-zone: \"113.0.203.in-addr.arpa.\" nodefault\n    local-zone: \"8.b.d.0.1.0.0.2.ip6.arpa.\" nodefault\n")
	for _, z := range testZones {
		fmt.Fprintf(&w, "    domain-insecure: %q\n", z)
	}
	// validated.example is forwarded too but not declared insecure: the
	// validator must refuse it (no chain of trust can be built without
	// the root), which shows validation is on.
	for _, z := range append(testZones, "validated.example.") {
		fmt.Fprintf(&w, "forward-zone:\n    name: %q\n    forward-addr: %s@53\n", z, authAddr)
	}
	wrapper := filepath.Join(dir, "unbound-test.conf")
	os.WriteFile(wrapper, []byte(w.String()), 0o644)
	if o, err := exec.Command("unbound-checkconf", wrapper).CombinedOutput(); err != nil {
		t.Fatalf("unbound-checkconf: %v\n%s", err, o)
	}
	// The rendered config itself: loopback only.
	if o, _ := exec.Command("unbound-checkconf", "-o", "interface", wrapper).Output(); strings.TrimSpace(string(o)) != "127.0.0.1" {
		t.Errorf("unbound listens on %q, want 127.0.0.1 only", o)
	}
	// Its root anchor is node.resolver_anchor_file, kept by unbound.
	if o, _ := exec.Command("unbound-checkconf", "-o", "auto-trust-anchor-file", wrapper).Output(); strings.TrimSpace(string(o)) != anchor {
		t.Errorf("unbound's auto-trust-anchor-file is %q, want %s", o, anchor)
	}

	ub := exec.Command("unbound", "-d", "-c", wrapper)
	ub.Stdout, ub.Stderr = os.Stderr, os.Stderr
	if err := ub.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		ub.Process.Kill()
		ub.Wait()
		if t.Failed() {
			b, _ := os.ReadFile(filepath.Join(dir, "unbound.log"))
			t.Logf("unbound.log:\n%s", b)
		}
	})
	ask := func(name string, qtype uint16) (*mdns.Msg, error) {
		m := new(mdns.Msg)
		m.SetQuestion(name, qtype)
		c := mdns.Client{Timeout: 2 * time.Second}
		r, _, err := c.ExchangeContext(context.Background(), m, resolver)
		return r, err
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		r, err := ask("example.com.", mdns.TypeSOA)
		if err == nil && r.Rcode == mdns.RcodeSuccess && len(r.Answer) > 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("unbound at %s does not answer: %v %v", resolver, r, err)
		}
		time.Sleep(100 * time.Millisecond)
	}

	// example.com's MTA-STS policy, served on the node's addresses as the
	// admin's web server would.
	servePolicies(t, out, "203.0.113.10", "2001:db8::10")

	// dns check through node.resolver, i.e. through unbound.
	before := auth.Queries.Load()
	o, code := run("dns", "check", "--inventory", invPath, "--json")
	if code != 0 {
		t.Fatalf("dns check through unbound: exit %d\n%s", code, o)
	}
	var rep struct {
		OK       bool
		Resolver string
		Results  []struct{ Domain, Check, Status, Found, Detail string }
	}
	if err := json.Unmarshal([]byte(o), &rep); err != nil {
		t.Fatalf("%v\n%s", err, o)
	}
	if !rep.OK || rep.Resolver != resolver || len(rep.Results) < 40 {
		t.Fatalf("report: ok=%v resolver=%s, %d results\n%s", rep.OK, rep.Resolver, len(rep.Results), o)
	}
	for _, r := range rep.Results {
		if r.Status != "ok" {
			t.Errorf("%s %s: %s (found %q; %s)", r.Domain, r.Check, r.Status, r.Found, r.Detail)
		}
	}
	for _, c := range []string{"mta-sts", "name:mta-sts", "mta-sts-policy", "tlsrpt"} {
		if !slices.ContainsFunc(rep.Results, func(r struct{ Domain, Check, Status, Found, Detail string }) bool {
			return r.Domain == "example.com" && r.Check == c
		}) {
			t.Errorf("no example.com %s check", c)
		}
	}
	if auth.Queries.Load() == before {
		t.Errorf("the check did not reach the authoritative server")
	}

	// DNSSEC validation is on: the zone forwarded without domain-insecure
	// has the same kind of data, but the validator gives SERVFAIL.
	r, err := ask("www.validated.example.", mdns.TypeA)
	if err != nil || r.Rcode != mdns.RcodeServerFailure {
		t.Errorf("an unvalidatable answer came through unbound: %v %v", r, err)
	}
	direct := new(mdns.Msg)
	direct.SetQuestion("www.validated.example.", mdns.TypeA)
	if r, err := mdns.Exchange(direct, net.JoinHostPort(authAddr, "53")); err != nil || len(r.Answer) != 1 {
		t.Errorf("the test server itself does not answer www.validated.example: %v %v", r, err)
	}
}
