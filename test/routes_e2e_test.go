package test

import (
	"strings"
	"testing"

	"github.com/mailnode/mailnode/test/harness"
)

// TestSubmissionsImplicitTLS: postfix.submissions_listen (port 465, RFC
// 8314) speaks TLS from the first byte, then wants AUTH like 587; an
// authenticated message is relayed and DKIM-signed as on 587, and a client
// without AUTH is refused.
func TestSubmissionsImplicitTLS(t *testing.T) {
	n := harness.StartNode(t, harness.Options{Policy: true, Milter: true, DKIMKeys: true, Edit: func(doc map[string]any) {
		harness.Set(doc, "policy.greylist.enabled", false)
	}})
	keys := zoneKeys(t, n)
	const relayRcpt = "dave@partner.org"

	t.Run("plain text on 465 gets no banner", func(t *testing.T) {
		c, banner, err := harness.Dial(n.Submissions, harness.DialOptions{Timeout: 5e9})
		if err == nil {
			c.Close()
			t.Fatalf("a plain-text client got a banner on the implicit-TLS port: %q", banner.Text())
		}
	})

	t.Run("no AUTH: refused", func(t *testing.T) {
		tr := send(t, n.Submissions, harness.Envelope{ImplicitTLS: true, From: "alice@example.com", To: []string{relayRcpt}})
		if tr.Banner.Code != 220 {
			t.Fatalf("banner over TLS: %q", tr.Banner.Text())
		}
		if len(tr.Rcpt) != 1 || !strings.HasPrefix(tr.Rcpt[0].Text(), "554 5.7.1 ") || !strings.Contains(tr.Rcpt[0].Text(), "Client host rejected: Access denied") {
			t.Errorf("RCPT without AUTH: %+v", tr.Rcpt)
		}
		t.Logf("RCPT without AUTH: %s", tr.Rcpt[0].Text())
	})

	t.Run("AUTH, then relayed and signed as on 587", func(t *testing.T) {
		msg, id := dkimTestMessage("Alice Smith <alice@example.com>", relayRcpt, "over 465", testBody)
		tr := send(t, n.Submissions, harness.Envelope{ImplicitTLS: true, AuthUser: "alice@example.com", AuthPass: "alicepass",
			From: "alice@example.com", To: []string{relayRcpt}, Data: msg})
		if tr.Auth.Code != 235 {
			t.Fatalf("AUTH over implicit TLS: %q", tr.Auth.Text())
		}
		if tr.StartTLS.Code != 0 || tr.EHLO.Code != 250 {
			t.Errorf("EHLO %q, STARTTLS %q", tr.EHLO.Text(), tr.StartTLS.Text())
		}
		wantFinal(t, tr)
		t.Logf("AUTH: %s; final: %s", tr.Auth.Text(), tr.Final.Text())
		m := waitSinkID(t, n, id, harness.DeliveryTimeout)
		verifySigned(t, keys, m.Data, "example.com", []string{"mx2026r/rsa-sha256", "mx2026e/ed25519-sha256"})
		if !strings.Contains(n.MailLog(), "/submissions/smtpd[") {
			t.Errorf("the mail log shows no submissions smtpd")
		}
	})
}
