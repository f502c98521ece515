package test

import (
	"context"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"encoding/hex"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/mailnode/mailnode/internal/testpeer"
	"github.com/mailnode/mailnode/test/harness"
)

// The DANE test's loopback addresses: the peers' authoritative server and
// one SMTP peer per case, each on port 25 (the port DANE's TLSA names
// carry: _25._tcp).
const (
	daneAuthAddr  = "127.0.5.53"
	daneGoodAddr  = "127.0.5.11" // TLS, its key in the TLSA record
	daneBadAddr   = "127.0.5.12" // TLS, another key in the TLSA record
	daneClearAddr = "127.0.5.13" // no STARTTLS, a TLSA record
	danePlainAddr = "127.0.5.14" // TLS, an unsigned zone (no TLSA)
)

// TestDANEOutbound: postfix.outbound_tls: dane through the real programs.
// A zone peer.test is signed with dnssec-keygen/dnssec-signzone and served
// by an authoritative unbound (auth-zone); the node's unbound runs with
// the unbound.conf render-config wrote (validating, its root anchor the
// node's own auto-trust-anchor-file seeded from dns-root-data), with
// peer.test's DS as a further trust anchor in place of the root's chain,
// which the namespace cannot reach (TestResolverKeepsRootAnchor has a root). Postfix, as main.cf
// says, asks it through libc (/etc/resolv.conf: 127.0.0.1). Then:
//   - a peer whose certificate's key matches the TLSA record gets the mail
//     over TLS Postfix logs as verified;
//   - a peer whose key does not match gets nothing: the mail is deferred
//     (4xx) and stays in the queue;
//   - a peer with a TLSA record but without STARTTLS gets nothing, never a
//     message in clear: deferred, kept;
//   - a peer in an unsigned zone (no secure TLSA) gets the mail with
//     opportunistic TLS, as outbound_tls: may would.
func TestDANEOutbound(t *testing.T) {
	if testing.Short() || os.Getenv(harness.EnvNetns) == "" {
		t.Skip("needs the test namespace (binds port 25 and 53 on loopback, runs unbound)")
	}
	for _, p := range []struct{ prog, pkg string }{{"unbound", "unbound"}, {"unbound-checkconf", "unbound"}, {"dnssec-keygen", "bind9-utils"}, {"dnssec-signzone", "bind9-utils"}} {
		if _, err := exec.LookPath(p.prog); err != nil {
			testpeer.Missing(t, "%s is not installed: apt-get install %s", p.prog, p.pkg)
		}
	}
	// The rendered unbound.conf reads Debian's root hints, and the harness
	// seeds the node's root trust anchor from Debian's root key.
	if _, err := os.Stat("/usr/share/dns/root.key"); err != nil {
		testpeer.Missing(t, "/usr/share/dns/root.key is missing: apt-get install dns-root-data")
	}
	dir := t.TempDir()

	// The peers' keys: the good and the clear peer's TLSA name the good
	// key; the bad peer's names a key it does not hold.
	goodTLS, goodSPKI := daneCert(t, dir, "good", "mx-good.peer.test")
	badTLS, _ := daneCert(t, dir, "bad", "mx-bad.peer.test")
	_, otherSPKI := daneCert(t, dir, "other", "mx-bad.peer.test")
	plainTLS, _ := daneCert(t, dir, "plain", "mx.plain.test")

	signed, ds := daneSignZone(t, dir, "peer.test", fmt.Sprintf(`$TTL 300
peer.test. IN SOA ns.peer.test. hostmaster.peer.test. 1 3600 900 1209600 300
peer.test. IN NS ns.peer.test.
ns.peer.test. IN A %[1]s
good.peer.test. IN MX 10 mx-good.peer.test.
mx-good.peer.test. IN A %[2]s
_25._tcp.mx-good.peer.test. IN TLSA 3 1 1 %[5]s
bad.peer.test. IN MX 10 mx-bad.peer.test.
mx-bad.peer.test. IN A %[3]s
_25._tcp.mx-bad.peer.test. IN TLSA 3 1 1 %[6]s
clear.peer.test. IN MX 10 mx-clear.peer.test.
mx-clear.peer.test. IN A %[4]s
_25._tcp.mx-clear.peer.test. IN TLSA 3 1 1 %[5]s
`, daneAuthAddr, daneGoodAddr, daneBadAddr, daneClearAddr, goodSPKI, otherSPKI))
	plainZone := filepath.Join(dir, "plain.test.zone")
	os.WriteFile(plainZone, []byte(fmt.Sprintf(`$TTL 300
plain.test. IN SOA ns.plain.test. hostmaster.plain.test. 1 3600 900 1209600 300
plain.test. IN NS ns.plain.test.
ns.plain.test. IN A %s
plain.test. IN MX 10 mx.plain.test.
mx.plain.test. IN A %s
`, daneAuthAddr, danePlainAddr)), 0o644)

	// The peers' authoritative server: a second unbound serving both zones
	// from its auth-zone, with RRSIGs, DNSKEY and NSEC as signed.
	authConf := writeAuthUnbound(dir, daneAuthAddr, []string{`local-zone: "test." nodefault`},
		authZone{"peer.test.", signed}, authZone{"plain.test.", plainZone})
	daneUnbound(t, "peers' authoritative unbound", authConf, net.JoinHostPort(daneAuthAddr, "53"), "good.peer.test.", false)

	// The node, sending with DANE through its own resolver on 127.0.0.1:53.
	n := harness.StartNode(t, harness.Options{Edit: func(doc map[string]any) {
		harness.Set(doc, "postfix.outbound_tls", "dane")
		harness.Set(doc, "node.resolver", "127.0.0.1:53")
	}})
	mainCF, err := os.ReadFile(filepath.Join(n.PostfixConfig, "main.cf"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"\nsmtp_tls_security_level = dane\n", "\nsmtp_dns_support_level = dnssec\n"} {
		if !strings.Contains(string(mainCF), want) {
			t.Fatalf("rendered main.cf lacks %q", strings.TrimSpace(want))
		}
	}

	// The node's unbound: the rendered unbound.conf, and a test-only
	// wrapper for what the namespace changes (no privilege drop, files in
	// dir, the peers' zones stubbed to their server on loopback, "test."
	// not answered locally, peer.test's DS as its trust anchor, plain.test
	// declared unsigned since no chain from the root reaches it here).
	ubDir := filepath.Join(dir, "node-unbound")
	w := nodeUnboundConf(ubDir, filepath.Join(n.Dir, "unbound", "unbound.conf"))
	w.WriteString("    local-zone: \"test.\" nodefault\n")
	fmt.Fprintf(w, "    trust-anchor: %q\n    domain-insecure: \"plain.test.\"\n", ds)
	for _, z := range []string{"peer.test.", "plain.test."} {
		fmt.Fprintf(w, "stub-zone:\n    name: %q\n    stub-addr: %s@53\n", z, daneAuthAddr)
	}
	nodeConf := writeNodeUnbound(ubDir, w)
	daneUnbound(t, "node's unbound", nodeConf, "127.0.0.1:53", "good.peer.test.", true)

	// The peers.
	sink := func(addr string, cfg *tls.Config) *harness.Sink {
		s, err := harness.StartSinkWith(net.JoinHostPort(addr, "25"), "", harness.SinkOptions{TLS: cfg})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { s.Close() })
		return s
	}
	good, bad, clear, plain := sink(daneGoodAddr, goodTLS), sink(daneBadAddr, badTLS), sink(daneClearAddr, nil), sink(danePlainAddr, plainTLS)

	for _, rcpt := range []string{"x@good.peer.test", "x@bad.peer.test", "x@clear.peer.test", "x@plain.test"} {
		tr := send(t, n.SMTP, harness.Envelope{LocalAddr: harness.TrustedClient, From: "alice@example.com", To: []string{rcpt},
			Data: harness.NewMessage("alice@example.com", rcpt, "dane "+rcpt, "to "+rcpt)})
		wantFinal(t, tr)
	}

	t.Run("matching TLSA: verified TLS", func(t *testing.T) {
		m, err := good.Wait(1, harness.DeliveryTimeout)
		if err != nil {
			t.Fatalf("%v\n%s", err, n.MailLog())
		}
		if len(m[0].To) != 1 || m[0].To[0] != "x@good.peer.test" || !m[0].TLS {
			t.Errorf("good peer got %v (TLS %v)", m[0].To, m[0].TLS)
		}
		n.WaitLog(t, "Verified TLS connection established to mx-good.peer.test["+daneGoodAddr+"]:25")
		n.WaitLog(t, "to=<x@good.peer.test>, relay=mx-good.peer.test["+daneGoodAddr+"]:25")
	})

	t.Run("unsigned zone: opportunistic TLS", func(t *testing.T) {
		m, err := plain.Wait(1, harness.DeliveryTimeout)
		if err != nil {
			t.Fatalf("%v\n%s", err, n.MailLog())
		}
		if len(m[0].To) != 1 || m[0].To[0] != "x@plain.test" || !m[0].TLS {
			t.Errorf("plain peer got %v (TLS %v)", m[0].To, m[0].TLS)
		}
		n.WaitLog(t, "Untrusted TLS connection established to mx.plain.test["+danePlainAddr+"]:25")
	})

	deferred := daneWaitDeferred(t, n, "x@bad.peer.test", "x@clear.peer.test")
	for _, c := range []struct {
		name, rcpt, reason string
		peer               *harness.Sink
		got                string // what the peer must not have had
	}{
		{"mismatching TLSA: deferred, kept", "x@bad.peer.test", "Server certificate not verified",
			bad, "the peer whose key does not match got %d message(s)"},
		{"TLSA but no STARTTLS: deferred, never in clear", "x@clear.peer.test", "TLS is required, but was not offered",
			clear, "the peer without STARTTLS got %d message(s) in clear"},
	} {
		t.Run(c.name, func(t *testing.T) {
			reason := deferred[c.rcpt]
			if !strings.Contains(reason, c.reason) {
				t.Errorf("delay reason %q", reason)
			}
			if m := c.peer.Messages(); len(m) != 0 {
				t.Errorf(c.got, len(m))
			}
			daneNeverSent(t, n, c.rcpt)
		})
	}

	// Another attempt (a queue flush) changes nothing: deferred again, kept.
	before := daneDeferrals(n, "x@bad.peer.test") + daneDeferrals(n, "x@clear.peer.test")
	if err := n.FlushQueue(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(harness.DeliveryTimeout)
	for daneDeferrals(n, "x@bad.peer.test")+daneDeferrals(n, "x@clear.peer.test") < before+2 {
		if time.Now().After(deadline) {
			t.Fatalf("no new attempt after postqueue -f")
		}
		time.Sleep(200 * time.Millisecond)
	}
	again := daneWaitDeferred(t, n, "x@bad.peer.test", "x@clear.peer.test")
	if len(again) != 2 || len(bad.Messages())+len(clear.Messages()) != 0 {
		t.Errorf("after a flush: deferred %v, bad peer %d, clear peer %d messages", again, len(bad.Messages()), len(clear.Messages()))
	}
	daneNeverSent(t, n, "x@bad.peer.test")
	daneNeverSent(t, n, "x@clear.peer.test")
}

// daneDeferrals counts the mail log's deferrals of rcpt.
func daneDeferrals(n *harness.Node, rcpt string) int {
	c := 0
	for _, l := range strings.Split(n.MailLog(), "\n") {
		if strings.Contains(l, "to=<"+rcpt+">") && strings.Contains(l, "status=deferred") {
			c++
		}
	}
	return c
}

// daneNeverSent fails when the mail log has a delivery to rcpt that was
// not a deferral.
func daneNeverSent(t *testing.T, n *harness.Node, rcpt string) {
	t.Helper()
	seen := false
	for _, l := range strings.Split(n.MailLog(), "\n") {
		if !strings.Contains(l, "to=<"+rcpt+">") {
			continue
		}
		seen = true
		if !strings.Contains(l, "status=deferred") {
			t.Errorf("a delivery attempt to %s that was not deferred: %s", rcpt, l)
		}
	}
	if !seen {
		t.Errorf("no delivery attempt to %s in the mail log", rcpt)
	}
}

// daneCert writes a self-signed certificate and key for host and returns
// the TLS configuration presenting it and the hex SHA-256 of its
// SubjectPublicKeyInfo (the data of a TLSA 3 1 1 record).
func daneCert(t *testing.T, dir, name, host string) (*tls.Config, string) {
	t.Helper()
	certFile, keyFile := filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if err := harness.WriteSelfSigned(certFile, keyFile, host); err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := x509.ParseCertificate(pair.Certificate[0])
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(leaf.RawSubjectPublicKeyInfo)
	return &tls.Config{Certificates: []tls.Certificate{pair}}, hex.EncodeToString(sum[:])
}

// daneSignZone signs zone (master file text) with a fresh ECDSA key
// (dnssec-keygen, one key signing everything) through dnssec-signzone,
// and returns the signed file and the zone's DS record on one line.
func daneSignZone(t *testing.T, dir, origin, zone string) (signedFile, ds string) {
	t.Helper()
	kdir := filepath.Join(dir, "keys")
	os.MkdirAll(kdir, 0o700)
	in := filepath.Join(dir, origin+".zone")
	signedFile = in + ".signed"
	os.WriteFile(in, []byte(zone), 0o644)
	for _, args := range [][]string{
		{"dnssec-keygen", "-q", "-K", kdir, "-a", "ECDSAP256SHA256", "-f", "KSK", "-n", "ZONE", origin},
		{"dnssec-signzone", "-q", "-K", kdir, "-S", "-z", "-d", dir, "-o", origin, "-f", signedFile, in},
	} {
		if o, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%s: %v\n%s", strings.Join(args, " "), err, o)
		}
	}
	b, err := os.ReadFile(filepath.Join(dir, "dsset-"+origin+"."))
	if err != nil {
		t.Fatal(err)
	}
	ds = strings.Join(strings.Fields(strings.TrimSpace(string(b))), " ")
	if !strings.Contains(ds, " DS ") {
		t.Fatalf("dnssec-signzone's dsset: %q", b)
	}
	return signedFile, ds
}

// daneUnbound checks and starts unbound with conf, stopped when the test
// ends, and waits until it answers name's MX at addr (validated, AD set,
// when validating).
func daneUnbound(t *testing.T, what, conf, addr, name string, validating bool) {
	t.Helper()
	if o, err := exec.Command("unbound-checkconf", conf).CombinedOutput(); err != nil {
		t.Fatalf("%s: unbound-checkconf: %v\n%s", what, err, o)
	}
	p := &harness.Proc{Name: what, LogFile: conf + ".out", Args: []string{"unbound", "-d", "-c", conf},
		Ready: func() error {
			m := new(mdns.Msg)
			m.SetQuestion(name, mdns.TypeMX)
			m.SetEdns0(1232, true)
			c := mdns.Client{Timeout: time.Second}
			r, _, err := c.ExchangeContext(context.Background(), m, addr)
			if err != nil {
				return err
			}
			if r.Rcode != mdns.RcodeSuccess || len(r.Answer) == 0 || validating && !r.AuthenticatedData {
				return fmt.Errorf("%s: %s, %d answers, AD %v", what, mdns.RcodeToString[r.Rcode], len(r.Answer), r.AuthenticatedData)
			}
			return nil
		}}
	if err := p.Start(30 * time.Second); err != nil {
		b, _ := os.ReadFile(conf + ".out")
		t.Fatalf("%s: %v\n%s", what, err, b)
	}
	t.Cleanup(p.Stop)
}

// daneWaitDeferred waits until every recipient in rcpts sits in the
// deferred queue (postqueue -j) after a delivery attempt, and returns
// each one's delay reason.
func daneWaitDeferred(t *testing.T, n *harness.Node, rcpts ...string) map[string]string {
	t.Helper()
	deadline := time.Now().Add(harness.DeliveryTimeout)
	for {
		rs, out, err := n.QueueJSON()
		if err != nil {
			t.Fatal(err)
		}
		got := map[string]string{}
		for _, r := range rs {
			if r.Queue == "deferred" && r.DelayReason != "" {
				got[r.Address] = r.DelayReason
			}
		}
		all := true
		for _, r := range rcpts {
			if _, ok := got[r]; !ok {
				all = false
			}
		}
		if all {
			return got
		}
		if time.Now().After(deadline) {
			t.Fatalf("not all of %v deferred in the queue: %v\npostqueue -j:\n%s\nmail log:\n%s", rcpts, got, out, n.MailLog())
		}
		time.Sleep(200 * time.Millisecond)
	}
}
