package test

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/mail"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mailnode/mailnode/spam/spamtest"
	"github.com/mailnode/mailnode/state/statetest"
	"github.com/mailnode/mailnode/test/harness"
)

// The mailbox side end to end: Dovecot rendered with dovecot.sieve files
// what milterd tagged as spam into Junk, users keep scripts of their own
// over ManageSieve. Real Postfix, policyd, milterd (builtin engine, the
// test DNSBL of spam_e2e_test.go tags the listed client) and Dovecot with
// Pigeonhole; IMAP through python3's imaplib.

func dovecotLog(n *harness.Node) string {
	b, _ := os.ReadFile(filepath.Join(n.Dir, "log", "dovecot.log"))
	return string(b)
}

func TestSieveE2EJunk(t *testing.T) {
	d := spamtest.StartDNS(t, spamE2EZone)
	n := spamE2ENodeWith(t, d.Addr, map[string]any{"dnsbl": []any{"bl.test"}}, func(doc map[string]any) {
		harness.Set(doc, "dovecot.sieve", map[string]any{"junk_folder": "Junk"})
	})
	// The before-script was compiled at render time, next to its source.
	if _, err := os.Stat(filepath.Join(n.Inv.Dovecot.ConfigDirectory, "sieve", "junk.svbin")); err != nil {
		t.Errorf("the Junk before-script is not compiled: %v", err)
	}
	const bob = "bob@example.com"

	// Clean mail lands in INBOX.
	if r := spamSend(t, n, "", "x@sender.test", bob, harness.NewMessage("x@sender.test", bob, "lunch", "Lunch on Thursday?")); r.Code != 250 {
		t.Fatalf("clean: %v", r)
	}
	inbox := n.WaitMaildir(t, bob, 1)
	if h := spamHeaders(t, inbox[0].Data); !strings.HasPrefix(h.Get("X-Spam-Status"), "No,") {
		t.Errorf("INBOX message: X-Spam-Status %q", h.Get("X-Spam-Status"))
	}

	// Mail milterd tags as spam (X-Spam-Status: Yes) is filed into Junk,
	// which the delivery creates.
	if r := spamSend(t, n, listedClient, "x@sender.test", bob, harness.NewMessage("x@sender.test", bob, "watches", "Cheap watches")); r.Code != 250 {
		t.Fatalf("tagged: %v", r)
	}
	junk := n.WaitFolder(t, bob, "Junk", 1)
	if h := spamHeaders(t, junk[0].Data); !strings.HasPrefix(h.Get("X-Spam-Status"), "Yes,") || h.Get("Subject") != "[SPAM] watches" {
		t.Errorf("Junk message: X-Spam-Status %q, Subject %q", h.Get("X-Spam-Status"), h.Get("Subject"))
	}
	if got, _ := n.ReadMaildir(bob); len(got) != 1 {
		t.Errorf("INBOX holds %d messages, want the clean one only", len(got))
	}

	// Over IMAP: Junk is there and subscribed for every user, also one
	// who never got spam; bob's folders hold what the files say.
	lines, err := n.IMAPSession("alice@example.com", "alicepass", "subscribed")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(lines, "SUBSCRIBED Junk") {
		t.Errorf("alice's subscribed folders: %q, want Junk among them", lines)
	}
	lines, err = n.IMAPSession(bob, "bobpass", "subscribed", "count INBOX", "count Junk")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"SUBSCRIBED Junk", "COUNT INBOX 1", "COUNT Junk 1"} {
		if !slices.Contains(lines, want) {
			t.Errorf("bob over IMAP: %q, want %q", lines, want)
		}
	}

	// bob's own script, uploaded over ManageSieve, runs after the global
	// one: his reports go into a folder of their own, spam still to Junk.
	const script = `require ["fileinto", "mailbox"];
if header :contains "Subject" "report" {
  fileinto :create "Reports";
}
`
	if err := n.PutSieveScript(bob, "bobpass", "mine", script); err != nil {
		t.Fatalf("ManageSieve: %v\n%s", err, dovecotLog(n))
	}
	if r := spamSend(t, n, "", "x@sender.test", bob, harness.NewMessage("x@sender.test", bob, "weekly report", "All well.")); r.Code != 250 {
		t.Fatalf("report: %v", r)
	}
	n.WaitFolder(t, bob, "Reports", 1)
	if r := spamSend(t, n, listedClient, "x@sender.test", bob, harness.NewMessage("x@sender.test", bob, "report on watches", "Cheap watches")); r.Code != 250 {
		t.Fatalf("tagged report: %v", r)
	}
	n.WaitFolder(t, bob, "Junk", 2)
	if got, _ := n.ReadFolder(bob, "Reports"); len(got) != 1 {
		t.Errorf("Reports holds %d messages, want 1: tagged mail stops at the Junk rule", len(got))
	}
	if got, _ := n.ReadMaildir(bob); len(got) != 1 {
		t.Errorf("INBOX holds %d messages, want 1", len(got))
	}
	if log := dovecotLog(n); strings.Contains(log, "Error:") || strings.Contains(log, "Warning: sieve") {
		t.Errorf("Dovecot logged errors:\n%s", log)
	}
}

// setMailboxQuota gives one mailbox of the inventory document a quota of
// its own (domains[].mailboxes[].quota).
func setMailboxQuota(t *testing.T, doc map[string]any, addr, quota string) {
	t.Helper()
	user, domain, _ := strings.Cut(addr, "@")
	ds, _ := doc["domains"].([]any)
	for _, d := range ds {
		dm, _ := d.(map[string]any)
		if dm["name"] != domain {
			continue
		}
		ms, _ := dm["mailboxes"].([]any)
		for _, m := range ms {
			if mm, _ := m.(map[string]any); mm["user"] == user {
				mm["quota"] = quota
				return
			}
		}
	}
	t.Fatalf("no mailbox %s in the inventory", addr)
}

// Quotas: a full mailbox is refused at RCPT with 552 5.2.2, after the
// matrix, and the other recipients of the same message are accepted and
// delivered; nothing bounces later.
func TestQuotaE2EFullMailboxRefusedAtRcpt(t *testing.T) {
	n := harness.StartNode(t, harness.Options{Policy: true, Edit: func(doc map[string]any) {
		harness.Set(doc, "policy.greylist.enabled", false) // policyd's business, tested there
		harness.Set(doc, "dovecot.quota", "1G")
		setMailboxQuota(t, doc, "alice@example.com", "100k")
	}})
	const outsider = "someone@outside.test"
	doveadm := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("doveadm", append([]string{"-c", n.DovecotConfig}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("doveadm %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	// `doveadm quota get` shows each mailbox's limit in KiB: its own, or
	// dovecot.quota's.
	for addr, limit := range map[string]string{"alice@example.com": "100", "bob@example.com": "1048576"} {
		if !quotaLine(doveadm("quota", "get", "-u", addr), "STORAGE", limit) {
			t.Errorf("doveadm quota get -u %s: no STORAGE limit %s KiB:\n%s", addr, limit, doveadm("quota", "get", "-u", addr))
		}
	}

	// A message the client declares (SIZE=) larger than alice's whole
	// quota can never fit: 552 5.2.3 at RCPT; bob's 1G takes it.
	c, _, err := harness.Dial(n.SMTP, harness.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c.Hello("client.test")
	if r, err := c.Cmd("MAIL FROM:<%s> SIZE=200000", outsider); err != nil || r.Code != 250 {
		t.Fatalf("MAIL FROM with SIZE: %v %v", r, err)
	}
	if r, _ := c.Cmd("RCPT TO:<alice@example.com>"); r.Code != 552 || !strings.Contains(r.Text(), "5.2.3") || !strings.Contains(r.Text(), "larger than the mailbox quota") {
		t.Errorf("RCPT alice, SIZE over her quota: %q, want 552 5.2.3", r.Text())
	}
	if r, _ := c.Cmd("RCPT TO:<bob@example.com>"); r.Code != 250 {
		t.Errorf("RCPT bob, SIZE within his quota: %q", r.Text())
	}
	c.Quit()

	// Fill alice's mailbox: one message just over 100 KiB is still
	// delivered (Dovecot's grace of 10% for the last message).
	big := harness.NewMessage(outsider, "alice@example.com", "big", strings.Repeat(strings.Repeat("x", 99)+"\r\n", 1040))
	tr := send(t, n.SMTP, harness.Envelope{From: outsider, To: []string{"alice@example.com"}, Data: big})
	wantFinal(t, tr)
	n.WaitMaildir(t, "alice@example.com", 1)
	if out := doveadm("quota", "get", "-u", "alice@example.com"); !quotaOver(out) {
		t.Fatalf("alice is not over her quota after the big message:\n%s", out)
	}

	// Now alice is full: her RCPT gets 552 5.2.2, bob's and carol's (a
	// second domain) are accepted, and the message reaches them.
	msg := harness.NewMessage(outsider, "alice@example.com", "hello", "Are you there?")
	tr = send(t, n.SMTP, harness.Envelope{From: outsider, To: []string{"alice@example.com", "alice+news@example.com", "bob@example.com", "carol@example.net"}, Data: msg})
	// With an address extension (the example's recipient_delimiter "+")
	// too: it is the same mailbox.
	for i := range 2 {
		if got := tr.Rcpt[i].Text(); tr.Rcpt[i].Code != 552 || !strings.Contains(got, "5.2.2") || !strings.Contains(got, "Mailbox is full") {
			t.Errorf("RCPT %d (alice, full): %q, want 552 5.2.2 Mailbox is full", i, got)
		}
	}
	t.Logf("RCPT alice (full): %s", tr.Rcpt[0].Text())
	for i, rcpt := range []string{"bob@example.com", "carol@example.net"} {
		if tr.Rcpt[i+2].Code != 250 {
			t.Errorf("RCPT %s: %q, want 250", rcpt, tr.Rcpt[i+2].Text())
		}
	}
	wantFinal(t, tr)
	n.WaitMaildir(t, "bob@example.com", 1)
	n.WaitMaildir(t, "carol@example.net", 1)
	if got, _ := n.ReadMaildir("alice@example.com"); len(got) != 1 {
		t.Errorf("alice's mailbox holds %d messages, want only the big one", len(got))
	}

	// The matrix still answers first: relaying stays refused with
	// policyd's text, not a quota answer.
	tr = send(t, n.SMTP, harness.Envelope{From: outsider, To: []string{"x@elsewhere.test"}})
	if got := tr.Rcpt[0].Text(); tr.Rcpt[0].Code != 550 || !strings.Contains(got, "5.7.1 <x@elsewhere.test>: Recipient address rejected: Sorry, relay for <x@elsewhere.test> not permitted") {
		t.Errorf("RCPT to outside: %q", got)
	}
	// Nothing was accepted for alice and bounced: no bounce left the node
	// and the queue is empty.
	if empty, q, err := n.QueueEmpty(); err != nil || !empty {
		t.Errorf("queue not empty (%v):\n%s", err, q)
	}
	if log := n.MailLog(); strings.Contains(log, "status=bounced") || strings.Contains(log, "sender non-delivery notification") {
		t.Errorf("a message bounced:\n%s", log)
	}
}

// quotaLine reports whether `doveadm quota get` shows the resource with
// the limit (KiB for STORAGE).
func quotaLine(out, resource, limit string) bool {
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		// Quota name    Type    Value  Limit  %
		if len(f) >= 4 && slices.Contains(f, resource) && f[len(f)-2] == limit {
			return true
		}
	}
	return false
}

// quotaOver reports whether the STORAGE line of `doveadm quota get` shows
// 100% or more.
func quotaOver(out string) bool {
	for _, l := range strings.Split(out, "\n") {
		f := strings.Fields(l)
		if len(f) >= 4 && slices.Contains(f, "STORAGE") {
			pct, err := strconv.Atoi(f[len(f)-1])
			return err == nil && pct >= 100
		}
	}
	return false
}

// rspamdLearned returns how many messages rspamd has learned, from its
// controller's own /stat (the Bayes statfiles there are refreshed from
// Redis only every half minute; the total is immediate).
func rspamdLearned(t *testing.T, controller string) (learned int, raw string) {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}
	resp, err := c.Get(controller + "/stat")
	if err != nil {
		t.Fatalf("rspamd /stat: %v", err)
	}
	defer resp.Body.Close()
	var st struct {
		Learned int `json:"learned"`
	}
	body, _ := io.ReadAll(resp.Body)
	if err := json.Unmarshal(body, &st); err != nil {
		t.Fatalf("rspamd /stat: %v\n%s", err, body)
	}
	return st.Learned, string(body)
}

// learningBody has enough words for rspamd's Bayes (min_tokens 11).
func learningBody(topic string) string {
	return "Dear Bob, this is a longer note about " + topic + " so that the classifier has enough words " +
		"to work with: the quarterly numbers, the travel plans, the new office, the garden party and " +
		"everything else we talked about on the phone last Tuesday afternoon. Best regards."
}

// dovecot.spam_learning with rspamd: a real IMAP client moves a message
// out of Junk and another into it; rspamd's own statistics show one ham
// and one spam learned, each the message moved.
func TestSpamLearningE2ERspamd(t *testing.T) {
	d := spamtest.StartDNS(t, spamE2EZone)
	redis := statetest.Redis(t)
	eng := spamtest.StartRspamdBayes(t, d.Addr, redis.Addr)
	n := spamE2ENodeWith(t, d.Addr, map[string]any{"engine": "rspamd", "rspamd_url": eng.URL, "dnsbl": []any{"bl.test"},
		"rspamd_controller_url": eng.ControllerURL}, func(doc map[string]any) {
		harness.Set(doc, "dovecot.sieve", map[string]any{"junk_folder": "Junk"})
		harness.Set(doc, "dovecot.spam_learning", true)
	})
	const bob = "bob@example.com"
	// A clean message in INBOX, a tagged one (the listed client) in Junk.
	lunch := harness.NewMessage("x@sender.test", bob, "lunch", learningBody("lunch"))
	watches := harness.NewMessage("x@sender.test", bob, "watches", learningBody("watches"))
	if r := spamSend(t, n, "", "x@sender.test", bob, lunch); r.Code != 250 {
		t.Fatalf("clean: %v", r)
	}
	if r := spamSend(t, n, listedClient, "x@sender.test", bob, watches); r.Code != 250 {
		t.Fatalf("tagged: %v", r)
	}
	n.WaitMaildir(t, bob, 1)
	n.WaitFolder(t, bob, "Junk", 1)
	if l, raw := rspamdLearned(t, eng.ControllerURL); l != 0 {
		t.Fatalf("rspamd learned %d messages before any move: %s", l, raw)
	}

	// Out of Junk: ham.
	lines, err := n.IMAPSession(bob, "bobpass", "move Junk INBOX watches")
	if err != nil || !slices.Contains(lines, "MOVED Junk INBOX 1") {
		t.Fatalf("move out of Junk: %q %v", lines, err)
	}
	waitLearned(t, eng, 1, "ham", watches)
	// Into Junk: spam.
	lines, err = n.IMAPSession(bob, "bobpass", "move INBOX Junk lunch", "count INBOX", "count Junk")
	if err != nil || !slices.Contains(lines, "MOVED INBOX Junk 1") || !slices.Contains(lines, "COUNT Junk 1") || !slices.Contains(lines, "COUNT INBOX 1") {
		t.Fatalf("move into Junk: %q %v", lines, err)
	}
	waitLearned(t, eng, 2, "spam", lunch)
	if log := dovecotLog(n); strings.Contains(log, "Error:") {
		t.Errorf("Dovecot logged errors:\n%s", log)
	}
}

// waitLearned polls rspamd until its /stat counts total messages learned
// and its controller has logged the message with this Message-ID as
// learned as class ("spam", "ham").
func waitLearned(t *testing.T, eng *spamtest.Engine, total int, class string, msg []byte) {
	t.Helper()
	m, err := mail.ReadMessage(bytes.NewReader(msg))
	if err != nil {
		t.Fatal(err)
	}
	id := strings.Trim(m.Header.Get("Message-ID"), "<>")
	line := "learned message as " + class + ": " + id
	var n int
	var raw string
	for deadline := time.Now().Add(15 * time.Second); time.Now().Before(deadline); time.Sleep(100 * time.Millisecond) {
		if n, raw = rspamdLearned(t, eng.ControllerURL); n == total {
			break
		}
	}
	if n != total {
		t.Fatalf("rspamd: %d messages learned, want %d\n/stat: %s\n%s", n, total, raw, eng.Log())
	}
	if !eng.WaitLog(line, 5*time.Second) {
		t.Fatalf("rspamd did not log %q\n%s", line, eng.Log())
	}
}

// spamdLearned returns nspam and nham of spamd's Bayes database, as
// SpamAssassin's own sa-learn --dump magic shows them.
func spamdLearned(t *testing.T, eng *spamtest.Engine) (spamN, hamN int, raw string) {
	t.Helper()
	out, err := exec.Command("sa-learn", "--dbpath", eng.BayesPath(), "--dump", "magic").CombinedOutput()
	if err != nil {
		return -1, -1, fmt.Sprintf("sa-learn: %v\n%s", err, out)
	}
	for _, l := range strings.Split(string(out), "\n") {
		f := strings.Fields(l)
		if len(f) < 4 {
			continue
		}
		v, _ := strconv.Atoi(f[2])
		switch f[len(f)-1] {
		case "nspam":
			spamN = v
		case "nham":
			hamN = v
		}
	}
	return spamN, hamN, string(out)
}

// dovecot.spam_learning with spamd: the same moves, TELL, and
// SpamAssassin's Bayes database counts them.
func TestSpamLearningE2ESpamd(t *testing.T) {
	d := spamtest.StartDNS(t, spamE2EZone)
	eng := spamtest.StartSpamdBayes(t)
	n := spamE2ENodeWith(t, d.Addr, map[string]any{"engine": "spamd", "spamd_address": eng.Addr, "dnsbl": []any{"bl.test"}}, func(doc map[string]any) {
		harness.Set(doc, "dovecot.sieve", map[string]any{"junk_folder": "Junk"})
		harness.Set(doc, "dovecot.spam_learning", true)
	})
	const bob = "bob@example.com"
	if r := spamSend(t, n, "", "x@sender.test", bob, harness.NewMessage("x@sender.test", bob, "lunch", learningBody("lunch"))); r.Code != 250 {
		t.Fatalf("clean: %v", r)
	}
	if r := spamSend(t, n, listedClient, "x@sender.test", bob, harness.NewMessage("x@sender.test", bob, "watches", learningBody("watches"))); r.Code != 250 {
		t.Fatalf("tagged: %v", r)
	}
	n.WaitMaildir(t, bob, 1)
	n.WaitFolder(t, bob, "Junk", 1)
	wait := func(spamN, hamN int) {
		t.Helper()
		var s, h int
		var raw string
		for deadline := time.Now().Add(20 * time.Second); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
			if s, h, raw = spamdLearned(t, eng); s == spamN && h == hamN {
				return
			}
		}
		t.Fatalf("spamd's Bayes: nspam %d, nham %d; want %d and %d\n%s\n%s\n%s", s, h, spamN, hamN, raw, eng.Log(), dovecotLog(n))
	}
	if lines, err := n.IMAPSession(bob, "bobpass", "move Junk INBOX watches"); err != nil || !slices.Contains(lines, "MOVED Junk INBOX 1") {
		t.Fatalf("move out of Junk: %q %v", lines, err)
	}
	wait(0, 1)
	if lines, err := n.IMAPSession(bob, "bobpass", "move INBOX Junk lunch"); err != nil || !slices.Contains(lines, "MOVED INBOX Junk 1") {
		t.Fatalf("move into Junk: %q %v", lines, err)
	}
	wait(1, 1)

	// The engine down: the lesson is lost (Dovecot logs it), the move
	// itself happens.
	eng.Stop()
	lines, err := n.IMAPSession(bob, "bobpass", "move Junk INBOX lunch", "count INBOX", "count Junk")
	if err != nil || !slices.Contains(lines, "MOVED Junk INBOX 1") || !slices.Contains(lines, "COUNT INBOX 2") || !slices.Contains(lines, "COUNT Junk 0") {
		t.Fatalf("move with spamd down: %q %v", lines, err)
	}
	if log := dovecotLog(n); !strings.Contains(log, "failed to execute to program `mailnode-learn'") {
		t.Errorf("Dovecot did not log the failed learning:\n%s", log)
	}
}
