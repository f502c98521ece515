package milter

import (
	"context"
	"strings"
	"testing"

	"github.com/d--j/go-milter/mailfilter"
	"github.com/d--j/go-milter/mailfilter/addr"
	"github.com/d--j/go-milter/mailfilter/testtrx"
)

func TestDecide(t *testing.T) {
	inv := testInventory(t)
	has := func(d string) bool { return d == "example.com" || d == "example.net" }
	from := func(s string) []string { return []string{" " + s} }
	cases := []struct {
		name   string
		env    Envelope
		from   []string
		action Action
		reason Reason
	}{
		{"sasl, local From", Envelope{AuthUser: "alice@example.com", ClientAddr: "198.51.100.1"}, from("Alice <alice@example.com>"), Sign, ReasonSignAuth},
		{"trust, local From", Envelope{ClientAddr: "10.20.1.1"}, from("bob@example.com"), Sign, ReasonSignTrust},
		{"trust, IPv4-mapped", Envelope{ClientAddr: "::ffff:10.20.1.1"}, from("bob@example.com"), Sign, ReasonSignTrust},
		{"local submission", Envelope{LocalSubmission: true, ClientAddr: "127.0.0.1"}, from("root@example.com"), Sign, ReasonSignLocal},
		{"From case-insensitive, encoded name", Envelope{AuthUser: "a"}, from("=?utf-8?q?B=C3=B6b?= <Bob@EXAMPLE.COM>"), Sign, ReasonSignAuth},
		{"From in an unknown charset", Envelope{AuthUser: "a"}, from("=?x-unknown?q?abc?= <bob@example.com>"), Sign, ReasonSignAuth},
		{"sasl, outside From", Envelope{AuthUser: "alice@example.com"}, from("alice@gmail.test"), Pass, ReasonFromNotLocal},
		{"sasl, relay From", Envelope{AuthUser: "alice@example.com"}, from("carol@partner.org"), Pass, ReasonFromNotLocal},
		{"sasl, local sub-domain From", Envelope{AuthUser: "alice@example.com"}, from("x@sub.example.com"), Pass, ReasonFromNotLocal},
		{"sasl, hostname domain without selectors", Envelope{AuthUser: "a"}, from("root@mx1.example.com"), Pass, ReasonNoSelectors},
		{"sasl, no From", Envelope{AuthUser: "a"}, nil, Pass, ReasonBadFrom},
		{"sasl, two From", Envelope{AuthUser: "a"}, []string{" a@example.com", " b@example.com"}, Pass, ReasonBadFrom},
		{"sasl, From with two mailboxes", Envelope{AuthUser: "a"}, from("a@example.com, b@example.com"), Pass, ReasonBadFrom},
		{"outside to local", Envelope{ClientAddr: "198.51.100.1", Sender: "x@gmail.test", LocalRcpt: true}, from("alice@example.com"), Verify, ReasonInbound},
		{"null sender to local", Envelope{ClientAddr: "198.51.100.1", Sender: "", LocalRcpt: true}, from("MAILER-DAEMON@gmail.test"), Verify, ReasonInbound},
		{"outside to relay", Envelope{ClientAddr: "198.51.100.1", Sender: "x@gmail.test"}, from("x@gmail.test"), Pass, ReasonNotInbound},
		{"local sender unauthorized", Envelope{ClientAddr: "198.51.100.1", Sender: "alice@example.com", LocalRcpt: true}, from("alice@example.com"), Pass, ReasonNotInbound},
	}
	for _, tc := range cases {
		d := Decide(inv, tc.env, tc.from, has)
		if d.Action != tc.action || d.Reason != tc.reason {
			t.Errorf("%s: %v (%s), want %v (%s)", tc.name, d.Action, d.Reason, tc.action, tc.reason)
		}
	}
}

func TestLocalSubmission(t *testing.T) {
	if !LocalSubmission("localhost", "tcp4", 0, "127.0.0.1") {
		t.Error("Postfix's non-SMTP connect not recognised")
	}
	for _, c := range []struct {
		host, fam string
		port      uint16
		addr      string
	}{{"localhost", "tcp4", 25000, "127.0.0.1"}, {"evil", "tcp4", 0, "127.0.0.1"}, {"localhost", "tcp4", 0, "10.0.0.1"}, {"localhost", "unix", 0, "127.0.0.1"}} {
		if LocalSubmission(c.host, c.fam, c.port, c.addr) {
			t.Errorf("%+v taken for local submission", c)
		}
	}
}

// The mailfilter layer: the same Transaction driven from a testtrx.Trx.
func TestMailfilterSigns(t *testing.T) {
	f, _ := testFilter(t)
	trx := (&testtrx.Trx{}).
		SetConnect(mailfilter.Connect{Host: "c.example", Family: "tcp4", Port: 4000, Addr: "198.51.100.7"}).
		SetMailFrom(addr.NewMailFrom("alice@example.com", "", "smtp", "alice@example.com", "PLAIN")).
		SetRcptTosList("carol@partner.org").
		SetHeadersRaw([]byte("From: Alice <alice@example.com>\r\nTo: carol@partner.org\r\nSubject: hi\r\n\r\n")).
		SetBodyBytes([]byte("Hello\r\n"))
	dec, err := f.DecisionFunc()(context.Background(), trx)
	if err != nil || dec != mailfilter.Accept {
		t.Fatalf("decision %v, %v", dec, err)
	}
	var sigs int
	for _, m := range trx.Modifications() {
		if m.Kind == testtrx.InsertHeader && m.Name == "DKIM-Signature" {
			sigs++
			if !strings.Contains(m.Value, "d=example.com;") || !strings.Contains(m.Value, "h=from:from:to:subject;") {
				t.Errorf("signature %q", m.Value)
			}
		}
	}
	if sigs != 2 {
		t.Errorf("%d signatures, want 2: %v", sigs, trx.Modifications())
	}
}

func TestMailfilterInbound(t *testing.T) {
	f, _ := testFilter(t)
	trx := (&testtrx.Trx{}).
		SetConnect(mailfilter.Connect{Host: "mx.sender.test", Family: "tcp4", Port: 4000, Addr: "198.51.100.7"}).
		SetMailFrom(addr.NewMailFrom("x@sender.test", "", "smtp", "", "")).
		SetRcptTosList("alice@example.com").
		SetHeadersRaw([]byte("Authentication-Results: mx1.example.com; dkim=pass\r\nFrom: x@sender.test\r\nSubject: hi\r\n\r\n")).
		SetBodyBytes([]byte("Hello\r\n"))
	if _, err := f.DecisionFunc()(context.Background(), trx); err != nil {
		t.Fatal(err)
	}
	var ar []string
	for _, m := range trx.Modifications() {
		if m.Name == "Authentication-Results" {
			kind := map[testtrx.ModificationKind]string{testtrx.ChangeHeader: "ChangeHeader", testtrx.InsertHeader: "InsertHeader"}[m.Kind]
			ar = append(ar, kind+" "+strings.Join(strings.Fields(m.Value), " "))
		}
	}
	want := []string{"ChangeHeader ", "InsertHeader mx1.example.com; dkim=none"}
	if strings.Join(ar, "|") != strings.Join(want, "|") {
		t.Errorf("A-R modifications %q, want %q", ar, want)
	}
}
