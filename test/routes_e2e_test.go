package test

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailnode/mailnode/test/harness"
)

// TestSubmissionsImplicitTLS: postfix.submissions_listen (port 465, RFC
// 8314) speaks TLS from the first byte, then wants AUTH like 587; an
// authenticated message is relayed and DKIM-signed as on 587, and a client
// without AUTH is refused.
func TestSubmissionsImplicitTLS(t *testing.T) {
	n := harness.StartNode(t, harness.Options{Policy: true, Milter: true, DKIMKeys: true, Edit: func(doc map[string]any) {
		harness.Set(doc, "policy.greylist.enabled", false)
	}})
	keys := zoneKeys(t, n)
	const relayRcpt = "dave@partner.org"

	t.Run("plain text on 465 gets no banner", func(t *testing.T) {
		c, banner, err := harness.Dial(n.Submissions, harness.DialOptions{Timeout: 5e9})
		if err == nil {
			c.Close()
			t.Fatalf("a plain-text client got a banner on the implicit-TLS port: %q", banner.Text())
		}
	})

	t.Run("no AUTH: refused", func(t *testing.T) {
		tr := send(t, n.Submissions, harness.Envelope{ImplicitTLS: true, From: "alice@example.com", To: []string{relayRcpt}})
		if tr.Banner.Code != 220 {
			t.Fatalf("banner over TLS: %q", tr.Banner.Text())
		}
		if len(tr.Rcpt) != 1 || !strings.HasPrefix(tr.Rcpt[0].Text(), "554 5.7.1 ") || !strings.Contains(tr.Rcpt[0].Text(), "Client host rejected: Access denied") {
			t.Errorf("RCPT without AUTH: %+v", tr.Rcpt)
		}
		t.Logf("RCPT without AUTH: %s", tr.Rcpt[0].Text())
	})

	t.Run("AUTH, then relayed and signed as on 587", func(t *testing.T) {
		msg, id := dkimTestMessage("Alice Smith <alice@example.com>", relayRcpt, "over 465", testBody)
		tr := send(t, n.Submissions, harness.Envelope{ImplicitTLS: true, AuthUser: "alice@example.com", AuthPass: "alicepass",
			From: "alice@example.com", To: []string{relayRcpt}, Data: msg})
		if tr.Auth.Code != 235 {
			t.Fatalf("AUTH over implicit TLS: %q", tr.Auth.Text())
		}
		if tr.StartTLS.Code != 0 || tr.EHLO.Code != 250 {
			t.Errorf("EHLO %q, STARTTLS %q", tr.EHLO.Text(), tr.StartTLS.Text())
		}
		wantFinal(t, tr)
		t.Logf("AUTH: %s; final: %s", tr.Auth.Text(), tr.Final.Text())
		m := waitSinkID(t, n, id, harness.DeliveryTimeout)
		verifySigned(t, keys, m.Data, "example.com", []string{"mx2026r/rsa-sha256", "mx2026e/ed25519-sha256"})
		if !strings.Contains(n.MailLog(), "/submissions/smtpd[") {
			t.Errorf("the mail log shows no submissions smtpd")
		}
	})
}

// TestRecipientDelimiter: with postfix.recipient_delimiter "+" (the example
// inventory's), bob+news@ from outside lands in bob's Maildir, an unknown
// user with an extension is still 550 5.1.1, and a list with an extension
// behaves as the list: refused from outside, expanded to its members
// (without the extension) for an internal sender.
func TestRecipientDelimiter(t *testing.T) {
	n := harness.StartNode(t, harness.Options{Policy: true, Milter: true, DKIMKeys: true, Edit: func(doc map[string]any) {
		harness.Set(doc, "postfix.recipient_delimiter", "+")
		harness.Set(doc, "policy.greylist.enabled", false)
	}})
	const outsider = "eve@example.org"

	t.Run("outside to bob+news@ reaches bob", func(t *testing.T) {
		before, _ := n.ReadMaildir("bob@example.com")
		msg := harness.NewMessage(outsider, "bob+news@example.com", "newsletter", "to an extension")
		tr := send(t, n.SMTP, harness.Envelope{From: outsider, To: []string{"bob+news@example.com"}, Data: msg})
		wantFinal(t, tr)
		t.Logf("RCPT bob+news@: %s", tr.Rcpt[0].Text())
		got := n.WaitMaildir(t, "bob@example.com", len(before)+1)
		if !containsMsg(got, msg) {
			t.Fatalf("bob's Maildir lacks the message to bob+news@")
		}
	})

	t.Run("unknown user with an extension: 550 5.1.1", func(t *testing.T) {
		tr := send(t, n.SMTP, harness.Envelope{From: outsider, To: []string{"nobody+news@example.com"}})
		if got := tr.Rcpt[0].Text(); !strings.HasPrefix(got, "550 5.1.1 <nobody+news@example.com>") {
			t.Errorf("RCPT nobody+news@: %q", got)
		}
		t.Logf("RCPT nobody+news@: %s", tr.Rcpt[0].Text())
	})

	t.Run("a list with an extension from outside: the list's refusal", func(t *testing.T) {
		tr := send(t, n.SMTP, harness.Envelope{From: outsider, To: []string{"all-staff+weekly@example.com"}})
		want := "550 5.7.1 <all-staff+weekly@example.com>: Recipient address rejected: Sorry, <all-staff+weekly@example.com> accepts mail from internal senders only"
		if got := tr.Rcpt[0].Text(); got != want {
			t.Errorf("RCPT all-staff+weekly@ from outside:\n got %q\nwant %q", got, want)
		}
		t.Logf("RCPT all-staff+weekly@ from outside: %s", tr.Rcpt[0].Text())
	})

	t.Run("a list with an extension from an internal sender: its members", func(t *testing.T) {
		members := []string{"alice@example.com", "bob@example.com", "carol@example.net"}
		before := map[string]int{}
		for _, m := range members {
			l, _ := n.ReadMaildir(m)
			before[m] = len(l)
		}
		msg := harness.NewMessage("alice@example.com", "all-staff+weekly@example.com", "weekly", "to the list")
		tr := send(t, n.Submission, harness.Envelope{StartTLS: true, AuthUser: "alice@example.com", AuthPass: "alicepass",
			From: "alice@example.com", To: []string{"all-staff+weekly@example.com"}, Data: msg})
		wantFinal(t, tr)
		for _, m := range members {
			got := n.WaitMaildir(t, m, before[m]+1)
			if !containsMsg(got, msg) {
				t.Errorf("%s did not get the list's message", m)
			}
			// propagate_unmatched_extensions = canonical: the members get
			// the list's mail at their own addresses. Postfix logs a
			// delivery after Dovecot has saved it, so the line is waited for.
			n.WaitLog(t, "to=<"+m+">, orig_to=<all-staff+weekly@example.com>")
			if ext := strings.Replace(m, "@", "+weekly@", 1); strings.Contains(n.MailLog(), "to=<"+ext+">") {
				t.Errorf("the list passed its extension on: delivered to %s", ext)
			}
		}
	})
}

// TestRelayRecipients: domains[].recipients of a relay domain are the only
// recipients Postfix accepts for it (relay_recipient_maps): a listed one is
// relayed to the domain's next hop, another gets 550 5.1.1 at RCPT, after
// policyd classified both as relay.
func TestRelayRecipients(t *testing.T) {
	n := harness.StartNode(t, harness.Options{Policy: true, Milter: true, DKIMKeys: true, Edit: func(doc map[string]any) {
		harness.Set(doc, "policy.greylist.enabled", false)
		for _, d := range doc["domains"].([]any) {
			if m := d.(map[string]any); m["name"] == "partner.org" {
				m["recipients"] = []any{"carol", "Dave"}
			}
		}
	}})
	const outsider = "eve@example.org"

	t.Run("a listed recipient is relayed", func(t *testing.T) {
		msg, id := dkimTestMessage(outsider, "dave@partner.org", "backup mx", testBody)
		tr := send(t, n.SMTP, harness.Envelope{From: outsider, To: []string{"dave@partner.org"}, Data: msg})
		wantFinal(t, tr)
		t.Logf("RCPT dave@partner.org: %s", tr.Rcpt[0].Text())
		m := waitSinkID(t, n, id, harness.DeliveryTimeout)
		if len(m.To) != 1 || m.To[0] != "dave@partner.org" {
			t.Errorf("the next hop got RCPT %v", m.To)
		}
	})

	t.Run("another recipient: 550 5.1.1 at RCPT", func(t *testing.T) {
		tr := send(t, n.SMTP, harness.Envelope{From: outsider, To: []string{"zed@partner.org"}})
		want := "550 5.1.1 <zed@partner.org>: Recipient address rejected: User unknown"
		if got := tr.Rcpt[0].Text(); got != want {
			t.Errorf("RCPT zed@partner.org:\n got %q\nwant %q", got, want)
		}
		t.Logf("RCPT zed@partner.org: %s", tr.Rcpt[0].Text())
	})
}

// TestMainCFEscapeHatch: postfix.main_cf settings reach the running Postfix
// (applied last, over mailnode's own value), and render-config --check
// shows a change of them before it is installed.
func TestMainCFEscapeHatch(t *testing.T) {
	n := harness.StartNode(t, harness.Options{Policy: true, Milter: true, DKIMKeys: true, Edit: func(doc map[string]any) {
		harness.Set(doc, "postfix.main_cf", map[string]any{"smtpd_banner": "$myhostname ESMTP e2e-hatch", "smtpd_data_restrictions": "reject_unauth_pipelining"})
	}})
	tr := send(t, n.SMTP, harness.Envelope{From: "eve@example.org", To: []string{"bob@example.com"}})
	if got, want := tr.Banner.Text(), "220 mx1.example.com ESMTP e2e-hatch"; got != want {
		t.Errorf("banner %q, want %q", got, want)
	}
	t.Logf("banner: %s", tr.Banner.Text())
	out, err := exec.Command("postconf", "-c", n.PostfixConfig, "-n", "smtpd_banner", "smtpd_data_restrictions").CombinedOutput()
	if err != nil || string(out) != "smtpd_banner = $myhostname ESMTP e2e-hatch\nsmtpd_data_restrictions = reject_unauth_pipelining\n" {
		t.Errorf("postconf -n: %v\n%s", err, out)
	}
	check := func(inv string) (string, int) {
		cmd := exec.Command(n.Bin, "render-config", "--inventory", inv, "--out", n.Dir, "--check")
		b, err := cmd.CombinedOutput()
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return string(b), ee.ExitCode()
		} else if err != nil {
			t.Fatal(err)
		}
		return string(b), 0
	}
	if out, code := check(n.InventoryPath); code != 0 {
		t.Errorf("render-config --check of the running inventory: exit %d\n%s", code, out)
	}
	raw, err := os.ReadFile(n.InventoryPath)
	if err != nil {
		t.Fatal(err)
	}
	changed := filepath.Join(t.TempDir(), "inventory.yaml")
	os.WriteFile(changed, []byte(strings.Replace(string(raw), "ESMTP e2e-hatch", "ESMTP e2e-hatch-2", 1)), 0o644)
	out2, code := check(changed)
	if code != 1 || !strings.Contains(out2, "\n-smtpd_banner = $myhostname ESMTP e2e-hatch\n+smtpd_banner = $myhostname ESMTP e2e-hatch-2\n") {
		t.Errorf("render-config --check of a changed main_cf: exit %d\n%s", code, out2)
	}
}

// TestAddressTransports: domains[].transports gives an address of a local
// domain its own next hop: tickets@ (no mailbox) is a valid recipient,
// passes the matrix as local, and is delivered to its next hop (here an
// SMTP sink), with or without an extension; other addresses are unchanged.
func TestAddressTransports(t *testing.T) {
	sink, err := harness.StartSink("127.0.0.1:0", "")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	n := harness.StartNode(t, harness.Options{Policy: true, Milter: true, DKIMKeys: true, Edit: func(doc map[string]any) {
		harness.Set(doc, "policy.greylist.enabled", false)
		harness.Set(doc, "postfix.recipient_delimiter", "+")
		for _, d := range doc["domains"].([]any) {
			if m := d.(map[string]any); m["name"] == "example.com" {
				m["transports"] = map[string]any{"tickets": "smtp:[127.0.0.1]:" + sink.Port()}
			}
		}
	}})
	const outsider = "eve@example.org"
	for i, rcpt := range []string{"tickets@example.com", "tickets+urgent@example.com"} {
		msg := harness.NewMessage(outsider, rcpt, "help", "a ticket")
		tr := send(t, n.SMTP, harness.Envelope{From: outsider, To: []string{rcpt}, Data: msg})
		wantFinal(t, tr)
		t.Logf("RCPT %s: %s", rcpt, tr.Rcpt[0].Text())
		got, err := sink.Wait(i+1, harness.DeliveryTimeout)
		if err != nil {
			t.Fatalf("%s: %v; mail log:\n%s", rcpt, err, n.MailLog())
		}
		if m := got[i]; len(m.To) != 1 || m.To[0] != rcpt {
			t.Errorf("the ticket system got RCPT %v, want %s", m.To, rcpt)
		}
	}
	before, _ := n.ReadMaildir("bob@example.com")
	msg := harness.NewMessage(outsider, "bob@example.com", "still a mailbox", "for bob")
	wantFinal(t, send(t, n.SMTP, harness.Envelope{From: outsider, To: []string{"bob@example.com"}, Data: msg}))
	if !containsMsg(n.WaitMaildir(t, "bob@example.com", len(before)+1), msg) {
		t.Error("bob's mail went astray")
	}
	if got := len(sink.Messages()); got != 2 {
		t.Errorf("the ticket system got %d messages, want 2", got)
	}
}
