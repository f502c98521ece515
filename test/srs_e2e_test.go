package test

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mailnode/mailnode/srs"
	"github.com/mailnode/mailnode/test/harness"
)

// srsNode starts a node from the example inventory whose outside mail
// leaves through the same sink as its relay domain's (postfix.relayhost),
// with an alias of example.com to a truly outside address beside sales@
// (which reaches carol@partner.org, a relay domain). edit changes more.
func srsNode(t *testing.T, edit func(doc map[string]any)) *harness.Node {
	return harness.StartNode(t, harness.Options{Policy: true, Milter: true, DKIMKeys: true, Edit: func(doc map[string]any) {
		harness.Set(doc, "policy.greylist.enabled", false)
		for _, d := range doc["domains"].([]any) {
			m := d.(map[string]any)
			switch m["name"] {
			case "partner.org":
				harness.Set(doc, "postfix.relayhost", m["nexthop"])
			case "example.com":
				m["aliases"].(map[string]any)["fwd"] = "frank@outside.example"
			}
		}
		if edit != nil {
			edit(doc)
		}
	}})
}

// srsMessage is a message with its own Message-ID (to find it at the sink).
func srsMessage(from, to, subject string) ([]byte, string) {
	return dkimTestMessage(from, to, subject, "Forwarded or not.\r\n")
}

// bounceMessage is a delivery status notification, as a next hop returns
// one to the envelope sender with MAIL FROM:<>.
func bounceMessage(to string) ([]byte, string) {
	id := fmt.Sprintf("<bounce-%d@mx.partner.org>", time.Now().UnixNano())
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: Mail Delivery System <MAILER-DAEMON@mx.partner.org>\r\nTo: <%s>\r\n", to)
	fmt.Fprintf(&b, "Subject: Undelivered Mail Returned to Sender\r\nDate: Mon, 02 Mar 2026 10:00:00 +0000\r\nMessage-ID: %s\r\n", id)
	b.WriteString("Auto-Submitted: auto-replied\r\nContent-Type: text/plain\r\n\r\nThe mail you sent to carol@partner.org could not be delivered.\r\n")
	return b.Bytes(), id
}

// TestSRS: forwarding.srs end to end through Postfix. Mail from an outside
// sender that an alias forwards off the node (to a relay domain, to an
// outside address) leaves with MAIL FROM SRS0=...@ the alias's domain; a
// bounce to that address is accepted and reaches the original sender at
// its next hop; forged and expired SRS addresses are unknown users; a
// local sender's forward, mail to a relay domain directly and plain local
// delivery keep their sender.
func TestSRS(t *testing.T) {
	port, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	metrics := "127.0.0.1:" + strconv.Itoa(port)
	n := srsNode(t, func(doc map[string]any) { harness.Set(doc, "milter.metrics_listen", metrics) })
	secrets, err := srs.LoadFile(n.Inv.Forwarding.SRSSecretFile)
	if err != nil {
		t.Fatal(err)
	}
	const outsider = "eve@example.org"
	cf, _ := os.ReadFile(filepath.Join(n.PostfixConfig, "main.cf"))
	if want := "socketmap:unix:" + filepath.Join(n.Dir, "queue", "private", "mailnode-srs") + ":reverse"; !strings.Contains(string(cf), want) {
		t.Fatalf("main.cf does not ask %s", want)
	}
	var srsAddr string // what sales@ sent carol's copy with

	t.Run("outside sender to an alias reaching a relay domain: SRS0 of the alias's domain", func(t *testing.T) {
		before, _ := n.ReadMaildir("alice@example.com")
		msg, id := srsMessage(outsider, "sales@example.com", "to sales")
		wantFinal(t, send(t, n.SMTP, harness.Envelope{From: outsider, To: []string{"sales@example.com"}, Data: msg}))
		m := waitSinkID(t, n, id, harness.DeliveryTimeout)
		t.Logf("the next hop got MAIL FROM:<%s> RCPT TO:%v", m.From, m.To)
		if len(m.To) != 1 || m.To[0] != "carol@partner.org" {
			t.Errorf("RCPT %v, want carol@partner.org", m.To)
		}
		if !strings.HasPrefix(m.From, "SRS0=") || !strings.HasSuffix(m.From, "=example.org=eve@example.com") {
			t.Fatalf("MAIL FROM:<%s>, want SRS0=HHHH=TT=example.org=eve@example.com", m.From)
		}
		if orig, err := secrets.Reverse(m.From); err != nil || orig != outsider {
			t.Errorf("the SRS address reverses with the node's secret to %q, %v", orig, err)
		}
		srsAddr = m.From
		if !bytes.Equal(bodyOf(m.Data), bodyOf(msg)) {
			t.Errorf("the body changed on the way")
		}
		// One message, one sender: alice's local copy carries it too.
		got := n.WaitMaildir(t, "alice@example.com", len(before)+1)
		if last := got[len(got)-1].Data; !bytes.Contains(last, []byte("Return-Path: <"+srsAddr+">")) {
			t.Errorf("alice's copy: %s", head(last))
		}
		waitDaemonLog(t, n, "milterd", []string{`srs="` + srsAddr + `"`})
	})

	t.Run("outside sender to an alias reaching an outside address", func(t *testing.T) {
		msg, id := srsMessage("Someone.Else@Sender.example", "fwd@example.com", "to fwd")
		wantFinal(t, send(t, n.SMTP, harness.Envelope{From: "Someone.Else@Sender.example", To: []string{"fwd@example.com"}, Data: msg}))
		m := waitSinkID(t, n, id, harness.DeliveryTimeout)
		t.Logf("the next hop got MAIL FROM:<%s> RCPT TO:%v", m.From, m.To)
		if len(m.To) != 1 || m.To[0] != "frank@outside.example" {
			t.Errorf("RCPT %v, want frank@outside.example", m.To)
		}
		if !strings.HasPrefix(m.From, "SRS0=") || !strings.HasSuffix(m.From, "=Sender.example=Someone.Else@example.com") {
			t.Errorf("MAIL FROM:<%s>", m.From)
		}
	})

	if srsAddr == "" {
		t.Fatal("no SRS address to bounce to")
	}
	// bounce sends a bounce to rcpt, an SRS address of the outsider in
	// any case: Postfix asks the socketmap with the address as the client
	// wrote it, and the original sender comes back in that case.
	bounce := func(t *testing.T, rcpt string) {
		t.Helper()
		msg, id := bounceMessage(rcpt)
		tr := send(t, n.SMTP, harness.Envelope{From: "", To: []string{rcpt}, Data: msg})
		wantFinal(t, tr)
		t.Logf("MAIL FROM:<> RCPT TO:<%s>: %s", rcpt, tr.Rcpt[0].Text())
		m := waitSinkID(t, n, id, harness.DeliveryTimeout)
		t.Logf("the original sender's next hop got MAIL FROM:<%s> RCPT TO:%v", m.From, m.To)
		if m.From != "" || len(m.To) != 1 || !strings.EqualFold(m.To[0], outsider) {
			t.Errorf("the bounce left as MAIL FROM:<%s> RCPT TO:%v, want <> to %s", m.From, m.To, outsider)
		}
		if !bytes.Equal(bodyOf(m.Data), bodyOf(msg)) {
			t.Errorf("the bounce's body changed")
		}
	}

	t.Run("a bounce to the SRS address reaches the original sender", func(t *testing.T) {
		bounce(t, srsAddr)
		n.WaitLog(t, "to=<"+outsider+">, orig_to=<"+srsAddr+">")
		// policyd took the bounce as outside -> local, spam check on;
		// smtpd (recipient validation) and cleanup (expansion) each asked
		// milterd's socketmap.
		waitDaemonLog(t, n, "policyd", []string{"from=<> to=<" + srsAddr + "> state=RCPT cell=outside/none->local rcpt=1 action=DUNNO reason=inbound"})
		waitDaemonLog(t, n, "milterd", []string{`msg="milterd: srs address reversed" address="` + srsAddr + `" to=` + outsider})
	})

	t.Run("the SRS address in another case", func(t *testing.T) {
		bounce(t, strings.ToUpper(srsAddr[:strings.IndexByte(srsAddr, '@')])+"@EXAMPLE.COM")
	})

	t.Run("forged and expired SRS addresses are unknown users", func(t *testing.T) {
		old := *secrets
		old.Now = func() time.Time { return time.Now().Add(-30 * 24 * time.Hour) }
		expired, _ := old.Forward(outsider, "example.com")
		local := srsAddr[:strings.IndexByte(srsAddr, '@')]
		hash := local[5:9]
		forgedHash := strings.Replace(srsAddr, "="+hash+"=", "=AAAA=", 1)
		if hash == "AAAA" {
			forgedHash = strings.Replace(srsAddr, "="+hash+"=", "=BBBB=", 1)
		}
		otherNode, _ := srs.New([]byte("the-secret-of-some-other-node-0123"))
		foreign, _ := otherNode.Forward("victim@elsewhere.example", "example.com")
		for _, c := range []struct{ name, rcpt string }{
			{"another hash", forgedHash},
			{"another original sender", strings.Replace(srsAddr, "=eve@", "=mallory@", 1)},
			{"another secret", foreign},
			{"30 days old", expired},
			{"not SRS at all", "SRS0=nonsense@example.com"},
		} {
			sinkBefore := len(n.Sink.Messages())
			msg, _ := bounceMessage(c.rcpt)
			tr := send(t, n.SMTP, harness.Envelope{From: "", To: []string{c.rcpt}, Data: msg})
			want := "550 5.1.1 <" + c.rcpt + ">: Recipient address rejected: User unknown"
			if got := tr.Rcpt[0].Text(); !strings.HasPrefix(got, want) {
				t.Errorf("%s: RCPT TO:<%s>: %q, want %q", c.name, c.rcpt, got, want)
			}
			t.Logf("%s: %s", c.name, tr.Rcpt[0].Text())
			if tr.Final.Code != 0 {
				t.Errorf("%s: a refused recipient reached DATA: %q", c.name, tr.Final.Text())
			}
			time.Sleep(100 * time.Millisecond)
			if len(n.Sink.Messages()) != sinkBefore {
				t.Errorf("%s: something left the node", c.name)
			}
		}
		waitDaemonLog(t, n, "milterd", []string{"result=expired", "result=invalid"})
	})

	t.Run("a local sender's forward keeps its sender", func(t *testing.T) {
		msg, id := srsMessage("alice@example.com", "sales@example.com", "alice to sales")
		wantFinal(t, send(t, n.Submission, harness.Envelope{StartTLS: true, AuthUser: "alice@example.com", AuthPass: "alicepass",
			From: "alice@example.com", To: []string{"sales@example.com"}, Data: msg}))
		if m := waitSinkID(t, n, id, harness.DeliveryTimeout); m.From != "alice@example.com" {
			t.Errorf("MAIL FROM:<%s>, want alice@example.com", m.From)
		}
	})

	t.Run("mail to a relay domain directly keeps its sender", func(t *testing.T) {
		msg, id := srsMessage(outsider, "dave@partner.org", "to the relay domain")
		wantFinal(t, send(t, n.SMTP, harness.Envelope{From: outsider, To: []string{"dave@partner.org"}, Data: msg}))
		if m := waitSinkID(t, n, id, harness.DeliveryTimeout); m.From != outsider {
			t.Errorf("MAIL FROM:<%s>, want %s", m.From, outsider)
		}
	})

	t.Run("secrets rotated on SIGHUP; a broken file keeps the running ones", func(t *testing.T) {
		file := n.Inv.Forwarding.SRSSecretFile
		oldSecret, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		reloads := func() int { return strings.Count(n.DaemonLog("milterd"), "milterd: inventory reloaded") }
		hup := func(t *testing.T, content string) {
			t.Helper()
			if err := os.WriteFile(file, []byte(content), 0o640); err != nil {
				t.Fatal(err)
			}
			if err := n.SignalDaemon("milterd", syscall.SIGHUP); err != nil {
				t.Fatal(err)
			}
		}
		rcpt := func(addr string) string {
			return send(t, n.SMTP, harness.Envelope{From: "", To: []string{addr}}).Rcpt[0].Text()
		}
		hup(t, "short\n")
		waitDaemonLog(t, n, "milterd", []string{"reload refused, keeping the running inventory and SRS secrets", "forwarding.srs_secret_file", "too short"})
		if got := rcpt(srsAddr); !strings.HasPrefix(got, "250 ") {
			t.Errorf("after a refused reload the running secret no longer verifies: %q", got)
		}
		const newSecret = "the-next-srs-secret-of-this-node"
		before := reloads()
		hup(t, newSecret+"\n"+string(oldSecret))
		if err := srsPoll(func() bool { return reloads() > before }); err != nil {
			t.Fatalf("no reload: %v\n%s", err, n.DaemonLog("milterd"))
		}
		if got := rcpt(srsAddr); !strings.HasPrefix(got, "250 ") {
			t.Errorf("an address of the old secret, still listed second: %q", got)
		}
		msg, id := srsMessage(outsider, "sales@example.com", "after the rotation")
		wantFinal(t, send(t, n.SMTP, harness.Envelope{From: outsider, To: []string{"sales@example.com"}, Data: msg}))
		m := waitSinkID(t, n, id, harness.DeliveryTimeout)
		next, _ := srs.New([]byte(newSecret))
		if orig, err := next.Reverse(m.From); err != nil || orig != outsider {
			t.Errorf("MAIL FROM:<%s> after the rotation is not the new secret's: %v", m.From, err)
		}
		before = reloads()
		hup(t, newSecret+"\n")
		if err := srsPoll(func() bool { return reloads() > before }); err != nil {
			t.Fatalf("no reload: %v", err)
		}
		if got := rcpt(srsAddr); !strings.HasPrefix(got, "550 5.1.1 ") {
			t.Errorf("an address of a secret no longer listed: %q", got)
		}
		if got := rcpt(m.From); !strings.HasPrefix(got, "250 ") {
			t.Errorf("an address of the new secret: %q", got)
		}
	})

	t.Run("plain local delivery keeps its sender", func(t *testing.T) {
		before, _ := n.ReadMaildir("bob@example.com")
		msg, _ := srsMessage(outsider, "bob@example.com", "to bob")
		wantFinal(t, send(t, n.SMTP, harness.Envelope{From: outsider, To: []string{"bob@example.com"}, Data: msg}))
		got := n.WaitMaildir(t, "bob@example.com", len(before)+1)
		if last := got[len(got)-1].Data; !bytes.Contains(last, []byte("Return-Path: <"+outsider+">")) {
			t.Errorf("bob's copy: %s", head(last))
		}
	})

	// Every recipient above (sales@, fwd@, bob@, the aliases' targets,
	// the bounces' originals) went through smtpd's validation and
	// cleanup's expansion; the gate in front of the socketmap let only the
	// SRS-shaped ones reach milterd.
	t.Run("milterd is asked only about SRS-shaped addresses", func(t *testing.T) {
		_, body := httpGet(t, metrics, "/metrics")
		lookups := map[string]int{}
		for _, m := range regexp.MustCompile(`mailnode_milter_srs_lookups_total\{result="(\w+)"\} (\d+)`).FindAllStringSubmatch(body, -1) {
			lookups[m[1]], _ = strconv.Atoi(m[2])
		}
		t.Logf("socketmap lookups by result: %v", lookups)
		if lookups["not_srs"] != 0 {
			t.Errorf("milterd was asked about %d addresses that are not SRS-shaped", lookups["not_srs"])
		}
		if lookups["reversed"] == 0 || lookups["invalid"]+lookups["expired"] == 0 {
			t.Errorf("the bounces' and the forged addresses' lookups are missing: %v", lookups)
		}
	})
}

// TestSRSOff: with forwarding.srs: false nothing is rewritten, main.cf
// asks no socketmap, and an SRS address is an unknown user like any other.
func TestSRSOff(t *testing.T) {
	n := srsNode(t, func(doc map[string]any) { harness.Set(doc, "forwarding.srs", false) })
	if cf, _ := os.ReadFile(filepath.Join(n.PostfixConfig, "main.cf")); strings.Contains(string(cf), "socketmap") {
		t.Errorf("main.cf asks a socketmap with forwarding.srs false")
	}
	const outsider = "eve@example.org"
	msg, id := srsMessage(outsider, "sales@example.com", "to sales, SRS off")
	wantFinal(t, send(t, n.SMTP, harness.Envelope{From: outsider, To: []string{"sales@example.com"}, Data: msg}))
	if m := waitSinkID(t, n, id, harness.DeliveryTimeout); m.From != outsider {
		t.Errorf("MAIL FROM:<%s> with forwarding.srs false, want %s", m.From, outsider)
	}
	waitDaemonLog(t, n, "milterd", []string{"sender=" + outsider})
	if strings.Contains(n.DaemonLog("milterd"), "srs=") {
		t.Errorf("milterd rewrote with SRS off")
	}
	s, _ := srs.New([]byte("any-secret-at-all-0123456789"))
	addr, _ := s.Forward(outsider, "example.com")
	tr := send(t, n.SMTP, harness.Envelope{From: "", To: []string{addr}})
	if got := tr.Rcpt[0].Text(); !strings.HasPrefix(got, "550 5.1.1 <"+addr+">") {
		t.Errorf("RCPT TO:<%s> with SRS off: %q", addr, got)
	}
}

// srsPoll waits up to harness.DeliveryTimeout for cond.
func srsPoll(cond func() bool) error {
	for deadline := time.Now().Add(harness.DeliveryTimeout); !cond(); time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			return fmt.Errorf("not after %s", harness.DeliveryTimeout)
		}
	}
	return nil
}

// TestSRSTier: the nodes of a tier share the SRS secret (the harness gives
// node 1 node 0's file, as the Ansible role copies it), so a bounce to an
// address one node made is reversed by the other.
func TestSRSTier(t *testing.T) {
	nodes := harness.StartTier(t, []string{"127.0.0.1", "192.0.2.21"}, harness.Options{Policy: true, Milter: true, DKIMKeys: true,
		Edit: func(doc map[string]any) {
			harness.Set(doc, "policy.greylist.enabled", false)
			for _, d := range doc["domains"].([]any) {
				if m := d.(map[string]any); m["name"] == "partner.org" {
					harness.Set(doc, "postfix.relayhost", m["nexthop"])
				}
			}
		}})
	a, b := nodes[0], nodes[1]
	if a.Inv.Forwarding.SRSSecretFile != b.Inv.Forwarding.SRSSecretFile {
		t.Fatalf("the nodes read different secrets: %s, %s", a.Inv.Forwarding.SRSSecretFile, b.Inv.Forwarding.SRSSecretFile)
	}
	const outsider = "eve@example.org"
	msg, id := srsMessage(outsider, "sales@example.com", "through mx1")
	wantFinal(t, send(t, a.SMTP, harness.Envelope{From: outsider, To: []string{"sales@example.com"}, Data: msg}))
	m := waitSinkID(t, a, id, harness.DeliveryTimeout)
	if !strings.HasPrefix(m.From, "SRS0=") {
		t.Fatalf("mx1 forwarded with MAIL FROM:<%s>", m.From)
	}
	t.Logf("mx1 forwarded with MAIL FROM:<%s>", m.From)
	bounce, bid := bounceMessage(m.From)
	tr := send(t, b.SMTP, harness.Envelope{From: "", To: []string{m.From}, Data: bounce})
	wantFinal(t, tr)
	t.Logf("mx2, RCPT TO:<%s>: %s", m.From, tr.Rcpt[0].Text())
	got := waitSinkID(t, b, bid, harness.DeliveryTimeout)
	if got.From != "" || len(got.To) != 1 || got.To[0] != outsider {
		t.Errorf("mx2 sent the bounce as MAIL FROM:<%s> RCPT TO:%v, want <> to %s", got.From, got.To, outsider)
	}
}

// TestSRSBounceWhileMilterdDown: a bounce Postfix makes itself (it passes no
// milter) while milterd, and so the SRS socketmap, is down is not lost: it
// waits in the queue and reaches the original sender once milterd is back.
func TestSRSBounceWhileMilterdDown(t *testing.T) {
	// The outside world's mail servers (the node's relayhost), whose
	// answer the test chooses: 421 at the banner (deferred), 550 at RCPT
	// (bounced), or accept.
	hop, err := harness.StartSink("127.0.0.1:0", "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { hop.Close() })
	hop.SetMode(harness.SinkTempfail)
	n := srsNode(t, func(doc map[string]any) {
		harness.Set(doc, "postfix.relayhost", "[127.0.0.1]:"+hop.Port())
	})
	const outsider = "eve@example.org"
	msg, _ := srsMessage(outsider, "fwd@example.com", "will bounce")
	wantFinal(t, send(t, n.SMTP, harness.Envelope{From: outsider, To: []string{"fwd@example.com"}, Data: msg}))
	n.WaitLog(t, "to=<frank@outside.example>, orig_to=<fwd@example.com>")
	n.WaitLog(t, "status=deferred")
	if err := n.StopDaemon("milterd"); err != nil {
		t.Fatal(err)
	}
	hop.SetMode(harness.SinkRejectRcpt)
	if err := n.FlushQueue(); err != nil {
		t.Fatal(err)
	}
	n.WaitLog(t, "status=bounced (host 127.0.0.1[127.0.0.1] said: 550 5.1.1 no such user here")
	// cleanup cannot expand the bounce's SRS recipient: the bounce is
	// not made yet, and the message waits with it.
	n.WaitLog(t, "virtual_alias_maps map lookup problem for SRS0=")
	n.WaitLog(t, "status=deferred (bounce failed)")
	hop.SetMode(harness.SinkAccept)
	if err := n.RestartDaemon("milterd"); err != nil {
		t.Fatal(err)
	}
	if out, err := n.DrainQueue(2 * harness.DeliveryTimeout); err != nil {
		t.Fatalf("%v\n%s\n%s", err, out, n.MailLog())
	}
	got := hop.Messages()
	for _, m := range got {
		if m.From == "" && len(m.To) == 1 && m.To[0] == outsider && bytes.Contains(m.Data, []byte("will bounce")) {
			t.Logf("the bounce reached %s after milterd came back", outsider)
			return
		}
	}
	t.Errorf("no bounce reached %s: %+v\n%s", outsider, got, n.MailLog())
}
