package policy

import (
	"bufio"
	"strings"
	"testing"

	"github.com/mailnode/mailnode/acl"
	"github.com/mailnode/mailnode/maillog"
	"github.com/mailnode/mailnode/test/harness"
)

// TestShadowMode: with policy.mode: shadow every recipient enforce mode
// refuses — the matrix's 550s, greylisting's and the rate limit's 450s —
// is answered DUNNO, logged with would_reject= and the exact reply, and
// counted per cell and reason; accepted recipients log as in enforce mode.
func TestShadowMode(t *testing.T) {
	var out harness.SyncBuffer
	ml := maillog.New(&out)
	m := NewMetrics()
	ts, _, _ := statefulServer(t, func(s *Server) {
		inv := statefulInventory(t)
		inv.Policy.Mode = "shadow"
		if err := s.SetInventory(inv); err != nil {
			t.Fatal(err)
		}
		s.MailLog, s.Metrics = ml, m
	})
	c := ts.dial(t)
	r := bufio.NewReader(c)
	steps := []struct {
		name, req, cell, reason, would string
	}{
		{"outside to outside", rcptReq(untrustedClient, "", "eve@example.org", "frank@example.org", "i1"),
			"outside/none->outside", "relay-denied", "550 5.7.1 Sorry, relay for <frank@example.org> not permitted"},
		{"local sender without auth", rcptReq(untrustedClient, "", "alice@example.com", "bob@example.com", "i2"),
			"local/none->local", "auth-required", "550 5.7.1 Please authenticate for send mail from domain <example.com>"},
		{"list from outside", rcptReq(untrustedClient, "", "eve@example.org", "all-staff@example.com", "i3"),
			"outside/none->local", "internal-list", "550 5.7.1 Sorry, <all-staff@example.com> accepts mail from internal senders only"},
		{"outside sender, authenticated", rcptReq(untrustedClient, "alice@example.com", "eve@example.org", "bob@example.com", "i4"),
			"outside/auth->local", "foreign-sender", "550 5.7.1 Please use own mail service for send mail from <eve@example.org>"},
		{"greylisted", rcptReq(untrustedClient, "", "eve@example.org", "bob@example.com", "i5"),
			"outside/none->local", "greylist-new", "450 4.7.1 Greylisted, please try again in 300 seconds"},
		{"accepted: no would_reject", rcptReq(trustedClient, "", "bob@example.com", "x@elsewhere.test", "i6"), "", "", ""},
		{"second message within the limit", rcptReq(trustedClient, "", "bob@example.com", "x@elsewhere.test", "i7"), "", "", ""},
		{"third message over the limit", rcptReq(trustedClient, "", "bob@example.com", "x@elsewhere.test", "i8"),
			"local/trust->outside", "ratelimit-over-messages", "450 4.7.1 Rate limit exceeded for <10.20.1.1>, try again later"},
	}
	for _, s := range steps {
		got, err := ask(c, r, s.req)
		if err != nil || got != action("DUNNO") {
			t.Fatalf("%s: %q, %v; want DUNNO in shadow mode", s.name, got, err)
		}
	}
	waitFor(t, func() bool { return strings.Count(out.String(), "\n") == len(steps) })
	ml.Close()
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	for i, s := range steps {
		ln := lines[i]
		if s.would == "" {
			if strings.Contains(ln, "would_reject") {
				t.Errorf("%s: accepted recipient logged as a would-be refusal: %s", s.name, ln)
			}
			continue
		}
		if !acl.SafeReply(s.would) {
			t.Fatalf("%s: the test's reply %q is not one policyd may give", s.name, s.would)
		}
		want := " cell=" + s.cell + " rcpt=1 action=DUNNO "
		if !strings.Contains(ln, want) || !strings.HasSuffix(ln, ` would_reject="`+s.would+`"`) {
			t.Errorf("%s: line\n%s\nwant %q and would_reject=%q", s.name, ln, want, s.would)
		}
		if v := counterValue(t, m, "mailnode_policy_shadow_would_reject_total", map[string]string{"cell": s.cell, "reason": s.reason}); v != 1 {
			t.Errorf("%s: mailnode_policy_shadow_would_reject_total{cell=%q,reason=%q} = %v, want 1", s.name, s.cell, s.reason, v)
		}
	}
	if v := counterValue(t, m, "mailnode_policy_decisions_total", map[string]string{"cell": "outside/none->outside", "action": "reject"}); v != -1 {
		t.Errorf("shadow mode counted a reject decision: %v", v)
	}
}

// TestShadowKeepsSafeReplyLast: Shadow changes what is answered, and the
// answer is DUNNO; a decision that accepts is left alone.
func TestShadowKeepsSafeReplyLast(t *testing.T) {
	d := Decision{Action: Reject, Reply: "550 5.7.1 Sorry, relay for <a@b.test> not permitted", Reason: acl.ReasonRelayDenied}
	d.Shadow()
	if d.Reply != "DUNNO" || d.Action != Dunno || d.WouldReject != "550 5.7.1 Sorry, relay for <a@b.test> not permitted" || d.WouldReason() != "relay-denied" {
		t.Errorf("shadowed reject: %+v", d)
	}
	a := Decision{Action: Dunno, Reply: "DUNNO"}
	a.Shadow()
	if a.WouldReject != "" || a.WouldReason() != "" {
		t.Errorf("shadowed accept: %+v", a)
	}
}
