package test

import (
	"bytes"
	"strings"
	"testing"

	"github.com/mailnode/mailnode/test/harness"
)

// The harness wires and starts the real sidecars from the same rendered
// inventory: policyd answers for Postfix (its 550 text, not Postfix's 554,
// reaches the client) and milterd signs mail of a trust host.
func TestHarnessStartsSidecars(t *testing.T) {
	n := harness.StartNode(t, harness.Options{Policy: true, Milter: true, DKIMKeys: true})

	tr := send(t, n.SMTP, harness.Envelope{From: "someone@outside.test", To: []string{"x@elsewhere.test"}})
	if got, want := tr.Rcpt[0].Text(), "550 5.7.1 Sorry, relay for <x@elsewhere.test> not permitted"; !strings.HasSuffix(got, strings.TrimPrefix(want, "550 5.7.1 ")) || tr.Rcpt[0].Code != 550 {
		t.Errorf("outside -> outside through policyd: %q, want %q", got, want)
	}

	msg := harness.NewMessage("bob@example.com", "alice@example.com", "signed", "from a trust host")
	wantFinal(t, send(t, n.SMTP, harness.Envelope{LocalAddr: harness.TrustedClient, From: "bob@example.com", To: []string{"alice@example.com"}, Data: msg}))
	got := n.WaitMaildir(t, "alice@example.com", 1)
	if !bytes.Contains(got[0].Data, []byte("\nDKIM-Signature: ")) {
		t.Errorf("message from a trust host was not DKIM-signed by milterd:\n%s\n--- milterd log:\n%s", got[0].Data, n.DaemonLog("milterd"))
	}
}

// With a sidecar down Postfix answers 4xx and never accepts: the policy
// default_action and milter_default_action of main.cf at work.
func TestSidecarsDownTempfail(t *testing.T) {
	n := harness.StartNode(t, harness.Options{Policy: true, Milter: true, DKIMKeys: true})
	if err := n.StopDaemon("policyd"); err != nil {
		t.Fatal(err)
	}
	tr := send(t, n.SMTP, harness.Envelope{From: "someone@outside.test", To: []string{"alice@example.com"}})
	t.Logf("RCPT with policyd down: %q", tr.Rcpt[0].Text())
	if got := tr.Rcpt[0].Text(); !strings.HasPrefix(got, "451 4.3.5 ") {
		t.Errorf("RCPT with policyd down: %q, want 451 4.3.5 ...", got)
	}
	if err := n.StopDaemon("milterd"); err != nil {
		t.Fatal(err)
	}
	tr = send(t, n.SMTP, harness.Envelope{From: "someone@outside.test", To: []string{"alice@example.com"}, Data: harness.NewMessage("someone@outside.test", "alice@example.com", "x", "y")})
	if tr.Final.Code == 250 || tr.EHLO.Code == 250 && tr.Mail.Code == 250 && len(tr.Rcpt) > 0 && tr.Rcpt[0].Code == 250 {
		t.Errorf("with milterd and policyd down a message got through: %+v", tr)
	}
	for _, r := range append([]harness.Reply{tr.Banner, tr.EHLO, tr.Mail}, tr.Rcpt...) {
		if r.Code >= 500 {
			t.Errorf("permanent reply with sidecars down: %q", r.Text())
		}
	}
	t.Logf("with both sidecars down: banner %q, EHLO %d, MAIL %q, RCPT %v", tr.Banner.Text(), tr.EHLO.Code, tr.Mail.Text(), tr.Rcpt)
}
