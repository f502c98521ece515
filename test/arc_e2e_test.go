package test

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailnode/mailnode/arc"
	"github.com/mailnode/mailnode/dkim"
	"github.com/mailnode/mailnode/internal/testpeer"
	"github.com/mailnode/mailnode/resolver"
	"github.com/mailnode/mailnode/spam/spamtest"
	"github.com/mailnode/mailnode/test/harness"
)

// ARC sealing of forwarded mail (forwarding.arc) through a real Postfix:
// mail from outside (DKIM-signed by sender.test, SPF passing) to the alias
// sales@example.com, which forwards to carol@partner.org (a relay domain,
// next hop the harness's sink) and delivers to alice. The test's DNS
// server publishes sender.test's key, the key of a list (list.test) that
// seals before the node, and the node's own keys; node.resolver points at
// it. The copy caught at the next hop is checked by python3-dkim's
// arc_verify, which asks the same DNS server.

// arcZone: sender.test's SPF (the loopback clients) and DMARC policy.
const arcZone = `
sender.test.          IN TXT "v=spf1 ip4:127.0.0.0/8 -all"
_dmarc.sender.test.   IN TXT "v=DMARC1; p=reject"
`

// arcPeer is an outside signer: a domain, a selector and its RSA key.
type arcPeer struct {
	key dkim.Key
	pem string // PKCS#1 PEM file, for python3-dkim
}

func newARCPeer(t *testing.T, d *spamtest.DNS, domain string) arcPeer {
	t.Helper()
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	k, err := dkim.NewKey(domain, "s1", "rsa", rk)
	if err != nil {
		t.Fatal(err)
	}
	txt, _ := dkim.TXTValue(rk)
	publishTXT(t, d, "s1._domainkey."+domain, txt)
	p := filepath.Join(t.TempDir(), domain+".pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rk)}), 0o600); err != nil {
		t.Fatal(err)
	}
	return arcPeer{key: k, pem: p}
}

// publishTXT adds a TXT record, split in strings of 255 bytes at most.
func publishTXT(t *testing.T, d *spamtest.DNS, name, value string) {
	t.Helper()
	var parts []string
	for len(value) > 0 {
		n := min(255, len(value))
		parts = append(parts, `"`+value[:n]+`"`)
		value = value[n:]
	}
	if err := d.Add(name + ". IN TXT " + strings.Join(parts, " ") + "\n"); err != nil {
		t.Fatal(err)
	}
}

// publishNodeKeys publishes the DKIM records render-config wrote for the
// node's domains (zoneKeys: a file of "NAME VALUE" lines).
func publishNodeKeys(t *testing.T, d *spamtest.DNS, n *harness.Node) {
	t.Helper()
	keys, err := os.ReadFile(zoneKeys(t, n))
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(strings.TrimSpace(string(keys)), "\n") {
		name, value, _ := strings.Cut(line, " ")
		publishTXT(t, d, name, value)
	}
}

// arcNode starts a node with forwarding.arc arcOn; settings are further
// inventory fields (path: value).
func arcNode(t *testing.T, d *spamtest.DNS, arcOn bool, settings ...any) *harness.Node {
	t.Helper()
	n := harness.StartNode(t, harness.Options{Policy: true, Milter: true, DKIMKeys: true, Edit: func(doc map[string]any) {
		harness.Set(doc, "policy.greylist.enabled", false) // policyd's business, tested there
		harness.Set(doc, "node.resolver", d.Addr)
		harness.Set(doc, "forwarding.arc", arcOn)
		for i := 0; i+1 < len(settings); i += 2 {
			harness.Set(doc, settings[i].(string), settings[i+1])
		}
	}})
	publishNodeKeys(t, d, n)
	return n
}

// signedInbound is a message from x@sender.test, DKIM-signed by it, with
// extra header fields (e.g. a list's Authentication-Results) below.
func signedInbound(t *testing.T, from arcPeer, to, subject string, extra ...string) ([]byte, string) {
	t.Helper()
	msg, id := dkimTestMessage("Sender <x@sender.test>", to, subject, "Please send the quote.\r\n\r\nRegards  \r\n")
	hs, body := arc.SplitMessage(msg)
	bh := dkim.NewBodyHasher()
	bh.Write(body)
	sig, err := dkim.Sign(from.key, hs, bh.Sum(), time.Now())
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	b.WriteString("DKIM-Signature:" + sig + "\r\n")
	for _, e := range extra {
		b.WriteString(e + "\r\n")
	}
	b.Write(msg)
	return b.Bytes(), id
}

// pyARC runs arc/testdata/pyarc.py with the test's DNS server.
func pyARC(t *testing.T, d *spamtest.DNS, msg []byte, args ...string) (string, bool) {
	t.Helper()
	if err := exec.Command("/usr/bin/python3", "-c", "import dkim, authres, dns.resolver").Run(); err != nil {
		testpeer.Missing(t, "python3-dkim / python3-authres / python3-dnspython not installed (apt-get install python3-dkim python3-authres)")
	}
	args = append([]string{"../arc/testdata/pyarc.py", args[0], "dns:" + d.Addr}, args[1:]...)
	cmd := exec.Command("/usr/bin/python3", args...)
	cmd.Stdin = bytes.NewReader(msg)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	return out.String() + errb.String(), err == nil
}

// arcFields returns the ARC fields of a message, top first, as "Name: i=N".
func arcFields(raw []byte) []string {
	hs, _ := arc.SplitMessage(raw)
	var out []string
	for _, h := range hs {
		switch strings.ToLower(h.Name) {
		case "arc-seal", "arc-message-signature", "arc-authentication-results":
			v := strings.TrimSpace(h.Value)
			i, _, _ := strings.Cut(v, ";")
			out = append(out, h.Name+": "+i)
		}
	}
	return out
}

func fieldValue(raw []byte, name string) string {
	hs, _ := arc.SplitMessage(raw)
	for _, h := range hs {
		if strings.EqualFold(h.Name, name) {
			return h.Value
		}
	}
	return ""
}

func TestARCSealEndToEnd(t *testing.T) {
	d := spamtest.StartDNS(t, arcZone)
	sender := newARCPeer(t, d, "sender.test")
	list := newARCPeer(t, d, "list.test")
	n := arcNode(t, d, true)
	const alias = "sales@example.com"
	env := func(msg []byte, to string) harness.Envelope {
		return harness.Envelope{Helo: "mx.sender.test", From: "x@sender.test", To: []string{to}, Data: msg}
	}

	t.Run("i=1: mail forwarded by an alias", func(t *testing.T) {
		msg, id := signedInbound(t, sender, alias, "quote request")
		wantFinal(t, send(t, n.SMTP, env(msg, alias)))
		m := waitSinkID(t, n, id, harness.DeliveryTimeout)
		if got := strings.Join(arcFields(m.Data), " | "); got != "ARC-Seal: i=1 | ARC-Message-Signature: i=1 | ARC-Authentication-Results: i=1" {
			t.Fatalf("ARC fields at the next hop: %s\n%s", got, m.Data)
		}
		seal := strings.Join(strings.Fields(fieldValue(m.Data, "ARC-Seal")), " ")
		if !strings.HasPrefix(seal, "i=1; a=rsa-sha256; cv=none; d=example.com; s=mx2026r;") {
			t.Errorf("ARC-Seal: %s", seal)
		}
		aar := fieldValue(m.Data, "ARC-Authentication-Results")
		ar := fieldValue(m.Data, "Authentication-Results")
		for _, want := range []string{"i=1; " + n.Hostname + ";", "spf=pass", "dkim=pass header.d=sender.test", "dmarc=pass"} {
			if !strings.Contains(aar, want) {
				t.Errorf("ARC-Authentication-Results lacks %q: %q", want, aar)
			}
		}
		if strings.Join(strings.Fields(aar), " ") != "i=1; "+strings.Join(strings.Fields(ar), " ") {
			t.Errorf("ARC-Authentication-Results %q does not carry Authentication-Results %q", aar, ar)
		}
		wantARCPass(t, d, m.Data)
		bad := bytes.Replace(m.Data, []byte("send the quote"), []byte("send the quotE"), 1)
		if out, ok := pyARC(t, d, bad, "verify"); ok || !strings.HasPrefix(out, "fail") {
			t.Errorf("python3-dkim arc_verify after a body change: %s", out)
		}
		n.WaitLog(t, "status=sent")
		// milterd writes its log in batches: wait for the lines.
		if log, ok := n.DaemonLogWith("milterd", "milterd: arc sealed", "rcpt=sales@example.com domain=example.com instance=1 cv=none selector=mx2026r"); !ok {
			t.Errorf("milterd log:\n%s", log)
		}
	})

	t.Run("mail for a local mailbox only is not sealed", func(t *testing.T) {
		before, _ := n.ReadMaildir("alice@example.com")
		msg, id := signedInbound(t, sender, "alice@example.com", "just for alice")
		wantFinal(t, send(t, n.SMTP, env(msg, "alice@example.com")))
		for _, m := range n.WaitMaildir(t, "alice@example.com", len(before)+1) {
			if bytes.Contains(m.Data, []byte("Message-ID: "+id+"\n")) {
				if bytes.Contains(m.Data, []byte("\nARC-")) || !bytes.Contains(m.Data, []byte("Authentication-Results: "+n.Hostname)) {
					t.Errorf("alice's own message:\n%s", m.Data)
				}
				return
			}
		}
		t.Fatalf("alice's message %s not delivered", id)
	})

	t.Run("i=2: mail that arrives sealed by a list", func(t *testing.T) {
		msg, id := signedInbound(t, sender, alias, "via the list", "Authentication-Results: mx.list.test; dkim=pass header.d=sender.test")
		sealed, ok := pyARC(t, d, msg, "sign", list.pem, "s1", "list.test", "mx.list.test")
		if !ok || !strings.HasPrefix(sealed, "ARC-Seal: i=1; cv=none;") {
			t.Fatalf("python3-dkim arc_sign: %s", sealed)
		}
		if out, ok := pyARC(t, d, []byte(sealed), "verify"); !ok {
			t.Fatalf("the list's seal does not verify before sending: %s", out)
		}
		wantFinal(t, send(t, n.SMTP, env([]byte(sealed), alias)))
		m := waitSinkID(t, n, id, harness.DeliveryTimeout)
		if got := strings.Join(arcFields(m.Data), " | "); got != "ARC-Seal: i=2 | ARC-Message-Signature: i=2 | ARC-Authentication-Results: i=2 | "+
			"ARC-Seal: i=1 | ARC-Message-Signature: i=1 | ARC-Authentication-Results: i=1" {
			t.Fatalf("ARC fields at the next hop: %s\n%s", got, m.Data)
		}
		seal := strings.Join(strings.Fields(fieldValue(m.Data, "ARC-Seal")), " ")
		if !strings.HasPrefix(seal, "i=2; a=rsa-sha256; cv=pass; d=example.com; s=mx2026r;") {
			t.Errorf("ARC-Seal: %s", seal)
		}
		if ar := fieldValue(m.Data, "Authentication-Results"); !strings.Contains(ar, "arc=pass") {
			t.Errorf("Authentication-Results without arc=pass: %q", ar)
		}
		wantARCPass(t, d, m.Data)
	})
}

// TestARCSealTaggedEndToEnd: a message milterd tags as spam in the same
// pass (Subject rewritten and X-Spam-* fields added through Postfix's
// milter header changes; with tag_score -10 every message is tagged)
// leaves with a seal over the header as changed.
func TestARCSealTaggedEndToEnd(t *testing.T) {
	d := spamtest.StartDNS(t, arcZone)
	sender := newARCPeer(t, d, "sender.test")
	n := arcNode(t, d, true, "spam.tag_score", -10)
	msg, id := signedInbound(t, sender, "sales@example.com", "tag me", "X-Spam-Status: No, came with the message")
	wantFinal(t, send(t, n.SMTP, harness.Envelope{Helo: "mx.sender.test", From: "x@sender.test", To: []string{"sales@example.com"}, Data: msg}))
	m := waitSinkID(t, n, id, harness.DeliveryTimeout)
	if subj := fieldValue(m.Data, "Subject"); !strings.HasPrefix(subj, " [SPAM] tag me") {
		t.Errorf("Subject not tagged: %q", subj)
	}
	if st := fieldValue(m.Data, "X-Spam-Status"); !strings.HasPrefix(st, " Yes") {
		t.Errorf("X-Spam-Status: %q", st)
	}
	if len(arcFields(m.Data)) != 3 {
		t.Fatalf("ARC fields: %v\n%s", arcFields(m.Data), m.Data)
	}
	wantARCPass(t, d, m.Data)
}

func TestARCOffEndToEnd(t *testing.T) {
	d := spamtest.StartDNS(t, arcZone)
	sender := newARCPeer(t, d, "sender.test")
	n := arcNode(t, d, false)
	msg, id := signedInbound(t, sender, "sales@example.com", "no seal please")
	wantFinal(t, send(t, n.SMTP, harness.Envelope{Helo: "mx.sender.test", From: "x@sender.test", To: []string{"sales@example.com"}, Data: msg}))
	m := waitSinkID(t, n, id, harness.DeliveryTimeout)
	if f := arcFields(m.Data); len(f) != 0 {
		t.Errorf("forwarding.arc false, ARC fields: %v\n%s", f, m.Data)
	}
	if ar := fieldValue(m.Data, "Authentication-Results"); !strings.Contains(ar, "dkim=pass header.d=sender.test") {
		t.Errorf("the message was not verified: %q", ar)
	}
	if log := n.DaemonLog("milterd"); strings.Contains(log, "milterd: arc") {
		t.Errorf("milterd logged sealing:\n%s", log)
	}
}

// wantARCPass: the arc package's own validator, asking the test's DNS
// server, passes the chain, and so does python3-dkim's arc_verify.
func wantARCPass(t *testing.T, d *spamtest.DNS, raw []byte) {
	t.Helper()
	c := resolver.NewClient(d.Addr, 2*time.Second)
	defer c.Close()
	if r := arc.Verify(context.Background(), raw, c.LookupTXT, time.Now()); r.CV != arc.Pass {
		t.Errorf("our validator at the next hop: %s (%s)", r.CV, r.Reason)
	}
	if out, ok := pyARC(t, d, raw, "verify"); !ok || !strings.HasPrefix(out, "pass") {
		t.Fatalf("python3-dkim arc_verify at the next hop: %s\n%s", out, raw)
	}
}
