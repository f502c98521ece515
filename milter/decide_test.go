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
	if !LocalSubmission("localhost", "127.0.0.1", "0", "") {
		t.Error("cleanup's pseudo client of a sendmail(1) submission not recognised")
	}
	for _, c := range []struct{ name, addr, port, resolve string }{
		{"localhost", "127.0.0.1", "25000", "OK"}, // smtpd, a loopback client
		{"localhost", "127.0.0.1", "0", "OK"},     // smtpd without a TCP peer
		{"localhost", "127.0.0.1", "", ""},        // no {client_port}
		{"evil", "127.0.0.1", "0", ""},
		{"localhost", "10.0.0.1", "0", ""},
		{"localhost", "::1", "0", ""},
	} {
		if LocalSubmission(c.name, c.addr, c.port, c.resolve) {
			t.Errorf("%+v taken for local submission", c)
		}
	}
}

// The client as Postfix 3.7 describes it with MAIL (values seen from its
// smtpd and cleanup), and what the connect event gave for the same client.
func TestClientFromMacros(t *testing.T) {
	for _, tc := range []struct {
		name   string
		macros map[string]string
		want   Client
	}{
		{"sendmail(1) through pickup and cleanup",
			map[string]string{"{client_addr}": "127.0.0.1", "{client_name}": "localhost", "{client_port}": "0"},
			Client{Addr: "127.0.0.1", Host: "localhost", Local: true}},
		{"smtpd, a loopback client that resolves",
			map[string]string{"{client_addr}": "127.0.0.1", "{client_name}": "localhost", "{client_port}": "47669", "{client_resolve}": "OK"},
			Client{Addr: "127.0.0.1", Host: "localhost"}},
		{"smtpd, a name that did not verify: the connect event's [addr]",
			map[string]string{"{client_addr}": "192.0.2.7", "{client_name}": "unknown", "{client_port}": "39083", "{client_resolve}": "TEMP"},
			Client{Addr: "192.0.2.7", Host: "[192.0.2.7]"}},
		{"smtpd over IPv6: no IPv6: prefix, Go's form",
			map[string]string{"{client_addr}": "IPv6:2001:DB8:0:0::1", "{client_name}": "mx.example.org", "{client_port}": "40000", "{client_resolve}": "OK"},
			Client{Addr: "2001:db8::1", Host: "mx.example.org"}},
		{"smtpd over IPv6, unknown name",
			map[string]string{"{client_addr}": "IPv6:2001:db8::7", "{client_name}": "unknown", "{client_port}": "40000", "{client_resolve}": "FAIL"},
			Client{Addr: "2001:db8::7", Host: "[2001:db8::7]"}},
		{"no macros", map[string]string{}, Client{}},
	} {
		got := ClientFromMacros(func(n string) string { return tc.macros[n] })
		if got != tc.want {
			t.Errorf("%s: %+v, want %+v", tc.name, got, tc.want)
		}
	}
}
