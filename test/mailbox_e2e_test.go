package test

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mailnode/mailnode/spam/spamtest"
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
