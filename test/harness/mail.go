package harness

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/mailnode/mailnode/inventory"
)

// DeliveryTimeout is how long the Wait helpers poll for a delivery.
var DeliveryTimeout = 30 * time.Second

// Mail is one delivered message file.
type Mail struct {
	Path string
	Data []byte // as stored: LF line ends, with the headers the delivery added
}

// MaildirPath is the Maildir of a mailbox address (mail_location
// maildir:DIR/vmail/%d/%n).
func (n *Node) MaildirPath(addr string) string {
	local, domain := inventory.SplitAddress(addr)
	return n.path("vmail", domain, local)
}

// FolderPath is the Maildir++ directory of one folder of a mailbox
// ("Junk": DIR/vmail/<domain>/<user>/.Junk); "" or "INBOX" is the mailbox's
// own Maildir.
func (n *Node) FolderPath(addr, folder string) string {
	if folder == "" || strings.EqualFold(folder, "INBOX") {
		return n.MaildirPath(addr)
	}
	return filepath.Join(n.MaildirPath(addr), "."+folder)
}

// ReadMaildir returns the messages in a mailbox's Maildir (new/ and cur/),
// oldest first by file name.
func (n *Node) ReadMaildir(addr string) ([]Mail, error) { return n.ReadFolder(addr, "") }

// ReadFolder returns the messages of one folder of a mailbox (FolderPath),
// oldest first by file name.
func (n *Node) ReadFolder(addr, folder string) ([]Mail, error) {
	dir := n.FolderPath(addr, folder)
	var out []Mail
	for _, sub := range []string{"new", "cur"} {
		ents, err := os.ReadDir(filepath.Join(dir, sub))
		if os.IsNotExist(err) {
			continue
		}
		if err != nil {
			return nil, err
		}
		for _, e := range ents {
			p := filepath.Join(dir, sub, e.Name())
			b, err := os.ReadFile(p)
			if err != nil {
				return nil, err
			}
			out = append(out, Mail{Path: p, Data: b})
		}
	}
	sort.Slice(out, func(i, j int) bool { return filepath.Base(out[i].Path) < filepath.Base(out[j].Path) })
	return out, nil
}

// WaitMaildir polls until addr's Maildir holds at least want messages and
// returns them; it fails the test after DeliveryTimeout.
func (n *Node) WaitMaildir(t testing.TB, addr string, want int) []Mail {
	t.Helper()
	return n.WaitFolder(t, addr, "", want)
}

// WaitFolder polls until one folder of addr's mailbox (FolderPath) holds
// at least want messages and returns them; it fails the test after
// DeliveryTimeout.
func (n *Node) WaitFolder(t testing.TB, addr, folder string, want int) []Mail {
	t.Helper()
	var got []Mail
	err := poll(func() bool {
		var err error
		got, err = n.ReadFolder(addr, folder)
		return err == nil && len(got) >= want
	})
	if err != nil {
		where := "maildir of " + addr
		if folder != "" {
			where = "folder " + folder + " of " + addr
		}
		t.Fatalf("%s: %d message(s) after %s, want %d\n--- mail log:\n%s", where, len(got), DeliveryTimeout, want, n.MailLog())
	}
	return got
}

// SpoolPath is the local(8) mailbox (mbox) of a unix user.
func (n *Node) SpoolPath(user string) string { return n.path("spool", user) }

// WaitSpool polls until the unix user's mbox holds at least want messages
// and returns them split at the "From " separator lines (the separator
// line itself is kept at the start of each).
func (n *Node) WaitSpool(t testing.TB, user string, want int) []Mail {
	t.Helper()
	var got []Mail
	err := poll(func() bool {
		b, err := os.ReadFile(n.SpoolPath(user))
		if err != nil {
			return false
		}
		got = SplitMbox(n.SpoolPath(user), b)
		return len(got) >= want
	})
	if err != nil {
		t.Fatalf("mailbox of unix user %s: %d message(s) after %s, want %d\n--- mail log:\n%s", user, len(got), DeliveryTimeout, want, n.MailLog())
	}
	return got
}

// SplitMbox splits an mbox file into its messages.
func SplitMbox(path string, b []byte) []Mail {
	var out []Mail
	for _, part := range bytes.SplitAfter(b, []byte("\n\nFrom ")) {
		if len(out) > 0 {
			part = append([]byte("From "), part...)
		}
		part = bytes.TrimSuffix(part, []byte("From "))
		if len(bytes.TrimSpace(part)) > 0 {
			out = append(out, Mail{Path: path, Data: part})
		}
	}
	return out
}

// WaitSink waits for at least want messages at the relay sink.
func (n *Node) WaitSink(t testing.TB, want int) []Message {
	t.Helper()
	if n.Sink == nil {
		t.Fatal("this node has no in-process sink (Options.RelayNexthop was set)")
	}
	got, err := n.Sink.Wait(want, DeliveryTimeout)
	if err != nil {
		t.Fatalf("%v\n--- mail log:\n%s", err, n.MailLog())
	}
	return got
}

// WaitLog polls until the mail log contains substr.
func (n *Node) WaitLog(t testing.TB, substr string) {
	t.Helper()
	if err := poll(func() bool { return strings.Contains(n.MailLog(), substr) }); err != nil {
		t.Fatalf("mail log: no %q after %s\n%s", substr, DeliveryTimeout, n.MailLog())
	}
}

// DaemonLogWith polls until the log of daemon name holds every one of
// substrs and returns it; ok is false when DeliveryTimeout passed first.
// The daemons write their logs in batches (every 100 ms), not line by line.
func (n *Node) DaemonLogWith(name string, substrs ...string) (log string, ok bool) {
	err := poll(func() bool {
		log = n.DaemonLog(name)
		for _, s := range substrs {
			if !strings.Contains(log, s) {
				return false
			}
		}
		return true
	})
	return log, err == nil
}

func poll(cond func() bool) error {
	deadline := time.Now().Add(DeliveryTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			return fmt.Errorf("timeout")
		}
		time.Sleep(25 * time.Millisecond)
	}
	return nil
}

// LF converts CRLF line ends to LF: how Maildir and mbox store a message
// that was sent with CRLF.
func LF(b []byte) []byte { return bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n")) }

// NewMessage builds a small RFC 5322 message with CRLF line ends and a
// unique Message-ID, for tests that check the delivered bytes.
func NewMessage(from, to, subject, body string) []byte {
	msgSeq++
	return []byte(fmt.Sprintf("From: <%s>\r\nTo: <%s>\r\nSubject: %s\r\nDate: Mon, 02 Mar 2026 10:00:00 +0000\r\nMessage-ID: <e2e-%d-%d@client.test>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=us-ascii\r\n\r\n%s\r\n",
		from, to, subject, time.Now().UnixNano(), msgSeq, body))
}

var msgSeq int
