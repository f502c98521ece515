package acl

import "testing"

func TestSafeReply(t *testing.T) {
	for _, r := range []string{
		"DUNNO",
		"450 4.7.1 Greylisted, please try again in 300 seconds",
		"450 4.7.1 Rate limit exceeded for <alice@example.com>, try again later",
		"550 5.7.1 Sorry, relay for <victim@elsewhere.test> not permitted",
		"550 5.7.1 Please authenticate for send mail from domain <example.com>",
		"550 5.7.1 Please use own mail service for send mail from <x@partner.org>",
		"550 5.7.1 Sorry, <all-staff@example.com> accepts mail from internal senders only",
	} {
		if !SafeReply(r) {
			t.Errorf("refused %q", r)
		}
	}
	for _, r := range []string{
		"", "OK", "ok", "Ok", "oK", " OK", "OK ", "dunno", "PERMIT", "permit", "REJECT", "REJECT no",
		"DEFER_IF_PERMIT x", "PREPEND X-Foo: bar", "FILTER smtp:[127.0.0.1]:25", "REDIRECT a@b",
		"HOLD", "DISCARD", "550 5.7.1 something else", "554 5.7.1 Sorry, relay for <a> not permitted",
		"250 OK", "2", "4", "450", "45x 4.7.1 x", "DUNNO\naction=OK", "450 4.7.1 x\r",
		"450 4.7.1 x\x00", "550 5.7.1 Sorry, relay for <a>",
		"550 5.7.1 Please authenticate for send mail from domain <x",
		"550 5.7.1 Sorry, <list@example.com> not permitted",
	} {
		if SafeReply(r) {
			t.Errorf("allowed %q", r)
		}
	}
}

// Every reply the matrix makes passes the allowlist, whatever the client
// sent (control characters are echoed as '?').
func TestDecideRepliesAreSafe(t *testing.T) {
	inv := testInventory(t)
	for _, s := range []string{"", "<>", "a@example.com", "b@partner.org", "c@elsewhere.test", "x\r\ny@elsewhere.test", "no-domain"} {
		for _, r := range []string{"alice@example.com", "all-staff@example.com", "d@partner.org", "v@elsewhere.test", "v\n@elsewhere.test"} {
			for _, c := range []struct{ addr, user string }{{"192.0.2.1", ""}, {"10.20.0.5", ""}, {"192.0.2.1", "alice@example.com"}} {
				v := Decide(Envelope{ClientAddress: c.addr, SASLUsername: c.user, Sender: s, Recipient: r}, inv, Options{})
				if v.Reply != "" && !SafeReply(v.Reply) {
					t.Errorf("%q -> %q: reply %q is not allowed", s, r, v.Reply)
				}
			}
		}
	}
}
