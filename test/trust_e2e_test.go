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

const foreignFromBob = "550 5.7.1 Please use own mail service for send mail from <bob@example.com>"

// TestHeaderFromStrictEndToEnd: with policy.sender_login: strict, milterd
// holds an authenticated session's From: to the login's own addresses,
// through real Postfix on submission (STARTTLS, AUTH): alice's own From:
// is signed; a colleague's, alone or beside her own, is refused at the end
// of DATA with the matrix's exact text, though the envelope is alice's and
// policyd accepted every RCPT.
func TestHeaderFromStrictEndToEnd(t *testing.T) {
	n := harness.StartNode(t, harness.Options{Policy: true, Milter: true, DKIMKeys: true, Edit: func(doc map[string]any) {
		harness.Set(doc, "policy.sender_login", "strict")
		harness.Set(doc, "policy.greylist.enabled", false)
	}})
	keys := zoneKeys(t, n)
	const rcpt = "dave@partner.org"
	submit := func(from string) (harness.Transcript, string) {
		msg, id := dkimTestMessage(from, rcpt, "header from", testBody)
		tr := send(t, n.Submission, harness.Envelope{StartTLS: true, AuthUser: "alice@example.com", AuthPass: "alicepass",
			From: "alice@example.com", To: []string{rcpt}, Data: msg})
		if tr.Auth.Code != 235 || len(tr.Rcpt) != 1 || tr.Rcpt[0].Code != 250 {
			t.Fatalf("From: %s: AUTH %q, RCPT %v", from, tr.Auth.Text(), tr.Rcpt)
		}
		return tr, id
	}

	t.Run("own From: accepted and signed", func(t *testing.T) {
		tr, id := submit("Alice Smith <alice@example.com>")
		wantFinal(t, tr)
		m := waitSinkID(t, n, id, harness.DeliveryTimeout)
		verifySigned(t, keys, m.Data, "example.com", []string{"mx2026r/rsa-sha256", "mx2026e/ed25519-sha256"})
	})
	for _, c := range []struct{ name, from string }{
		{"a colleague's From:", "Bob <bob@example.com>"},
		{"two addresses, one a colleague's", "alice@example.com, Bob <bob@example.com>"},
	} {
		t.Run(c.name, func(t *testing.T) {
			tr, _ := submit(c.from)
			if got := tr.Final.Text(); got != foreignFromBob {
				t.Errorf("end of DATA: %q, want %q", got, foreignFromBob)
			}
		})
	}
	if log, ok := n.DaemonLogWith("milterd", "action=refuse", `reply="`+foreignFromBob+`"`); !ok {
		t.Errorf("milterd did not log the refusal:\n%s", log)
	}
	if strings.Contains(n.DaemonLog("milterd"), "would_reject") {
		t.Errorf("enforce mode logged would_reject:\n%s", n.DaemonLog("milterd"))
	}
}

// TestShadowModeEndToEnd: with policy.mode: shadow, policyd answers DUNNO
// and milterd accepts what enforce mode refuses, each logging the refusal
// it would have made; Postfix's own relay protection still refuses
// relaying from untrusted, unauthenticated clients (the relay battery),
// and `mailnode report` on the node's logs lists every would-be refusal
// with its matrix cell and exact reply.
func TestShadowModeEndToEnd(t *testing.T) {
	d := spamtest.StartDNS(t, spamE2EZone)
	n := harness.StartNode(t, harness.Options{Policy: true, Milter: true, DKIMKeys: true, Edit: func(doc map[string]any) {
		harness.Set(doc, "policy.mode", "shadow")
		harness.Set(doc, "policy.sender_login", "strict")
		harness.Set(doc, "node.resolver", d.Addr)
		// Greylisting stays on (the example's 300 s): shadow mode logs it.
	}})
	relayDenied := func(rcpt string) string { return "554 5.7.1 <" + rcpt + ">: Relay access denied" }

	// The relay battery: what Postfix itself refuses stays refused; what it
	// lets through (trust hosts, logins) passes as before.
	for _, c := range []struct {
		name string
		via  policySession
		from string
		rcpt string
		want string
	}{
		{"outside -> outside, untrusted", viaNone, e2eOutsideSender, e2eOutsideRcpt, relayDenied(e2eOutsideRcpt)},
		{"null sender -> outside, untrusted", viaNone, "", e2eOutsideRcpt, relayDenied(e2eOutsideRcpt)},
		{"local sender without auth -> outside", viaNone, e2eLocalSender, e2eOutsideRcpt, relayDenied(e2eOutsideRcpt)},
		{"relay sender -> outside, untrusted", viaNone, e2eRelaySender, e2eOutsideRcpt, relayDenied(e2eOutsideRcpt)},
		{"sub-domain of a local domain, untrusted", viaNone, e2eOutsideSender, "x@sub.example.com", relayDenied("x@sub.example.com")},
		{"trust host -> outside", viaTrust, e2eLocalSender, e2eOutsideRcpt, accepted},
		{"login -> outside", viaAuth, e2eLocalSender, e2eOutsideRcpt, accepted},
		{"login with an outside sender -> outside (Postfix lets logins relay)", viaAuth, e2eOutsideSender, e2eOutsideRcpt, accepted},
	} {
		t.Run("relay battery: "+c.name, func(t *testing.T) {
			got := runE2E(t, n, e2eCase{via: c.via, from: c.from, rcpt: c.rcpt}).Text()
			if got != c.want {
				t.Errorf("MAIL FROM:<%s> RCPT TO:<%s> via %s: %q, want %q", c.from, c.rcpt, c.via, got, c.want)
			}
		})
	}

	// The mix: every message enforce mode would refuse is accepted.
	for _, c := range []struct {
		name string
		addr string
		env  harness.Envelope
	}{
		{"local sender without auth -> local", n.SMTP, harness.Envelope{From: e2eLocalSender, To: []string{e2eLocalRcpt},
			Data: harness.NewMessage(e2eLocalSender, e2eLocalRcpt, "no auth", "hello")}},
		{"outside -> internal list", n.SMTP, harness.Envelope{From: e2eOutsideSender, To: []string{"all-staff@example.com"},
			Data: harness.NewMessage(e2eOutsideSender, "all-staff@example.com", "to the list", "hello all")}},
		{"GTUBE from outside (greylisting, spam)", n.SMTP, harness.Envelope{Helo: "mx.sender.test", From: "x@sender.test", To: []string{e2eLocalRcpt},
			Data: gtubeMessage("x@sender.test", e2eLocalRcpt)}},
		{"login with a colleague's From:", n.Submission, harness.Envelope{StartTLS: true, AuthUser: "alice@example.com", AuthPass: "alicepass",
			From: e2eLocalSender, To: []string{e2eRelayRcpt}, Data: harness.NewMessage("bob@example.com", e2eRelayRcpt, "as bob", "hi")}},
	} {
		t.Run("accepted in shadow mode: "+c.name, func(t *testing.T) {
			tr := send(t, c.addr, c.env)
			if len(tr.Rcpt) != 1 || tr.Rcpt[0].Text() != accepted {
				t.Fatalf("RCPT: %v, want %q", tr.Rcpt, accepted)
			}
			if tr.Final.Code != 250 {
				t.Errorf("end of DATA: %q, want 250", tr.Final.Text())
			}
		})
	}
	// bob has the unauthenticated local mail, the list mail and the GTUBE
	// message, with the spam gate's headers.
	var gtube []byte
	for _, m := range n.WaitMaildir(t, e2eLocalRcpt, 3) {
		if strings.Contains(string(m.Data), "XJS*C4JDBQADN1") {
			gtube = m.Data
		}
	}
	if h := spamHeaders(t, gtube); !strings.HasPrefix(h.Get("X-Spam-Status"), "Yes, score=") {
		t.Errorf("GTUBE delivered without its verdict: X-Spam-Status %q", h.Get("X-Spam-Status"))
	}
	// The colleague's From: was signed as in domain mode.
	m := n.WaitSink(t, 1)
	if sigs := headerValues(t, m[len(m)-1].Data, "DKIM-Signature"); len(sigs) != 2 {
		t.Errorf("shadow mode: %d signatures on the login's mail, want 2", len(sigs))
	}

	// mailnode report on the node's logs. The daemons flush their logs
	// every 100 ms: poll until every group is there.
	want := [][4]string{
		{"policyd", "outside/none->outside", "relay-denied", "550 5.7.1 Sorry, relay for <frank@outside.test> not permitted"},
		{"policyd", "local/none->outside", "auth-required", "550 5.7.1 Please authenticate for send mail from domain <example.com>"},
		{"policyd", "relay/none->outside", "foreign-sender", "550 5.7.1 Please use own mail service for send mail from <carol@partner.org>"},
		{"policyd", "outside/auth->outside", "foreign-sender", "550 5.7.1 Please use own mail service for send mail from <eve@outside.test>"},
		{"policyd", "local/none->local", "auth-required", "550 5.7.1 Please authenticate for send mail from domain <example.com>"},
		{"policyd", "outside/none->local", "internal-list", "550 5.7.1 Sorry, <all-staff@example.com> accepts mail from internal senders only"},
		{"policyd", "outside/none->local", "greylist-new", "450 4.7.1 Greylisted, please try again in 300 seconds"},
		{"milterd", "outside/none->local", "spam", "550 5.7.1 Message rejected as spam"},
		{"milterd", "local/auth->relay", "sender_login strict: a From address the login does not own", foreignFromBob},
	}
	var out string
	var rows map[[3]string]string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		b, err := exec.Command(n.Bin, "report", "--since", "1h",
			"--maillog", filepath.Join(n.Dir, "log", "policyd.log"), "--maillog", filepath.Join(n.Dir, "log", "milterd*.log")).CombinedOutput()
		if err != nil {
			t.Fatalf("mailnode report: %v\n%s", err, b)
		}
		out, rows = string(b), reportRows(string(b))
		missing := 0
		for _, w := range want {
			if _, ok := rows[[3]string{w[0], w[1], w[2]}]; !ok {
				missing++
			}
		}
		if missing == 0 || time.Now().After(deadline) {
			break
		}
	}
	for _, w := range want {
		got, ok := rows[[3]string{w[0], w[1], w[2]}]
		if !ok {
			t.Errorf("report lacks %s %s %s", w[0], w[1], w[2])
		} else if got != w[3] {
			t.Errorf("report: %s %s %s answers %q, want %q", w[0], w[1], w[2], got, w[3])
		}
	}
	if len(rows) != len(want) {
		t.Errorf("report has %d groups, want %d", len(rows), len(want))
	}
	if t.Failed() {
		t.Logf("report:\n%s", out)
	} else {
		t.Logf("mailnode report:\n%s", out)
	}
}

// reportRows reads the table of `mailnode report`: daemon, cell and reason
// to the reply enforce mode would have given.
func reportRows(out string) map[[3]string]string {
	rows := map[[3]string]string{}
	cols := regexp.MustCompile(`\s{2,}`)
	table := false
	for _, ln := range strings.Split(out, "\n") {
		switch {
		case strings.HasPrefix(ln, "COUNT "):
			table = true
		case table && strings.TrimSpace(ln) == "":
			return rows
		case table:
			f := cols.Split(strings.TrimSpace(ln), -1)
			if len(f) == 5 {
				rows[[3]string{f[1], f[2], f[3]}] = f[4]
			}
		}
	}
	return rows
}
