package test

import (
	"bufio"
	"bytes"
	"fmt"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mailnode/mailnode/test/harness"
)

// The issue-2 delivery paths through a real Postfix + Dovecot rendered from
// examples/inventory.yaml. policyd and milterd are switched off explicitly
// in the inventory (policy.enabled/milter.enabled: false); Postfix's own
// relay control and recipient validation stay in force.
func TestDelivery(t *testing.T) {
	n := harness.StartNode(t, harness.Options{})
	outsider := "someone@outside.test"

	t.Run("unknown local user is refused at RCPT with 550 5.1.1", func(t *testing.T) {
		tr := send(t, n.SMTP, harness.Envelope{From: outsider, To: []string{"nobody@example.com", "nobody@mx1.example.com", "alice@example.com"}})
		for i, rcpt := range []string{"nobody@example.com", "nobody@mx1.example.com"} {
			want := "550 5.1.1 <" + rcpt + ">: Recipient address rejected: User unknown"
			if got := tr.Rcpt[i].Text(); !strings.HasPrefix(got, want) {
				t.Errorf("RCPT %s: got %q, want %q...", rcpt, got, want)
			}
		}
		if tr.Rcpt[2].Code != 250 {
			t.Errorf("RCPT alice@example.com: %q, want 250", tr.Rcpt[2].Text())
		}
	})

	t.Run("local mailbox through LMTP into its Maildir", func(t *testing.T) {
		msg := harness.NewMessage(outsider, "bob@example.com", "to bob", "Hello Bob,\r\n.leading dot survives\r\n")
		tr := send(t, n.SMTP, harness.Envelope{From: outsider, To: []string{"bob@example.com"}, Data: msg})
		wantFinal(t, tr)
		got := n.WaitMaildir(t, "bob@example.com", 1)
		checkDelivered(t, got[0].Data, outsider, "bob@example.com", msg)
	})

	t.Run("unix user through local(8) into its mailbox", func(t *testing.T) {
		rcpt := "root@" + n.Hostname
		msg := harness.NewMessage(outsider, rcpt, "to root", "Hello root")
		tr := send(t, n.SMTP, harness.Envelope{From: outsider, To: []string{rcpt}, Data: msg})
		wantFinal(t, tr)
		got := n.WaitSpool(t, "root", 1)
		if !bytes.HasPrefix(got[0].Data, []byte("From "+outsider+" ")) {
			t.Errorf("mbox entry does not start with the From_ line of %s:\n%s", outsider, got[0].Data)
		}
		checkDelivered(t, got[0].Data, outsider, rcpt, msg)
	})

	t.Run("relay domain to its next hop", func(t *testing.T) {
		msg := harness.NewMessage(outsider, "dave@partner.org", "to the partner", "relayed")
		tr := send(t, n.SMTP, harness.Envelope{From: outsider, To: []string{"dave@partner.org"}, Data: msg})
		wantFinal(t, tr)
		got := n.WaitSink(t, 1)
		m := got[len(got)-1]
		if m.From != outsider || strings.Join(m.To, ",") != "dave@partner.org" {
			t.Errorf("sink envelope: from %q to %q, want %s -> dave@partner.org", m.From, m.To, outsider)
		}
		if !bytes.HasSuffix(m.Data, msg) {
			t.Errorf("relayed bytes do not end with the message sent:\n%s", m.Data)
		}
		if !bytes.HasPrefix(m.Data, []byte("Received: ")) {
			t.Errorf("relayed message lacks Postfix's Received header:\n%s", m.Data)
		}
	})

	t.Run("aliases and internal list expand", func(t *testing.T) {
		before := len(n.Sink.Messages())
		aliceBefore, _ := n.ReadMaildir("alice@example.com")
		bobBefore, _ := n.ReadMaildir("bob@example.com")
		carolBefore, _ := n.ReadMaildir("carol@example.net")

		// a.smith -> alice; sales -> alice + carol@partner.org (relay)
		msg1 := harness.NewMessage(outsider, "a.smith@example.com", "alias", "for alice")
		wantFinal(t, send(t, n.SMTP, harness.Envelope{From: outsider, To: []string{"a.smith@example.com"}, Data: msg1}))
		msg2 := harness.NewMessage(outsider, "sales@example.com", "sales", "for sales")
		wantFinal(t, send(t, n.SMTP, harness.Envelope{From: outsider, To: []string{"sales@example.com"}, Data: msg2}))
		// all-staff (internal list) from a trusted host: alice, bob, carol@example.net
		msg3 := harness.NewMessage("bob@example.com", "all-staff@example.com", "staff", "for everyone")
		wantFinal(t, send(t, n.SMTP, harness.Envelope{LocalAddr: harness.TrustedClient, From: "bob@example.com", To: []string{"all-staff@example.com"}, Data: msg3}))

		alice := n.WaitMaildir(t, "alice@example.com", len(aliceBefore)+3)
		bob := n.WaitMaildir(t, "bob@example.com", len(bobBefore)+1)
		carol := n.WaitMaildir(t, "carol@example.net", len(carolBefore)+1)
		sink := n.WaitSink(t, before+1)

		for _, m := range []*[]byte{&msg1, &msg2, &msg3} {
			if !containsMsg(alice, *m) {
				t.Errorf("alice's Maildir lacks:\n%s", *m)
			}
		}
		if !containsMsg(bob, msg3) {
			t.Errorf("bob's Maildir lacks the all-staff message")
		}
		if !containsMsg(carol, msg3) {
			t.Errorf("carol@example.net's Maildir lacks the all-staff message")
		}
		last := sink[len(sink)-1]
		if strings.Join(last.To, ",") != "carol@partner.org" || !bytes.HasSuffix(last.Data, msg2) {
			t.Errorf("sales@ should reach carol@partner.org at the next hop; sink got to %v:\n%s", last.To, last.Data)
		}
	})

	t.Run("sub-domains and outside domains are not served", func(t *testing.T) {
		tr := send(t, n.SMTP, harness.Envelope{From: outsider, To: []string{"x@sub.example.com", "x@sub.partner.org", "x@elsewhere.test"}})
		for i, r := range tr.Rcpt {
			if !strings.HasPrefix(r.Text(), "554 5.7.1 ") || !strings.Contains(r.Text(), "Relay access denied") {
				t.Errorf("RCPT #%d: got %q, want 554 5.7.1 ... Relay access denied", i, r.Text())
			}
		}
	})

	t.Run("IMAP and POP3 log in with the full address", func(t *testing.T) {
		msg := harness.NewMessage(outsider, "carol@example.net", "for imap", "read me")
		before, _ := n.ReadMaildir("carol@example.net")
		wantFinal(t, send(t, n.SMTP, harness.Envelope{From: outsider, To: []string{"carol@example.net"}, Data: msg}))
		want := len(n.WaitMaildir(t, "carol@example.net", len(before)+1))
		imap := lineSession(t, n.IMAP, "a1 LOGIN carol@example.net carolpass", "a2 STATUS INBOX (MESSAGES)", "a3 LOGOUT")
		if !strings.HasPrefix(imap[1], "a1 OK") {
			t.Errorf("IMAP LOGIN: %q", imap[1])
		}
		if !strings.HasPrefix(imap[2], "a2 OK") {
			t.Errorf("IMAP STATUS: %q", imap[2])
		}
		pop := lineSession(t, n.POP3, "USER carol@example.net", "PASS carolpass", "STAT", "QUIT")
		if got, w := pop[3], fmt.Sprintf("+OK %d ", want); !strings.HasPrefix(got, w) {
			t.Errorf("POP3 STAT: %q, want %q...", got, w)
		}
	})

	t.Run("submission wants STARTTLS, then AUTH", func(t *testing.T) {
		tr := send(t, n.Submission, harness.Envelope{From: "alice@example.com", To: []string{"bob@example.com"}})
		if got := tr.Mail.Text(); !strings.HasPrefix(got, "530 5.7.0 Must issue a STARTTLS command first") {
			t.Errorf("MAIL before STARTTLS: %q", got)
		}
		tr = send(t, n.Submission, harness.Envelope{StartTLS: true, From: "alice@example.com", To: []string{"bob@example.com"}})
		if got := tr.Rcpt[0].Text(); !strings.HasPrefix(got, "554 5.7.1 ") || !strings.Contains(got, "Client host rejected: Access denied") {
			t.Errorf("RCPT without AUTH: %q", got)
		}
		msg := harness.NewMessage("alice@example.com", "carol@example.net", "submitted", "via 587")
		carolBefore, _ := n.ReadMaildir("carol@example.net")
		tr = send(t, n.Submission, harness.Envelope{StartTLS: true, AuthUser: "alice@example.com", AuthPass: "alicepass",
			From: "alice@example.com", To: []string{"carol@example.net"}, Data: msg})
		if tr.Auth.Code != 235 {
			t.Fatalf("AUTH alice@example.com: %q, want 235", tr.Auth.Text())
		}
		wantFinal(t, tr)
		got := n.WaitMaildir(t, "carol@example.net", len(carolBefore)+1)
		if !containsMsg(got, msg) {
			t.Errorf("carol's Maildir lacks the submitted message")
		}
		// Last: a failed login makes Dovecot slow down this client.
		tr = send(t, n.Submission, harness.Envelope{StartTLS: true, AuthUser: "alice@example.com", AuthPass: "wrong", From: "alice@example.com"})
		if tr.Auth.Code != 535 {
			t.Errorf("AUTH with a wrong password: %q, want 535", tr.Auth.Text())
		}
	})
}

// lineSession sends each command and returns the server's first reply line
// to each (IMAP tagged commands return the tagged line).
func lineSession(t *testing.T, addr string, cmds ...string) []string {
	t.Helper()
	c, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(30 * time.Second))
	r := bufio.NewReader(c)
	readReply := func(tag string) string {
		for {
			l, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("%s: %v", addr, err)
			}
			l = strings.TrimRight(l, "\r\n")
			if tag == "" || strings.HasPrefix(l, tag+" ") {
				return l
			}
		}
	}
	var out []string
	out = append(out, readReply(""))
	for _, cmd := range cmds {
		fmt.Fprintf(c, "%s\r\n", cmd)
		tag := ""
		if f := strings.Fields(cmd); len(f) > 1 && strings.HasPrefix(f[0], "a") {
			tag = f[0]
		}
		out = append(out, readReply(tag))
	}
	return out
}

func send(t *testing.T, addr string, e harness.Envelope) harness.Transcript {
	t.Helper()
	tr, err := harness.Send(addr, e)
	if err != nil {
		t.Fatalf("SMTP session with %s: %v (transcript %+v)", addr, err, tr)
	}
	return tr
}

func wantFinal(t *testing.T, tr harness.Transcript) {
	t.Helper()
	if tr.Final.Code != 250 {
		t.Fatalf("message not accepted: MAIL %q RCPT %v DATA %q final %q", tr.Mail.Text(), tr.Rcpt, tr.DataCmd.Text(), tr.Final.Text())
	}
}

// checkDelivered: the stored message is the sent one (LF line ends), below
// the trace headers the delivery added.
func checkDelivered(t *testing.T, stored []byte, from, rcpt string, sent []byte) {
	t.Helper()
	if !bytes.HasSuffix(bytes.TrimRight(stored, "\n"), bytes.TrimRight(harness.LF(sent), "\n")) {
		t.Errorf("stored message does not end with the message sent:\n--- stored\n%s\n--- sent\n%s", stored, harness.LF(sent))
	}
	for _, h := range []string{"Return-Path: <" + from + ">", "Delivered-To: " + rcpt} {
		if !bytes.Contains(stored, []byte(h+"\n")) {
			t.Errorf("stored message lacks %q:\n%s", h, stored)
		}
	}
}

func containsMsg(ms []harness.Mail, sent []byte) bool {
	want := bytes.TrimRight(harness.LF(sent), "\n")
	for _, m := range ms {
		if bytes.HasSuffix(bytes.TrimRight(m.Data, "\n"), want) {
			return true
		}
	}
	return false
}
