package policy

import (
	"strings"
	"testing"

	"github.com/mailnode/mailnode/acl"
	"github.com/mailnode/mailnode/inventory"
)

func loadInventory(t testing.TB) *inventory.Inventory {
	t.Helper()
	inv, err := inventory.Load("testdata/inventory.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return inv
}

// Sessions of the three authorization states.
const (
	untrustedClient = "198.51.100.7"
	trustedClient   = "10.20.1.1"
)

type session struct {
	client, sasl string
}

var (
	none  = session{client: untrustedClient}
	auth  = session{client: untrustedClient, sasl: "alice@example.com"}
	trust = session{client: trustedClient}
)

func rcptRequest(s session, sender, rcpt string) Request {
	return Request{
		Request: "smtpd_access_policy", ProtocolState: "RCPT", ProtocolName: "ESMTP",
		ClientAddress: s.client, ClientName: "client.example.net", SASLUsername: s.sasl,
		Sender: sender, Recipient: rcpt, QueueID: "", Instance: "1.2.3",
	}
}

const (
	dunno = "DUNNO"
	// the matrix's reply texts, written out as docs/design.md has them
	authLocal   = "550 5.7.1 Please authenticate for send mail from domain <example.com>"
	ownRelay    = "550 5.7.1 Please use own mail service for send mail from <carol@partner.org>"
	ownOutside  = "550 5.7.1 Please use own mail service for send mail from <eve@example.org>"
	relayFrank  = "550 5.7.1 Sorry, relay for <frank@example.org> not permitted"
	listRefused = "550 5.7.1 Sorry, <all-staff@example.com> accepts mail from internal senders only"
)

const (
	localSender   = "alice@example.com"
	relaySender   = "carol@partner.org"
	outsideSender = "eve@example.org"
	localRcpt     = "bob@example.com"
	relayRcpt     = "dave@partner.org"
	outsideRcpt   = "frank@example.org"
)

type cellCase struct {
	name        string
	s           session
	sender      string
	rcpt        string
	wantCell    string
	wantReply   string
	wantReason  Reason
	wantSpamChk bool
}

// The 27 cells of docs/design.md's matrix: 3 sender classes x none/auth/trust x 3
// recipient classes, each with its exact reply.
var matrixCases = []cellCase{
	// outside sender, no auth/trust: inbound mail, and the relay attempt.
	{"outside/none->local", none, outsideSender, localRcpt, "outside/none->local", dunno, acl.ReasonInbound, true},
	{"outside/none->relay", none, outsideSender, relayRcpt, "outside/none->relay", dunno, acl.ReasonInbound, false},
	{"outside/none->outside", none, outsideSender, outsideRcpt, "outside/none->outside", relayFrank, acl.ReasonRelayDenied, false},
	// local sender, no auth/trust: must authenticate, whatever the recipient.
	{"local/none->local", none, localSender, localRcpt, "local/none->local", authLocal, acl.ReasonAuthRequired, false},
	{"local/none->relay", none, localSender, relayRcpt, "local/none->relay", authLocal, acl.ReasonAuthRequired, false},
	{"local/none->outside", none, localSender, outsideRcpt, "local/none->outside", authLocal, acl.ReasonAuthRequired, false},
	// relay sender, no auth/trust: its own mail service sends its mail.
	{"relay/none->local", none, relaySender, localRcpt, "relay/none->local", ownRelay, acl.ReasonForeignSender, false},
	{"relay/none->relay", none, relaySender, relayRcpt, "relay/none->relay", ownRelay, acl.ReasonForeignSender, false},
	{"relay/none->outside", none, relaySender, outsideRcpt, "relay/none->outside", ownRelay, acl.ReasonForeignSender, false},
	// local sender, authenticated: everything goes, no spam check.
	{"local/auth->local", auth, localSender, localRcpt, "local/auth->local", dunno, acl.ReasonAuthorized, false},
	{"local/auth->relay", auth, localSender, relayRcpt, "local/auth->relay", dunno, acl.ReasonAuthorized, false},
	{"local/auth->outside", auth, localSender, outsideRcpt, "local/auth->outside", dunno, acl.ReasonAuthorized, false},
	// local sender, trusted host: the same.
	{"local/trust->local", trust, localSender, localRcpt, "local/trust->local", dunno, acl.ReasonAuthorized, false},
	{"local/trust->relay", trust, localSender, relayRcpt, "local/trust->relay", dunno, acl.ReasonAuthorized, false},
	{"local/trust->outside", trust, localSender, outsideRcpt, "local/trust->outside", dunno, acl.ReasonAuthorized, false},
	// outside sender, authenticated or trusted: not ours to send.
	{"outside/auth->local", auth, outsideSender, localRcpt, "outside/auth->local", ownOutside, acl.ReasonForeignSender, false},
	{"outside/auth->relay", auth, outsideSender, relayRcpt, "outside/auth->relay", ownOutside, acl.ReasonForeignSender, false},
	{"outside/auth->outside", auth, outsideSender, outsideRcpt, "outside/auth->outside", ownOutside, acl.ReasonForeignSender, false},
	{"outside/trust->local", trust, outsideSender, localRcpt, "outside/trust->local", ownOutside, acl.ReasonForeignSender, false},
	{"outside/trust->relay", trust, outsideSender, relayRcpt, "outside/trust->relay", ownOutside, acl.ReasonForeignSender, false},
	{"outside/trust->outside", trust, outsideSender, outsideRcpt, "outside/trust->outside", ownOutside, acl.ReasonForeignSender, false},
	// relay sender, authenticated or trusted: the same.
	{"relay/auth->local", auth, relaySender, localRcpt, "relay/auth->local", ownRelay, acl.ReasonForeignSender, false},
	{"relay/auth->relay", auth, relaySender, relayRcpt, "relay/auth->relay", ownRelay, acl.ReasonForeignSender, false},
	{"relay/auth->outside", auth, relaySender, outsideRcpt, "relay/auth->outside", ownRelay, acl.ReasonForeignSender, false},
	{"relay/trust->local", trust, relaySender, localRcpt, "relay/trust->local", ownRelay, acl.ReasonForeignSender, false},
	{"relay/trust->relay", trust, relaySender, relayRcpt, "relay/trust->relay", ownRelay, acl.ReasonForeignSender, false},
	{"relay/trust->outside", trust, relaySender, outsideRcpt, "relay/trust->outside", ownRelay, acl.ReasonForeignSender, false},
}

func checkDecision(t *testing.T, d Decision, c cellCase) {
	t.Helper()
	if d.Reply != c.wantReply {
		t.Errorf("reply %q, want %q", d.Reply, c.wantReply)
	}
	if c.wantCell != "" && d.Cell.String() != c.wantCell {
		t.Errorf("cell %s, want %s", d.Cell, c.wantCell)
	}
	if d.Reason != c.wantReason {
		t.Errorf("reason %s, want %s", d.Reason, c.wantReason)
	}
	if d.SpamCheck != c.wantSpamChk {
		t.Errorf("spam check %v, want %v", d.SpamCheck, c.wantSpamChk)
	}
	wantAction := Reject
	if c.wantReply == dunno {
		wantAction = Dunno
	}
	if d.Action != wantAction {
		t.Errorf("action %v, want %v", d.Action, wantAction)
	}
}

func TestMatrix27Cells(t *testing.T) {
	inv := loadInventory(t)
	if len(matrixCases) != 27 {
		t.Fatalf("%d cases, want 27", len(matrixCases))
	}
	seen := map[string]bool{}
	for _, c := range matrixCases {
		seen[c.wantCell] = true
		t.Run(strings.ReplaceAll(c.name, "/", "_"), func(t *testing.T) {
			d := Decide(rcptRequest(c.s, c.sender, c.rcpt), inv, Options{})
			checkDecision(t, d, c)
			if d.Stage != "RCPT" {
				t.Errorf("stage %q", d.Stage)
			}
		})
	}
	if len(seen) != 27 {
		t.Errorf("only %d distinct cells covered", len(seen))
	}
}

func TestDecideCases(t *testing.T) {
	inv := loadInventory(t)
	v6trusted := session{client: "2001:db8:1::25"}
	cases := []struct {
		cellCase
		req func(Request) Request
	}{
		// internal lists
		{cellCase{"list from outside", none, outsideSender, "all-staff@example.com", "outside/none->local", listRefused, acl.ReasonInternalList, false}, nil},
		{cellCase{"list from authenticated local", auth, localSender, "all-staff@example.com", "local/auth->local", dunno, acl.ReasonAuthorized, false}, nil},
		{cellCase{"list from trusted local", trust, localSender, "all-staff@example.com", "local/trust->local", dunno, acl.ReasonAuthorized, false}, nil},
		{cellCase{"list from unauthenticated local", none, localSender, "all-staff@example.com", "local/none->local", authLocal, acl.ReasonAuthRequired, false}, nil},
		{cellCase{"list from relay", none, relaySender, "all-staff@example.com", "relay/none->local", ownRelay, acl.ReasonForeignSender, false}, nil},
		{cellCase{"list from authenticated outside", auth, outsideSender, "all-staff@example.com", "outside/auth->local", ownOutside, acl.ReasonForeignSender, false}, nil},
		{cellCase{"list, any case and trailing dot", none, outsideSender, "All-Staff@EXAMPLE.com.", "outside/none->local",
			"550 5.7.1 Sorry, <All-Staff@EXAMPLE.com.> accepts mail from internal senders only", acl.ReasonInternalList, false}, nil},
		{cellCase{"list in IDN domain", none, outsideSender, "team@bücher.example", "outside/none->local",
			"550 5.7.1 Sorry, <team@bücher.example> accepts mail from internal senders only", acl.ReasonInternalList, false}, nil},
		{cellCase{"list in IDN domain, punycode", auth, localSender, "team@xn--bcher-kva.example", "local/auth->local", dunno, acl.ReasonAuthorized, false}, nil},
		{cellCase{"list from the null sender", none, "", "all-staff@example.com", "outside/none->local", listRefused, acl.ReasonInternalList, false}, nil},
		{cellCase{"list from the null sender, trusted", trust, "", "all-staff@example.com", "local/trust->local", dunno, acl.ReasonAuthorized, false}, nil},
		// an alias is not a list
		{cellCase{"alias from outside", none, outsideSender, "sales@example.com", "outside/none->local", dunno, acl.ReasonInbound, true}, nil},

		// the null sender
		{cellCase{"null sender, untrusted, to local", none, "", localRcpt, "outside/none->local", dunno, acl.ReasonInbound, true}, nil},
		{cellCase{"null sender, untrusted, to relay", none, "", relayRcpt, "outside/none->relay", dunno, acl.ReasonInbound, false}, nil},
		{cellCase{"null sender, untrusted, to outside", none, "", outsideRcpt, "outside/none->outside", relayFrank, acl.ReasonRelayDenied, false}, nil},
		{cellCase{"null sender, trusted, to outside", trust, "", outsideRcpt, "local/trust->outside", dunno, acl.ReasonAuthorized, false}, nil},
		{cellCase{"null sender, authenticated, to outside", auth, "", outsideRcpt, "local/auth->outside", dunno, acl.ReasonAuthorized, false}, nil},
		{cellCase{"null sender written <>", none, "<>", outsideRcpt, "outside/none->outside", relayFrank, acl.ReasonRelayDenied, false}, nil},

		// case, trailing dots, IDN
		{cellCase{"upper-case local sender", none, "ALICE@EXAMPLE.COM", outsideRcpt, "local/none->outside", authLocal, acl.ReasonAuthRequired, false}, nil},
		{cellCase{"trailing-dot local sender", none, "alice@example.com.", outsideRcpt, "local/none->outside", authLocal, acl.ReasonAuthRequired, false}, nil},
		{cellCase{"upper-case relay sender echoed as given", none, "Carol@Partner.ORG.", localRcpt, "relay/none->local",
			"550 5.7.1 Please use own mail service for send mail from <Carol@Partner.ORG.>", acl.ReasonForeignSender, false}, nil},
		{cellCase{"upper-case local recipient", none, outsideSender, "BOB@Example.Com.", "outside/none->local", dunno, acl.ReasonInbound, true}, nil},
		{cellCase{"relay recipient, trailing dot", none, outsideSender, "dave@PARTNER.org.", "outside/none->relay", dunno, acl.ReasonInbound, false}, nil},
		{cellCase{"IDN sender, unicode", none, "kurt@Bücher.Example", outsideRcpt, "local/none->outside",
			"550 5.7.1 Please authenticate for send mail from domain <xn--bcher-kva.example>", acl.ReasonAuthRequired, false}, nil},
		{cellCase{"IDN sender, punycode", none, "kurt@XN--BCHER-KVA.example", outsideRcpt, "local/none->outside",
			"550 5.7.1 Please authenticate for send mail from domain <xn--bcher-kva.example>", acl.ReasonAuthRequired, false}, nil},
		{cellCase{"IDN recipient", none, outsideSender, "kurt@bücher.example.", "outside/none->local", dunno, acl.ReasonInbound, true}, nil},
		{cellCase{"outside IDN recipient", none, outsideSender, "x@bücher.test", "outside/none->outside",
			"550 5.7.1 Sorry, relay for <x@bücher.test> not permitted", acl.ReasonRelayDenied, false}, nil},

		// sub-domains are outside unless listed
		{cellCase{"sub-domain of local recipient", none, outsideSender, "bob@sub.example.com", "outside/none->outside",
			"550 5.7.1 Sorry, relay for <bob@sub.example.com> not permitted", acl.ReasonRelayDenied, false}, nil},
		{cellCase{"sub-domain of relay recipient", none, outsideSender, "x@mx.partner.org", "outside/none->outside",
			"550 5.7.1 Sorry, relay for <x@mx.partner.org> not permitted", acl.ReasonRelayDenied, false}, nil},
		{cellCase{"sub-domain of local sender, authenticated", auth, "alice@mail.example.com", outsideRcpt, "outside/auth->outside",
			"550 5.7.1 Please use own mail service for send mail from <alice@mail.example.com>", acl.ReasonForeignSender, false}, nil},
		{cellCase{"local domain as suffix", none, outsideSender, "x@notexample.com", "outside/none->outside",
			"550 5.7.1 Sorry, relay for <x@notexample.com> not permitted", acl.ReasonRelayDenied, false}, nil},
		{cellCase{"local domain as prefix", none, outsideSender, "x@example.com.evil.test", "outside/none->outside",
			"550 5.7.1 Sorry, relay for <x@example.com.evil.test> not permitted", acl.ReasonRelayDenied, false}, nil},

		// the node's host name is local (unix users); unqualified addresses get it
		{cellCase{"unix user at host name", none, outsideSender, "root@mx1.example.com", "outside/none->local", dunno, acl.ReasonInbound, true}, nil},
		{cellCase{"unqualified recipient", none, outsideSender, "postmaster", "outside/none->local", dunno, acl.ReasonInbound, true}, nil},
		{cellCase{"unqualified sender, untrusted", none, "root", outsideRcpt, "local/none->outside",
			"550 5.7.1 Please authenticate for send mail from domain <mx1.example.com>", acl.ReasonAuthRequired, false}, nil},
		{cellCase{"unqualified sender, trusted", trust, "root", outsideRcpt, "local/trust->outside", dunno, acl.ReasonAuthorized, false}, nil},
		{cellCase{"address literal recipient", none, outsideSender, "x@[203.0.113.10]", "outside/none->outside",
			"550 5.7.1 Sorry, relay for <x@[203.0.113.10]> not permitted", acl.ReasonRelayDenied, false}, nil},

		// client addresses
		{cellCase{"IPv6 trusted client", v6trusted, localSender, outsideRcpt, "local/trust->outside", dunno, acl.ReasonAuthorized, false}, nil},
		{cellCase{"IPv6 untrusted client", session{client: "2001:db8:2::25"}, localSender, outsideRcpt, "local/none->outside", authLocal, acl.ReasonAuthRequired, false}, nil},
		{cellCase{"IPv4-mapped trusted client", session{client: "::ffff:10.20.3.4"}, localSender, outsideRcpt, "local/trust->outside", dunno, acl.ReasonAuthorized, false}, nil},
		{cellCase{"single trusted address", session{client: "192.0.2.7"}, localSender, outsideRcpt, "local/trust->outside", dunno, acl.ReasonAuthorized, false}, nil},
		{cellCase{"next to the single trusted address", session{client: "192.0.2.8"}, localSender, outsideRcpt, "local/none->outside", authLocal, acl.ReasonAuthRequired, false}, nil},
		{cellCase{"missing client address is never trusted", session{}, localSender, outsideRcpt, "local/none->outside", authLocal, acl.ReasonAuthRequired, false}, nil},
		{cellCase{"unparsable client address", session{client: "unknown"}, localSender, outsideRcpt, "local/none->outside", authLocal, acl.ReasonAuthRequired, false}, nil},
		{cellCase{"loopback is not trusted unless listed", session{client: "127.0.0.1"}, localSender, outsideRcpt, "local/none->outside", authLocal, acl.ReasonAuthRequired, false}, nil},
		{cellCase{"SASL from an untrusted IPv6 client", session{client: "2001:db8:2::25", sasl: "bob@example.com"}, localSender, outsideRcpt, "local/auth->outside", dunno, acl.ReasonAuthorized, false}, nil},

		// replies stay one clean line
		{cellCase{"control characters in an echoed address", none, outsideSender, "a\tb\x7f@example.org", "outside/none->outside",
			"550 5.7.1 Sorry, relay for <a?b?@example.org> not permitted", acl.ReasonRelayDenied, false}, nil},
		{cellCase{"overlong echoed address", none, outsideSender, strings.Repeat("x", 300) + "@example.org", "outside/none->outside",
			"550 5.7.1 Sorry, relay for <" + strings.Repeat("x", 253) + "...> not permitted", acl.ReasonRelayDenied, false}, nil},

		// protocol states other than RCPT
		{cellCase{"MAIL state", none, localSender, "", "", dunno, ReasonNotRcpt, false},
			func(r Request) Request { r.ProtocolState = "MAIL"; return r }},
		{cellCase{"DATA state", none, outsideSender, outsideRcpt, "", dunno, ReasonNotRcpt, false},
			func(r Request) Request { r.ProtocolState = "DATA"; return r }},
		{cellCase{"END-OF-MESSAGE state", none, outsideSender, outsideRcpt, "", dunno, ReasonNotRcpt, false},
			func(r Request) Request { r.ProtocolState = "END-OF-MESSAGE"; return r }},
		{cellCase{"missing state decides as RCPT", none, outsideSender, outsideRcpt, "outside/none->outside", relayFrank, acl.ReasonRelayDenied, false},
			func(r Request) Request { r.ProtocolState = ""; return r }},
		{cellCase{"lower-case rcpt state", none, outsideSender, outsideRcpt, "outside/none->outside", relayFrank, acl.ReasonRelayDenied, false},
			func(r Request) Request { r.ProtocolState = "rcpt"; return r }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			req := rcptRequest(c.s, c.sender, c.rcpt)
			if c.req != nil {
				req = c.req(req)
			}
			checkDecision(t, Decide(req, inv, OptionsFrom(inv)), c.cellCase)
		})
	}
}

func TestStrictSenderLogin(t *testing.T) {
	inv := loadInventory(t)
	if OptionsFrom(inv).StrictSenderLogin {
		t.Fatal("sender_login defaults to domain")
	}
	strict := Options{StrictSenderLogin: true}
	own := func(s string) string { return "550 5.7.1 Please use own mail service for send mail from <" + s + ">" }
	for _, c := range []struct {
		name, sasl, client, sender string
		want                       string
		reason                     Reason
	}{
		{"own mailbox", "alice@example.com", untrustedClient, "alice@example.com", dunno, acl.ReasonAuthorized},
		{"own mailbox, other case", "Alice@Example.COM", untrustedClient, "ALICE@example.com.", dunno, acl.ReasonAuthorized},
		{"own alias", "alice@example.com", untrustedClient, "a.smith@example.com", dunno, acl.ReasonAuthorized},
		{"domain alias reaching only her", "alice@example.com", untrustedClient, "postmaster@example.com", dunno, acl.ReasonAuthorized},
		{"another user's mailbox", "alice@example.com", untrustedClient, "bob@example.com", own("bob@example.com"), acl.ReasonSenderLogin},
		{"an alias with several targets", "alice@example.com", untrustedClient, "sales@example.com", own("sales@example.com"), acl.ReasonSenderLogin},
		{"a list", "alice@example.com", untrustedClient, "all-staff@example.com", own("all-staff@example.com"), acl.ReasonSenderLogin},
		{"another local domain", "alice@example.com", untrustedClient, "kurt@bücher.example", own("kurt@bücher.example"), acl.ReasonSenderLogin},
		{"login not in the inventory", "mallory@example.com", untrustedClient, "alice@example.com", own("alice@example.com"), acl.ReasonSenderLogin},
		{"the null sender", "alice@example.com", untrustedClient, "", dunno, acl.ReasonAuthorized},
		{"trusted client keeps the domain rule", "", trustedClient, "bob@example.com", dunno, acl.ReasonAuthorized},
		{"outside sender stays foreign", "alice@example.com", untrustedClient, outsideSender, ownOutside, acl.ReasonForeignSender},
	} {
		t.Run(c.name, func(t *testing.T) {
			req := rcptRequest(session{client: c.client, sasl: c.sasl}, c.sender, outsideRcpt)
			d := Decide(req, inv, strict)
			if d.Reply != c.want || d.Reason != c.reason {
				t.Errorf("got %q (%s), want %q (%s)", d.Reply, d.Reason, c.want, c.reason)
			}
			// without strict every local sender is fine for an authorized session
			if c.reason == acl.ReasonSenderLogin {
				if d := Decide(req, inv, Options{}); d.Reply != dunno {
					t.Errorf("sender_login domain: got %q", d.Reply)
				}
			}
		})
	}
}

func TestOptionsFromStrictInventory(t *testing.T) {
	inv := loadInventory(t)
	inv.Policy.SenderLogin = "strict"
	if !OptionsFrom(inv).StrictSenderLogin {
		t.Error("sender_login: strict not read")
	}
}
