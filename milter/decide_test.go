package milter

import (
	"testing"

	"github.com/mailnode/mailnode/acl"
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
		d := Decide(inv, tc.env, tc.from, has, acl.Options{})
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
