package test

import (
	"crypto/tls"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailnode/mailnode/test/harness"
)

// startSmarthost is a stand-in for a provider's submission server (a
// harness sink in smarthost mode): AUTH PLAIN only after STARTTLS, mail only
// after a successful AUTH with the one login it knows; with noTLS it offers
// no STARTTLS, and so no AUTH.
func startSmarthost(t *testing.T, user, pass string, noTLS bool) *harness.Sink {
	t.Helper()
	opt := harness.SinkOptions{User: user, Pass: pass}
	if !noTLS {
		dir := t.TempDir()
		cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
		if err := harness.WriteSelfSigned(cert, key, "smarthost.test"); err != nil {
			t.Fatal(err)
		}
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			t.Fatal(err)
		}
		opt.TLS = &tls.Config{Certificates: []tls.Certificate{pair}}
	}
	sh, err := harness.StartSinkWith("127.0.0.1:0", "", opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sh.Close() })
	return sh
}

func TestSmarthostAuth(t *testing.T) {
	const user, pass = "node1@example.net", "c0rrect horse"
	sh := startSmarthost(t, user, pass, false)
	start := func(t *testing.T, sh *harness.Sink, password string) *harness.Node {
		secret := filepath.Join(t.TempDir(), "relayhost.secret")
		if err := os.WriteFile(secret, []byte(password+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return harness.StartNode(t, harness.Options{Policy: true, Milter: true, DKIMKeys: true, Edit: func(doc map[string]any) {
			harness.Set(doc, "policy.greylist.enabled", false)
			harness.Set(doc, "postfix.relayhost", "[127.0.0.1]:"+sh.Port())
			harness.Set(doc, "postfix.relayhost_auth", map[string]any{"username": user, "password_file": secret})
		}})
	}
	submit := func(t *testing.T, n *harness.Node, subject string) string {
		msg, id := dkimTestMessage("alice@example.com", "frank@example.org", subject, testBody)
		tr := send(t, n.Submission, harness.Envelope{StartTLS: true, AuthUser: "alice@example.com", AuthPass: "alicepass",
			From: "alice@example.com", To: []string{"frank@example.org"}, Data: msg})
		wantFinal(t, tr)
		return id
	}

	t.Run("right password: relayed through the smarthost, signed", func(t *testing.T) {
		n := start(t, sh, pass)
		for _, f := range []string{"main.cf", "master.cf", "tls_policy"} {
			if b, _ := os.ReadFile(filepath.Join(n.PostfixConfig, f)); strings.Contains(string(b), pass) {
				t.Errorf("postfix/%s holds the password", f)
			}
		}
		if st, err := os.Stat(filepath.Join(n.PostfixConfig, "sasl_passwd")); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("sasl_passwd: %v %v", st.Mode(), err)
		}
		id := submit(t, n, "via the smarthost")
		deadline := time.Now().Add(harness.DeliveryTimeout)
		var got *harness.Message
		for got == nil && time.Now().Before(deadline) {
			for _, m := range sh.Messages() {
				if strings.Contains(string(m.Data), id) {
					got = &m
				}
			}
			time.Sleep(50 * time.Millisecond)
		}
		if got == nil {
			t.Fatalf("the smarthost got nothing; mail log:\n%s", n.MailLog())
		}
		if got.Login != user || got.From != "alice@example.com" || len(got.To) != 1 || got.To[0] != "frank@example.org" {
			t.Errorf("smarthost saw login %q, %s, %v", got.Login, got.From, got.To)
		}
		if !strings.Contains(string(got.Data), "DKIM-Signature: ") {
			t.Errorf("not signed:\n%s", got.Data)
		}
		if strings.Contains(n.MailLog(), pass) || strings.Contains(n.DaemonLog("milterd")+n.DaemonLog("policyd"), pass) {
			t.Error("the password is in a log")
		}
		t.Logf("smarthost: login %s, %s %v; logins ok %d", got.Login, got.From, got.To, sh.Counts().AuthOK)
	})

	t.Run("wrong password: deferred, nothing sent", func(t *testing.T) {
		before := len(sh.Messages())
		n := start(t, sh, "wrong horse")
		submit(t, n, "must wait")
		line := waitDeferred(t, n, "to=<frank@example.org>")
		if !strings.Contains(line, "SASL authentication failed") {
			t.Fatalf("no deferral for a failed login; mail log:\n%s", n.MailLog())
		}
		t.Logf("deferred: %s", line[strings.Index(line, "to=<"):])
		if got := len(sh.Messages()); got != before {
			t.Errorf("the smarthost accepted %d messages with a wrong password", got-before)
		}
		if sh.Counts().AuthFail == 0 {
			t.Error("the smarthost saw no failed login")
		}
	})

	t.Run("a smarthost without STARTTLS: deferred, no password in clear", func(t *testing.T) {
		plain := startSmarthost(t, user, pass, true)
		n := start(t, plain, pass)
		submit(t, n, "never in clear")
		line := waitDeferred(t, n, "to=<frank@example.org>")
		if !strings.Contains(line, "TLS is required, but was not offered") {
			t.Errorf("deferred for another reason: %s", line)
		}
		t.Logf("deferred: %s", line[strings.Index(line, "to=<"):])
		if c := plain.Counts(); c.ClearAuth+c.ClearMail != 0 || len(plain.Messages()) != 0 {
			t.Errorf("in clear: %d AUTH, %d MAIL, %d messages", c.ClearAuth, c.ClearMail, len(plain.Messages()))
		}
	})

	if c := sh.Counts(); c.ClearAuth+c.ClearMail != 0 {
		t.Errorf("before STARTTLS: %d AUTH and %d MAIL attempts", c.ClearAuth, c.ClearMail)
	}
}

// waitDeferred returns the mail log line that defers the recipient.
func waitDeferred(t *testing.T, n *harness.Node, to string) string {
	t.Helper()
	deadline := time.Now().Add(harness.DeliveryTimeout)
	for time.Now().Before(deadline) {
		for _, l := range strings.Split(n.MailLog(), "\n") {
			if strings.Contains(l, to) && strings.Contains(l, "status=deferred") {
				return l
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no deferral of %s; mail log:\n%s", to, n.MailLog())
	return ""
}
