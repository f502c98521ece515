package milter

import (
	"strings"
	"testing"

	gomilter "github.com/d--j/go-milter"
	"github.com/mailnode/mailnode/acl"
	"github.com/mailnode/mailnode/milter/miltertest"
)

// TestDecideStrictHeaderFrom: with policy.sender_login strict, an
// authenticated session's From: is held to the login's own addresses,
// every address of every From: header, with the matrix's reply naming the
// first foreign one. Trusted clients, local submissions and domain mode
// keep the domain rule.
func TestDecideStrictHeaderFrom(t *testing.T) {
	inv := testInventory(t)
	has := func(d string) bool { return d == "example.com" || d == "example.net" }
	strict := acl.Options{StrictSenderLogin: true}
	alice := Envelope{AuthUser: "alice@example.com", ClientAddr: "198.51.100.1", Sender: "alice@example.com"}
	const foreign = "550 5.7.1 Please use own mail service for send mail from <"
	for _, tc := range []struct {
		name   string
		env    Envelope
		from   []string
		opts   acl.Options
		action Action
		reply  string
	}{
		{"own mailbox", alice, []string{" Alice <alice@example.com>"}, strict, Sign, ""},
		{"own mailbox, other case", alice, []string{" Alice@EXAMPLE.com"}, strict, Sign, ""},
		{"own alias", alice, []string{" a.smith@example.com"}, strict, Sign, ""},
		{"alias reaching only her mailbox", alice, []string{" postmaster@example.com"}, strict, Sign, ""},
		{"login with spaces around it", Envelope{AuthUser: " alice@example.com "}, []string{" alice@example.com"}, strict, Sign, ""},
		{"a colleague", alice, []string{" Bob <bob@example.com>"}, strict, Refuse, foreign + "bob@example.com>"},
		{"a colleague, as written", alice, []string{" Bob@Example.COM"}, strict, Refuse, foreign + "Bob@Example.COM>"},
		{"an alias of several mailboxes", alice, []string{" sales@example.com"}, strict, Refuse, foreign + "sales@example.com>"},
		{"another local domain", alice, []string{" carol@example.net"}, strict, Refuse, foreign + "carol@example.net>"},
		{"an outside address", alice, []string{" alice@gmail.test"}, strict, Refuse, foreign + "alice@gmail.test>"},
		{"two addresses, the second foreign", alice, []string{" alice@example.com, Bob <bob@example.com>"}, strict, Refuse, foreign + "bob@example.com>"},
		{"two addresses, both own", alice, []string{" alice@example.com, a.smith@example.com"}, strict, Pass, ""},
		{"two From headers, the second foreign", alice, []string{" alice@example.com", " bob@example.com"}, strict, Refuse, foreign + "bob@example.com>"},
		{"folded", alice, []string{" Bob\r\n <bob@example.com>"}, strict, Refuse, foreign + "bob@example.com>"},
		{"unreadable From", alice, []string{" bob at example.com"}, strict, Refuse, foreign + "bob at example.com>"},
		{"no From", alice, nil, strict, Pass, ""},
		{"domain mode: a colleague is signed", alice, []string{" bob@example.com"}, acl.Options{}, Sign, ""},
		{"trust host keeps the domain rule", Envelope{ClientAddr: "10.20.1.1", Sender: "bob@example.com"}, []string{" bob@example.com"}, strict, Sign, ""},
		{"local submission keeps the domain rule", Envelope{LocalSubmission: true, ClientAddr: "127.0.0.1"}, []string{" bob@example.com"}, strict, Sign, ""},
		{"unauthorized inbound is not held", Envelope{ClientAddr: "198.51.100.1", Sender: "x@gmail.test", LocalRcpt: true}, []string{" bob@example.com"}, strict, Verify, ""},
	} {
		d := Decide(inv, tc.env, tc.from, has, tc.opts)
		if d.Action != tc.action || d.Reply != tc.reply {
			t.Errorf("%s: %v %q (%s), want %v %q", tc.name, d.Action, d.Reply, d.Reason, tc.action, tc.reply)
		}
		if tc.action == Refuse && (d.Reason != ReasonForeignFrom || !acl.SafeReply(d.Reply)) {
			t.Errorf("%s: reason %q, reply %q not one of the matrix's", tc.name, d.Reason, d.Reply)
		}
	}
}

// TestClientStrictHeaderFrom: over the milter protocol, a colleague's
// From: is refused at the end of the message with the exact text and
// nothing is signed; the own From: is signed. In shadow mode the same
// message is signed as the domain rule says and the log tells what
// enforce mode would have answered.
func TestClientStrictHeaderFrom(t *testing.T) {
	const want = "550 5.7.1 Please use own mail service for send mail from <bob@example.com>"
	for _, shadow := range []bool{false, true} {
		f, logs := testFilter(t)
		f.Options.StrictSenderLogin = true
		f.Shadow = shadow
		c := miltertest.NewClient("unix", startServer(t, f, nil))

		r, err := miltertest.Submit(c, localMessage("alice@example.com"))
		if err != nil {
			t.Fatal(err)
		}
		if r.Action.Type != gomilter.ActionAccept || countMods(r, gomilter.ActionInsertHeader, "DKIM-Signature") != 2 {
			t.Errorf("shadow %v, own From: %+v, mods %v", shadow, r.Action, r.Mods)
		}

		m := localMessage("bob@example.com")
		m.Headers[0].Value = " Bob <bob@example.com>"
		r, err = miltertest.Submit(c, m)
		if err != nil {
			t.Fatal(err)
		}
		signs := countMods(r, gomilter.ActionInsertHeader, "DKIM-Signature")
		if !shadow {
			if r.Action.Type != gomilter.ActionRejectWithCode || r.Action.SMTPCode != 550 || r.Action.SMTPReply != want || signs != 0 {
				t.Errorf("colleague's From: %+v, %d signatures; want %q and none", r.Action, signs, want)
			}
			if !strings.Contains(logs.String(), `action=refuse reason="sender_login strict: a From address the login does not own" user=alice@example.com cell=local/auth->relay+outside reply="`+want+`"`) {
				t.Errorf("decision log:\n%s", logs)
			}
			if strings.Contains(logs.String(), "would_reject") {
				t.Errorf("enforce mode logs would_reject:\n%s", logs)
			}
			continue
		}
		if r.Action.Type != gomilter.ActionAccept || signs != 2 {
			t.Errorf("shadow, colleague's From: %+v, %d signatures; want accepted and signed", r.Action, signs)
		}
		if !strings.Contains(logs.String(), `action=sign reason="authenticated sender, From domain local" user=alice@example.com`) ||
			!strings.Contains(logs.String(), `mode=shadow cell=local/auth->relay+outside would_reason="sender_login strict: a From address the login does not own" would_reject="`+want+`"`) {
			t.Errorf("shadow decision log:\n%s", logs)
		}
	}
}
