package test

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mailnode/mailnode/test/harness"
)

// Greylisting and rate limits end to end: real Postfix asks the real
// policyd (bbolt state under the node's tree), and the client sees the 450
// texts as Postfix frames them.

const greyDelay = 3 * time.Second

func startGreylistNode(t *testing.T) *harness.Node {
	return harness.StartNode(t, harness.Options{Policy: true, Edit: func(doc map[string]any) {
		harness.Set(doc, "policy.greylist", map[string]any{
			"enabled": true, "delay": greyDelay.String(), "retry_window": "1h",
			"auto_whitelist_after": 5, "expire": "840h",
		})
		// Replaces the example's limits and its override for alice.
		harness.Set(doc, "policy.ratelimit", map[string]any{"messages_per_hour": 2})
	}})
}

// greylisted is the RCPT reply of a first or early attempt, N seconds left.
var greylisted = regexp.MustCompile(`^450 4\.7\.1 <alice@example\.com>: Recipient address rejected: Greylisted, please try again in ([0-9]+) seconds$`)

func TestGreylistEndToEnd(t *testing.T) {
	n := startGreylistNode(t)
	const from = "news@sender.test"
	msg := harness.NewMessage(from, "alice@example.com", "greylisted", "comes back after the delay")
	env := harness.Envelope{LocalAddr: harness.OutsideClient, From: from, To: []string{"alice@example.com"}, Data: msg}

	// First attempt: 450 with the whole delay, nothing delivered.
	tr := send(t, n.SMTP, env)
	recorded := time.Now() // policyd recorded the triplet before this reply
	want := fmt.Sprintf("450 4.7.1 <alice@example.com>: Recipient address rejected: Greylisted, please try again in %d seconds", int(greyDelay.Seconds()))
	if got := tr.Rcpt[0].Text(); got != want || tr.Rcpt[0].Code != 450 || tr.DataCmd.Code != 0 {
		t.Fatalf("first attempt: RCPT %q (DATA %q), want %q", got, tr.DataCmd.Text(), want)
	}
	// A retry before the delay: still 450, with the seconds left.
	tr = send(t, n.SMTP, env)
	m := greylisted.FindStringSubmatch(tr.Rcpt[0].Text())
	if m == nil || tr.Rcpt[0].Code != 450 || tr.DataCmd.Code != 0 {
		t.Fatalf("early retry: %q", tr.Rcpt[0].Text())
	}
	if left := m[1]; left != "1" && left != "2" && left != "3" {
		t.Errorf("early retry: %s seconds left of %s", left, greyDelay)
	}
	// After the delay: accepted and delivered, once.
	time.Sleep(time.Until(recorded.Add(greyDelay + 100*time.Millisecond)))
	tr = send(t, n.SMTP, env)
	if tr.Rcpt[0].Code != 250 {
		t.Fatalf("after the delay: RCPT %q", tr.Rcpt[0].Text())
	}
	wantFinal(t, tr)
	got := n.WaitMaildir(t, "alice@example.com", 1)
	checkDelivered(t, got[0].Data, from, "alice@example.com", msg)

	// Never greylisted: a trust host, an authenticated user, the relay
	// domain (its own MX greylists), the null sender, postmaster.
	t.Run("exempt", func(t *testing.T) {
		for _, c := range []struct {
			name string
			env  harness.Envelope
			addr string
		}{
			{"trust host to local", harness.Envelope{LocalAddr: harness.TrustedClient, From: "bob@example.com", To: []string{"alice@example.com"}}, n.SMTP},
			{"authenticated to local", harness.Envelope{LocalAddr: harness.OutsideClient, StartTLS: true, AuthUser: "bob@example.com", AuthPass: "bobpass",
				From: "bob@example.com", To: []string{"alice@example.com"}}, n.Submission},
			{"outside to the relay domain", harness.Envelope{LocalAddr: harness.OutsideClient, From: "x@sender2.test", To: []string{"someone@partner.org"}}, n.SMTP},
			{"null sender to local", harness.Envelope{LocalAddr: harness.OutsideClient, From: "", To: []string{"alice@example.com"}}, n.SMTP},
			{"outside to postmaster", harness.Envelope{LocalAddr: harness.OutsideClient, From: "x@sender3.test", To: []string{"postmaster@example.com"}}, n.SMTP},
		} {
			tr := send(t, c.addr, c.env)
			if len(tr.Rcpt) != 1 || tr.Rcpt[0].Code != 250 {
				t.Errorf("%s: %+v", c.name, tr)
			}
		}
		// The relay domain's message really goes through to its next hop.
		rmsg := harness.NewMessage("x@sender4.test", "someone@partner.org", "backup MX", "not greylisted")
		wantFinal(t, send(t, n.SMTP, harness.Envelope{LocalAddr: harness.OutsideClient, From: "x@sender4.test", To: []string{"someone@partner.org"}, Data: rmsg}))
		n.WaitSink(t, 1)
	})

	waitDaemonLog(t, n, "policyd", []string{
		`from=<news@sender.test> to=<alice@example.com> state=RCPT cell=outside/none->local rcpt=1 action="450 4.7.1 Greylisted, please try again in 3 seconds" reason=inbound greylist=new`,
		"greylist=early-retry",
		"action=DUNNO reason=inbound spam_check=on greylist=triplet-passed",
		"to=<someone@partner.org> state=RCPT cell=outside/none->relay rcpt=1 action=DUNNO reason=inbound\n",
		"greylist=null-sender",
		"greylist=postmaster",
	})
}

// waitDaemonLog waits until a sidecar's log holds every string of want
// (the daemons write their logs every 100 ms, after the reply).
func waitDaemonLog(t *testing.T, n *harness.Node, name string, want []string) {
	t.Helper()
	log, ok := n.DaemonLogWith(name, want...)
	if ok {
		return
	}
	var missing []string
	for _, w := range want {
		if !strings.Contains(log, w) {
			missing = append(missing, w)
		}
	}
	t.Errorf("%s log lacks %q\n%s", name, missing, log)
}

// TestRateLimitEndToEnd: an authenticated user over messages_per_hour gets
// a 450 for each recipient of the next message; recipients of one message
// count as one message (Postfix's instance attribute).
func TestRateLimitEndToEnd(t *testing.T) {
	n := startGreylistNode(t)
	auth := func(subject string, to ...string) harness.Transcript {
		return send(t, n.Submission, harness.Envelope{LocalAddr: harness.OutsideClient, StartTLS: true,
			AuthUser: "alice@example.com", AuthPass: "alicepass", From: "alice@example.com", To: to,
			Data: harness.NewMessage("alice@example.com", strings.Join(to, ", "), subject, "counted")})
	}
	// Message 1 to two recipients, message 2 to one: two messages.
	for i, to := range [][]string{{"bob@example.com", "carol@example.net"}, {"bob@example.com"}} {
		tr := auth(fmt.Sprintf("message %d", i+1), to...)
		for j, r := range tr.Rcpt {
			if r.Code != 250 {
				t.Fatalf("message %d, RCPT %s: %q", i+1, to[j], r.Text())
			}
		}
		wantFinal(t, tr)
	}
	n.WaitMaildir(t, "bob@example.com", 2)
	tr := auth("message 3", "bob@example.com")
	want := "450 4.7.1 <bob@example.com>: Recipient address rejected: Rate limit exceeded for <alice@example.com>, try again later"
	if got := tr.Rcpt[0].Text(); got != want || tr.DataCmd.Code != 0 {
		t.Fatalf("third message: %q (DATA %q), want %q", got, tr.DataCmd.Text(), want)
	}
	// bob is not alice: his own counter.
	tr = send(t, n.Submission, harness.Envelope{LocalAddr: harness.OutsideClient, StartTLS: true,
		AuthUser: "bob@example.com", AuthPass: "bobpass", From: "bob@example.com", To: []string{"alice@example.com"}})
	if tr.Rcpt[0].Code != 250 {
		t.Errorf("bob's first message: %q", tr.Rcpt[0].Text())
	}
	waitDaemonLog(t, n, "policyd", []string{
		`sasl_user=bob@example.com from=<bob@example.com> to=<alice@example.com> state=RCPT cell=local/auth->local rcpt=1 action=DUNNO reason=authorized ratelimit=within-limit`,
		`sasl_user=alice@example.com from=<alice@example.com> to=<bob@example.com> state=RCPT cell=local/auth->local rcpt=1 action="450 4.7.1 Rate limit exceeded for <alice@example.com>, try again later" reason=authorized ratelimit=over-messages`,
	})
	if log := n.DaemonLog("policyd"); strings.Count(log, "sasl_user=alice@example.com") != 4 {
		t.Errorf("policyd log: want 4 RCPTs of alice:\n%s", log)
	}
}
