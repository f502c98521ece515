package test

import (
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/mailnode/mailnode/spam/spamtest"
	"github.com/mailnode/mailnode/test/harness"
)

// queuedAs finds Postfix's queue id in its reply to the end of DATA.
var queuedAs = regexp.MustCompile(`queued as ([0-9A-Za-z]+)`)

// TestWhyEndToEnd: messages through a real node (Postfix, policyd with
// greylisting, milterd with the spam gate), then `mailnode why` on the
// logs the node wrote: each story has its decisions and its outcome.
func TestWhyEndToEnd(t *testing.T) {
	d := spamtest.StartDNS(t, spamE2EZone)
	n := harness.StartNode(t, harness.Options{Policy: true, Milter: true, DKIMKeys: true, Edit: func(doc map[string]any) {
		harness.Set(doc, "node.resolver", d.Addr)
		harness.Set(doc, "policy.greylist", map[string]any{
			"enabled": true, "delay": "2s", "retry_window": "1h", "auto_whitelist_after": 5, "expire": "840h",
		})
	}})
	qid := func(tr harness.Transcript) string {
		t.Helper()
		m := queuedAs.FindStringSubmatch(tr.Final.Text())
		if tr.Final.Code != 250 || m == nil {
			t.Fatalf("not queued: %q", tr.Final.Text())
		}
		return m[1]
	}
	// 1. A trusted client's local mail: signed, delivered.
	okID := qid(send(t, n.SMTP, harness.Envelope{LocalAddr: harness.TrustedClient, From: "bob@example.com", To: []string{"alice@example.com"},
		Data: harness.NewMessage("bob@example.com", "alice@example.com", "accepted", "hello")}))
	// 2. From outside: greylisted, then accepted after the delay.
	grey := harness.Envelope{LocalAddr: harness.OutsideClient, Helo: "mx.sender.test", From: "news@sender.test", To: []string{"alice@example.com"},
		Data: harness.NewMessage("news@sender.test", "alice@example.com", "greylisted", "comes back")}
	tr := send(t, n.SMTP, grey)
	if tr.Rcpt[0].Code != 450 {
		t.Fatalf("first attempt: %v", tr.Rcpt)
	}
	// 2b. To sales@, an alias with a member off the node (carol@partner.org):
	// greylisted, then accepted and sent on with an SRS envelope sender.
	fwd := grey
	fwd.To = []string{"sales@example.com"}
	fwd.Data = harness.NewMessage("news@sender.test", "sales@example.com", "forwarded", "to the team")
	if tr = send(t, n.SMTP, fwd); tr.Rcpt[0].Code != 450 {
		t.Fatalf("first attempt to sales@: %v", tr.Rcpt)
	}
	first := time.Now() // both triplets' delays run from before this
	// 3. A relay attempt: refused by the matrix.
	tr = send(t, n.SMTP, harness.Envelope{LocalAddr: harness.OutsideClient, From: "news@sender.test", To: []string{"x@elsewhere.test"}})
	if tr.Rcpt[0].Code != 550 {
		t.Fatalf("relay: %v", tr.Rcpt)
	}
	time.Sleep(time.Until(first.Add(2100 * time.Millisecond)))
	greyID := qid(send(t, n.SMTP, grey))
	fwdID := qid(send(t, n.SMTP, fwd))
	// 4. GTUBE from the triplet that passed: refused as spam at the end of DATA.
	gt := grey
	gt.Data = gtubeMessage("news@sender.test", "alice@example.com")
	if tr = send(t, n.SMTP, gt); tr.Final.Code != 550 {
		t.Fatalf("GTUBE: %v", tr.Final)
	}
	n.WaitMaildir(t, "alice@example.com", 3)

	why := func(query string, want ...string) string {
		t.Helper()
		var out string
		// The daemons write their logs every 100 ms and Postfix logs the
		// delivery after the reply: poll until the story is whole.
		for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
			b, _ := exec.Command(n.Bin, "why", "--since", "1h", "--maillog", filepath.Join(n.Dir, "log", "maillog"),
				"--maillog", filepath.Join(n.Dir, "log", "policyd.log"), "--maillog", filepath.Join(n.Dir, "log", "milterd*.log"), query).CombinedOutput()
			out = string(b)
			if inOrder(out, want) == "" || time.Now().After(deadline) {
				break
			}
		}
		if missing := inOrder(out, want); missing != "" {
			t.Errorf("why %s lacks (or has out of order) %q:\n%s", query, missing, out)
		}
		return out
	}
	why(okID,
		okID+" from=<bob@example.com> client=unknown[127.0.0.2] to=<alice@example.com>: <alice@example.com> sent\n",
		" policyd  RCPT to=<alice@example.com> cell=local/trust->local reason=authorized: DUNNO",
		" smtpd    client=unknown[127.0.0.2]\n",
		" milterd  sign (trusted client, From domain local), header From: bob@example.com\n",
		" milterd  DKIM-signed: example.com/mx2026r/rsa, example.com/mx2026e/ed25519\n",
		" lmtp     to=<alice@example.com>, relay=", "status=sent (250 2.0.0 <alice@example.com>")
	out := why(greyID,
		greyID+" from=<news@sender.test> client=localhost[127.0.0.1] to=<alice@example.com>: <alice@example.com> sent\n",
		"  earlier: ", "to=<alice@example.com>: 450 4.7.1 <alice@example.com>: Recipient address rejected: Greylisted, please try again in 2 seconds\n",
		" policyd  RCPT to=<alice@example.com> cell=outside/none->local reason=inbound: 450 4.7.1 Greylisted, please try again in 2 seconds; greylist=new (first time seen: deferred)\n",
		" policyd  RCPT to=<alice@example.com> cell=outside/none->local reason=inbound: DUNNO; spam_check=on; greylist=triplet-passed (retried after the delay: passed)\n",
		" milterd  verify (outside sender to a local recipient: spam check on), header From: news@sender.test\n",
		" milterd  Authentication-Results: spf=pass smtp.mailfrom=news@sender.test; dkim=none; dmarc=pass header.from=sender.test\n",
		" milterd  spam score ", "(builtin ", ") -> deliver\n",
		" lmtp     to=<alice@example.com>", "status=sent")
	if strings.Count(out, " policyd ") != 2 {
		t.Errorf("why %s: want two policyd lines (the greylisted attempt, the accepted one):\n%s", greyID, out)
	}
	// Found by the alias and by the sender it arrived with, its first
	// recipient's policyd line (no queue id, the sender before SRS) kept.
	for _, q := range []string{"sales@example.com", "news@sender.test"} {
		why(q,
			"NOQUEUE from=<news@sender.test> client=localhost[127.0.0.1] to=<sales@example.com>: refused at RCPT: 450 4.7.1",
			fwdID+" from=<news@sender.test> (sent on as <SRS0=",
			" policyd  RCPT to=<sales@example.com> cell=outside/none->local reason=inbound: DUNNO; spam_check=on; greylist=triplet-passed",
			" milterd  envelope sender rewritten (SRS) to <SRS0=",
			" qmgr     from=<SRS0=",
			"orig_to=<sales@example.com>")
	}
	why("x@elsewhere.test",
		"NOQUEUE from=<news@sender.test> client=localhost[127.0.0.1] to=<x@elsewhere.test>: refused at RCPT: 550 5.7.1 <x@elsewhere.test>: Recipient address rejected: Sorry, relay for <x@elsewhere.test> not permitted\n",
		" policyd  RCPT to=<x@elsewhere.test> cell=outside/none->outside reason=relay-denied: 550 5.7.1 Sorry, relay for <x@elsewhere.test> not permitted\n",
		" smtpd    RCPT to=<x@elsewhere.test> refused: 550 5.7.1")
	why("news@sender.test",
		"NOQUEUE from=<news@sender.test> client=localhost[127.0.0.1] to=<alice@example.com>: refused at RCPT: 450 4.7.1",
		"NOQUEUE from=<news@sender.test> client=localhost[127.0.0.1] to=<x@elsewhere.test>: refused at RCPT: 550 5.7.1",
		greyID+" from=<news@sender.test>", "status=sent",
		"from=<news@sender.test> client=localhost[127.0.0.1] to=<alice@example.com>: milter-reject at END-OF-MESSAGE: 5.7.1 Message rejected as spam\n",
		" policyd  RCPT to=<alice@example.com> cell=outside/none->local reason=inbound: DUNNO; spam_check=on; greylist=triplet-passed",
		" milterd  spam score 99", "-> reject (spam)\n",
		" milterd  symbols: MN_GTUBE(1000)",
		" cleanup  milter-reject at END-OF-MESSAGE: 5.7.1 Message rejected as spam\n")
}

// inOrder returns the first of want that s lacks after the ones before it,
// or "" when s has them all in order.
func inOrder(s string, want []string) string {
	for _, w := range want {
		i := strings.Index(s, w)
		if i < 0 {
			return w
		}
		s = s[i+len(w):]
	}
	return ""
}
