package acl

import (
	"strings"
	"testing"

	"github.com/mailnode/mailnode/inventory"
)

// testInventory: one local domain with a list, one relay domain, a trusted
// network.
func testInventory(t testing.TB) *inventory.Inventory {
	t.Helper()
	inv, err := inventory.Parse([]byte(`
node:
  hostname: mx1.example.com
  addresses: [203.0.113.10]
  trusted_networks: [10.20.0.0/16]
unix_users: [root]
domains:
  - name: example.com
    mailboxes:
      - {user: alice, password: "{SHA512-CRYPT}$6$x", aliases: [a.smith]}
      - {user: bob, password: "{SHA512-CRYPT}$6$y"}
    lists:
      all-staff: [alice, bob]
  - name: partner.org
    class: relay
    nexthop: "[192.0.2.25]:25"
`), "acl_test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return inv
}

// TestMatrix checks the table of docs/design.md row by row: for each sender
// class and authorization, the reply to a local, a relay and an outside
// recipient ("" where the matrix accepts; "spam" where it accepts with the
// spam check on).
func TestMatrix(t *testing.T) {
	const (
		accept   = ""
		spam     = "spam"
		relayFor = "550 5.7.1 Sorry, relay for <frank@example.org> not permitted"
		authFor  = "550 5.7.1 Please authenticate for send mail from domain <example.com>"
		ownLocal = "550 5.7.1 Please use own mail service for send mail from <"
	)
	senders := map[inventory.Class]string{inventory.Local: "alice@example.com", inventory.Relay: "carol@partner.org", inventory.Outside: "eve@example.org"}
	rcpts := map[inventory.Class]string{inventory.Local: "bob@example.com", inventory.Relay: "dave@partner.org", inventory.Outside: "frank@example.org"}
	sessions := map[inventory.Auth]Envelope{
		inventory.AuthNone:  {ClientAddress: "198.51.100.7"},
		inventory.AuthSASL:  {ClientAddress: "198.51.100.7", SASLUsername: "alice@example.com"},
		inventory.AuthTrust: {ClientAddress: "10.20.1.1"},
	}
	own := func(c inventory.Class) string { return ownLocal + senders[c] + ">" }
	table := []struct {
		sender                inventory.Class
		auth                  []inventory.Auth
		local, relay, outside string
		reason                Reason
	}{
		{inventory.Outside, []inventory.Auth{inventory.AuthNone}, spam, accept, relayFor, ReasonInbound},
		{inventory.Local, []inventory.Auth{inventory.AuthNone}, authFor, authFor, authFor, ReasonAuthRequired},
		{inventory.Relay, []inventory.Auth{inventory.AuthNone}, own(inventory.Relay), own(inventory.Relay), own(inventory.Relay), ReasonForeignSender},
		{inventory.Local, []inventory.Auth{inventory.AuthSASL, inventory.AuthTrust}, accept, accept, accept, ReasonAuthorized},
		{inventory.Outside, []inventory.Auth{inventory.AuthSASL, inventory.AuthTrust}, own(inventory.Outside), own(inventory.Outside), own(inventory.Outside), ReasonForeignSender},
		{inventory.Relay, []inventory.Auth{inventory.AuthSASL, inventory.AuthTrust}, own(inventory.Relay), own(inventory.Relay), own(inventory.Relay), ReasonForeignSender},
	}
	inv := testInventory(t)
	seen := map[Cell]bool{}
	for _, row := range table {
		for _, a := range row.auth {
			for rc, want := range map[inventory.Class]string{inventory.Local: row.local, inventory.Relay: row.relay, inventory.Outside: row.outside} {
				env := sessions[a]
				env.Sender, env.Recipient = senders[row.sender], rcpts[rc]
				v := Decide(env, inv, Options{})
				cell := Cell{Sender: row.sender, Auth: a, Recipient: rc}
				seen[cell] = true
				if v.Cell != cell {
					t.Errorf("%s: cell %s", cell, v.Cell)
				}
				wantReason, wantAction, wantReply := row.reason, Accept, ""
				if strings.HasPrefix(want, "550 ") {
					wantAction, wantReply = Reject, want
				} else if row.reason == ReasonInbound && rc == inventory.Outside {
					t.Fatalf("%s: table accepts the relay attempt", cell)
				}
				if row.sender == inventory.Outside && a == inventory.AuthNone && rc == inventory.Outside {
					wantReason = ReasonRelayDenied
				}
				if v.Action != wantAction || v.Reply != wantReply || v.Reason != wantReason || v.SpamCheck != (want == spam) {
					t.Errorf("%s: %v %q %s spam=%v, want %v %q %s spam=%v", cell,
						v.Action, v.Reply, v.Reason, v.SpamCheck, wantAction, wantReply, wantReason, want == spam)
				}
			}
		}
	}
	if len(seen) != 27 {
		t.Errorf("%d cells covered, want 27", len(seen))
	}
}

// TestRefinements: internal lists, strict sender login, the null sender,
// unqualified addresses and echoed text.
func TestRefinements(t *testing.T) {
	inv := testInventory(t)
	none := Envelope{ClientAddress: "198.51.100.7"}
	sasl := Envelope{ClientAddress: "198.51.100.7", SASLUsername: "alice@example.com"}
	trust := Envelope{ClientAddress: "10.20.1.1"}
	with := func(e Envelope, from, to string) Envelope { e.Sender, e.Recipient = from, to; return e }
	strict := Options{StrictSenderLogin: true}
	for _, c := range []struct {
		name   string
		env    Envelope
		opts   Options
		reply  string
		reason Reason
		cell   string
	}{
		{"list from outside", with(none, "eve@example.org", "all-staff@example.com"), Options{},
			"550 5.7.1 Sorry, <all-staff@example.com> accepts mail from internal senders only", ReasonInternalList, "outside/none->local"},
		{"list from trusted local", with(trust, "bob@example.com", "All-Staff@Example.COM."), Options{}, "", ReasonAuthorized, "local/trust->local"},
		{"list from the null sender", with(none, "<>", "all-staff@example.com"), Options{},
			"550 5.7.1 Sorry, <all-staff@example.com> accepts mail from internal senders only", ReasonInternalList, "outside/none->local"},
		{"own alias, strict", with(sasl, "a.smith@example.com", "frank@example.org"), strict, "", ReasonAuthorized, "local/auth->outside"},
		{"another mailbox, strict", with(sasl, "bob@example.com", "frank@example.org"), strict,
			"550 5.7.1 Please use own mail service for send mail from <bob@example.com>", ReasonSenderLogin, "local/auth->outside"},
		{"another mailbox, domain rule", with(sasl, "bob@example.com", "frank@example.org"), Options{}, "", ReasonAuthorized, "local/auth->outside"},
		{"null sender, strict", with(sasl, "", "frank@example.org"), strict, "", ReasonAuthorized, "local/auth->outside"},
		{"trusted keeps the domain rule, strict", with(trust, "bob@example.com", "frank@example.org"), strict, "", ReasonAuthorized, "local/trust->outside"},
		{"null sender, unauthorized, to outside", with(none, " ", "frank@example.org"), Options{},
			"550 5.7.1 Sorry, relay for <frank@example.org> not permitted", ReasonRelayDenied, "outside/none->outside"},
		{"unqualified sender", with(none, "root", "frank@example.org"), Options{},
			"550 5.7.1 Please authenticate for send mail from domain <mx1.example.com>", ReasonAuthRequired, "local/none->outside"},
		{"unqualified recipient", with(none, "eve@example.org", "postmaster"), Options{}, "", ReasonInbound, "outside/none->local"},
		{"control characters echoed as ?", with(none, "eve@example.org", "a\tb\x7f@example.org"), Options{},
			"550 5.7.1 Sorry, relay for <a?b?@example.org> not permitted", ReasonRelayDenied, "outside/none->outside"},
		{"overlong address cut", with(none, "eve@example.org", strings.Repeat("x", 300)+"@example.org"), Options{},
			"550 5.7.1 Sorry, relay for <" + strings.Repeat("x", 253) + "...> not permitted", ReasonRelayDenied, "outside/none->outside"},
	} {
		t.Run(c.name, func(t *testing.T) {
			v := Decide(c.env, inv, c.opts)
			if v.Reply != c.reply || v.Reason != c.reason || v.Cell.String() != c.cell {
				t.Errorf("got %q %s %s, want %q %s %s", v.Reply, v.Reason, v.Cell, c.reply, c.reason, c.cell)
			}
			if (v.Action == Reject) != (c.reply != "") {
				t.Errorf("action %v with reply %q", v.Action, v.Reply)
			}
		})
	}
}

func TestOptionsFrom(t *testing.T) {
	inv := testInventory(t)
	if OptionsFrom(inv).StrictSenderLogin {
		t.Error("sender_login defaults to domain")
	}
	inv.Policy.SenderLogin = "strict"
	if !OptionsFrom(inv).StrictSenderLogin {
		t.Error("sender_login: strict not read")
	}
}

// TestVerdictDecideInPlace: the in-place form gives what Decide gives, and
// nothing of a previous verdict stays behind.
func TestVerdictDecideInPlace(t *testing.T) {
	inv := testInventory(t)
	var v Verdict
	for _, env := range []Envelope{
		{ClientAddress: "198.51.100.7", Sender: "eve@example.org", Recipient: "frank@example.org"},
		{ClientAddress: "198.51.100.7", Sender: "eve@example.org", Recipient: "bob@example.com"},
		{ClientAddress: "10.20.1.1", Sender: "alice@example.com", Recipient: "frank@example.org"},
	} {
		v.Decide(&env, inv, Options{})
		if want := Decide(env, inv, Options{}); v != want {
			t.Errorf("%+v: in place %+v, Decide %+v", env, v, want)
		}
	}
}
