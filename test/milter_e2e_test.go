package test

import (
	"bufio"
	"bytes"
	"fmt"
	"net/mail"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mailnode/mailnode/dkim"
	"github.com/mailnode/mailnode/test/harness"
)

// milterd's DKIM signing through a real Postfix (smtpd_milters and
// non_smtpd_milters), Dovecot SASL and policyd, checked by an independent
// verifier: python3-dkim (Debian's python3-dkim, through
// dkim/testdata/pydkimverify.py) with the public keys taken from the zone
// files render-config wrote. Signed mail goes to the relay domain
// partner.org, whose next hop is the harness's sink, so the test sees the
// bytes exactly as they leave the node.
func TestMilterDKIMEndToEnd(t *testing.T) {
	n := harness.StartNode(t, harness.Options{Policy: true, Milter: true, DKIMKeys: true, Edit: func(doc map[string]any) {
		// Greylisting would hold the inbound message; it is policyd's
		// business and tested there.
		harness.Set(doc, "policy.greylist.enabled", false)
		// Room for the 50 MiB message, through the inventory.
		harness.Set(doc, "postfix.message_size_limit", 64<<20)
	}})
	keys := zoneKeys(t, n)
	const relayRcpt = "dave@partner.org"

	// wantSigned: the message carries the signatures wantSels
	// (selector/algorithm) of domain, top first, and python3-dkim accepts
	// every one of them; once one body byte changed, it rejects them all.
	wantSigned := func(t *testing.T, raw []byte, domain string, wantSels ...string) {
		t.Helper()
		verifySigned(t, keys, raw, domain, wantSels)
		out, ok := pyVerify(t, keys, flipBodyByte(t, raw))
		if ok || strings.Contains(out, "pass ") || strings.Count(out, "fail ") != len(wantSels) {
			t.Errorf("python3-dkim accepts a signature after one body byte changed:\n%s", out)
		}
	}

	t.Run("authenticated user on submission: RSA and Ed25519", func(t *testing.T) {
		msg, id := dkimTestMessage("Alice Smith <alice@example.com>", relayRcpt, "quarterly   figures", testBody)
		tr := send(t, n.Submission, harness.Envelope{StartTLS: true, AuthUser: "alice@example.com", AuthPass: "alicepass",
			From: "alice@example.com", To: []string{relayRcpt}, Data: msg})
		if tr.Auth.Code != 235 {
			t.Fatalf("AUTH: %q", tr.Auth.Text())
		}
		wantFinal(t, tr)
		m := waitSinkID(t, n, id, harness.DeliveryTimeout)
		wantSigned(t, m.Data, "example.com", "mx2026r/rsa-sha256", "mx2026e/ed25519-sha256")
		if !bytes.HasSuffix(m.Data, bodyOf(msg)) {
			t.Errorf("the body changed on the way:\n%s", m.Data)
		}
	})

	t.Run("trust host on port 25", func(t *testing.T) {
		msg, id := dkimTestMessage("bob@example.com", relayRcpt, "from the ERP", testBody)
		wantFinal(t, send(t, n.SMTP, harness.Envelope{LocalAddr: harness.TrustedClient, From: "bob@example.com", To: []string{relayRcpt}, Data: msg}))
		m := waitSinkID(t, n, id, harness.DeliveryTimeout)
		wantSigned(t, m.Data, "example.com", "mx2026r/rsa-sha256", "mx2026e/ed25519-sha256")
	})

	t.Run("a domain with only an RSA selector", func(t *testing.T) {
		msg, id := dkimTestMessage("carol@example.net", relayRcpt, "rsa only", testBody)
		wantFinal(t, send(t, n.SMTP, harness.Envelope{LocalAddr: harness.TrustedClient, From: "carol@example.net", To: []string{relayRcpt}, Data: msg}))
		m := waitSinkID(t, n, id, harness.DeliveryTimeout)
		wantSigned(t, m.Data, "example.net", "mx2026r/rsa-sha256")
	})

	t.Run("submitted on the node with sendmail: non_smtpd_milters", func(t *testing.T) {
		msg, id := dkimTestMessage("alice@example.com", relayRcpt, "from cron", testBody)
		out, err := sendmail(n, "alice@example.com", relayRcpt, msg)
		if err != nil {
			t.Fatalf("sendmail: %v\n%s", err, out)
		}
		m := waitSinkID(t, n, id, harness.DeliveryTimeout)
		wantSigned(t, m.Data, "example.com", "mx2026r/rsa-sha256", "mx2026e/ed25519-sha256")
		if log, ok := n.DaemonLogWith("milterd", "origin=local"); !ok {
			t.Errorf("milterd did not log the message as a local submission:\n%s", log)
		}
	})

	t.Run("outside sender with a local From: to the relay domain is not signed", func(t *testing.T) {
		msg, id := dkimTestMessage("alice@example.com", relayRcpt, "forged from", testBody)
		wantFinal(t, send(t, n.SMTP, harness.Envelope{From: "eve@outside.test", To: []string{relayRcpt}, Data: msg}))
		m := waitSinkID(t, n, id, harness.DeliveryTimeout)
		if sigs := headerValues(t, m.Data, "DKIM-Signature"); len(sigs) != 0 {
			t.Errorf("outside mail was signed as a local domain: %q", sigs)
		}
	})

	t.Run("outside to a local mailbox: not signed, Authentication-Results added, forged one removed", func(t *testing.T) {
		forged := "Authentication-Results: " + n.Hostname + "; dkim=pass header.d=example.com; spf=pass\r\n"
		msg, id := dkimTestMessage("eve@outside.test", "bob@example.com", "hello bob", testBody)
		msg = append([]byte(forged), msg...)
		before, _ := n.ReadMaildir("bob@example.com")
		wantFinal(t, send(t, n.SMTP, harness.Envelope{From: "eve@outside.test", To: []string{"bob@example.com"}, Data: msg}))
		got := n.WaitMaildir(t, "bob@example.com", len(before)+1)
		var m []byte
		for _, g := range got {
			if bytes.Contains(g.Data, []byte("Message-ID: "+id+"\n")) {
				m = g.Data
			}
		}
		if m == nil {
			t.Fatalf("bob's Maildir lacks %s", id)
		}
		if sigs := headerValues(t, m, "DKIM-Signature"); len(sigs) != 0 {
			t.Errorf("inbound mail was signed: %q", sigs)
		}
		var ours []string
		for _, v := range headerValues(t, m, "Authentication-Results") {
			if f := strings.Fields(strings.ReplaceAll(v, ";", " ; ")); len(f) > 0 && strings.EqualFold(f[0], n.Hostname) {
				ours = append(ours, v)
			}
		}
		if len(ours) != 1 {
			t.Fatalf("want exactly one Authentication-Results of %s, got %q\n%s", n.Hostname, ours, head(m))
		}
		if !strings.Contains(ours[0], "dkim=none") || strings.Contains(ours[0], "dkim=pass") {
			t.Errorf("Authentication-Results of an unsigned message: %q, want dkim=none and the forged dkim=pass gone", ours[0])
		}
	})

	t.Run("a 50 MiB message is signed with milterd's RSS under 64 MiB", func(t *testing.T) {
		pid := daemonPid(t, n, "milterd")
		checkMessageSizeLimit(t, n, 64<<20)
		var body bytes.Buffer
		for i := 0; body.Len() < 50<<20; i++ {
			fmt.Fprintf(&body, "%07d %s\r\n", i, bigLines[i%len(bigLines)])
		}
		msg, id := dkimTestMessage("alice@example.com", relayRcpt, "50 MiB", body.String())
		hwm0 := vmHWM(t, pid)
		start := time.Now()
		c, _, err := harness.Dial(n.Submission, harness.DialOptions{Timeout: 3 * time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		for _, step := range []struct {
			cmd  string
			want int
			f    func() (harness.Reply, error)
		}{
			{"EHLO", 250, func() (harness.Reply, error) { return c.Hello("client.test") }},
			{"STARTTLS", 220, c.StartTLS},
			{"EHLO", 250, func() (harness.Reply, error) { return c.Hello("client.test") }},
			{"AUTH", 235, func() (harness.Reply, error) { return c.AuthPlain("alice@example.com", "alicepass") }},
			{"MAIL", 250, func() (harness.Reply, error) { return c.Cmd("MAIL FROM:<alice@example.com> SIZE=%d", len(msg)) }},
			{"RCPT", 250, func() (harness.Reply, error) { return c.Cmd("RCPT TO:<%s>", relayRcpt) }},
		} {
			r, err := step.f()
			if err != nil || r.Code != step.want {
				t.Fatalf("%s: %q %v", step.cmd, r.Text(), err)
			}
		}
		_, final, err := c.Data(msg)
		if err != nil || final.Code != 250 {
			t.Fatalf("DATA of %d bytes: %q %v", len(msg), final.Text(), err)
		}
		c.Quit()
		m := waitSinkID(t, n, id, 3*time.Minute)
		hwm := vmHWM(t, pid)
		t.Logf("%d-byte message relayed in %v; milterd VmHWM %.1f MiB before, %.1f MiB after", len(m.Data), time.Since(start).Round(time.Millisecond), float64(hwm0)/(1<<20), float64(hwm)/(1<<20))
		if len(m.Data) < 50<<20 {
			t.Errorf("the next hop received %d bytes, want at least 50 MiB", len(m.Data))
		}
		if hwm >= 64<<20 {
			t.Errorf("milterd's peak RSS (VmHWM) is %.1f MiB, want under 64 MiB", float64(hwm)/(1<<20))
		}
		// python3-dkim canonicalizes the body once per signature and takes
		// long over 50 MiB: both signatures share the body hash, so it
		// checks the RSA one (the Ed25519 field is not among the signed
		// fields and may go); the tampered copy is left to the small
		// messages above.
		checkSignatureFields(t, m.Data, "example.com", []string{"mx2026r/rsa-sha256", "mx2026e/ed25519-sha256"})
		verifySigned(t, keys, dropField(m.Data, "DKIM-Signature", "a=ed25519-sha256"), "example.com", []string{"mx2026r/rsa-sha256"})
	})

	// Last: milterd goes away. Postfix must then refuse with 4xx
	// (milter_default_action = tempfail), not pass mail unsigned.
	t.Run("milterd stopped: 4xx, no unsigned local mail leaves", func(t *testing.T) {
		if err := n.StopDaemon("milterd"); err != nil {
			t.Fatal(err)
		}
		sinkBefore := len(n.Sink.Messages())
		for _, c := range []struct {
			name string
			addr string
			env  harness.Envelope
		}{
			{"submission", n.Submission, harness.Envelope{StartTLS: true, AuthUser: "alice@example.com", AuthPass: "alicepass", From: "alice@example.com"}},
			{"trust host", n.SMTP, harness.Envelope{LocalAddr: harness.TrustedClient, From: "bob@example.com"}},
		} {
			msg, _ := dkimTestMessage(c.env.From, relayRcpt, "while milterd is down", testBody)
			c.env.To, c.env.Data = []string{relayRcpt}, msg
			tr := send(t, c.addr, c.env)
			stages := []harness.Reply{tr.Banner, tr.EHLO, tr.StartTLS, tr.EHLO2, tr.Auth, tr.Mail}
			stages = append(stages, tr.Rcpt...)
			stages = append(stages, tr.DataCmd, tr.Final)
			var tempfail *harness.Reply
			for i := range stages {
				if stages[i].Code >= 400 {
					tempfail = &stages[i]
					break
				}
			}
			switch {
			case tempfail == nil:
				t.Errorf("%s: nothing refused: %+v", c.name, tr)
			case tempfail.Code/100 != 4:
				t.Errorf("%s: refused with %q, want a temporary (4xx) reply", c.name, tempfail.Text())
			default:
				t.Logf("%s with milterd down: %q", c.name, tempfail.Text())
			}
		}
		// sendmail(1) itself succeeds (postdrop queues the file), but
		// cleanup cannot reach the milter: the message stays in maildrop/.
		msg, _ := dkimTestMessage("alice@example.com", relayRcpt, "cron while milterd is down", testBody)
		if out, err := sendmail(n, "alice@example.com", relayRcpt, msg); err != nil {
			t.Fatalf("sendmail: %v\n%s", err, out)
		}
		n.WaitLog(t, "milter")
		deadline := time.Now().Add(5 * time.Second)
		for time.Now().Before(deadline) {
			if got := len(n.Sink.Messages()); got != sinkBefore {
				t.Fatalf("%d message(s) left the node while milterd was down", got-sinkBefore)
			}
			time.Sleep(100 * time.Millisecond)
		}
		held, _ := os.ReadDir(filepath.Join(n.Inv.Postfix.QueueDirectory, "maildrop"))
		if len(held) == 0 {
			t.Errorf("the locally submitted message is neither delivered nor waiting in maildrop/\n%s", n.MailLog())
		}
	})
}

// verifySigned checks that raw carries exactly the DKIM signatures wantSels
// ("selector/algorithm" of domain, top first), relaxed/relaxed, without l=,
// From over-signed, and that python3-dkim accepts every one of them with
// the keys of the rendered zone.
func verifySigned(t *testing.T, keys string, raw []byte, domain string, wantSels []string) {
	t.Helper()
	checkSignatureFields(t, raw, domain, wantSels)
	out, ok := pyVerify(t, keys, raw)
	if !ok {
		t.Errorf("python3-dkim rejects the message as delivered:\n%s\n--- message head:\n%s", out, head(raw))
	}
	for _, s := range wantSels {
		sel, alg, _ := strings.Cut(s, "/")
		if line := "pass " + alg + " " + domain + " " + sel; !strings.Contains(out, line+"\n") {
			t.Errorf("python3-dkim output lacks %q:\n%s", line, out)
		}
	}
}

// checkSignatureFields checks the DKIM-Signature fields themselves.
func checkSignatureFields(t *testing.T, raw []byte, domain string, wantSels []string) {
	t.Helper()
	var got []string
	for _, v := range headerValues(t, raw, "DKIM-Signature") {
		tags := dkimTags(t, v)
		got = append(got, tags["d"]+"/"+tags["s"]+"/"+tags["a"])
		if tags["c"] != "relaxed/relaxed" || tags["l"] != "" || tags["v"] != "1" {
			t.Errorf("signature %s: c=%q l=%q v=%q, want relaxed/relaxed, no l=, v=1", tags["s"], tags["c"], tags["l"], tags["v"])
		}
		froms := 0
		for _, f := range strings.Split(strings.ToLower(tags["h"]), ":") {
			if f == "from" {
				froms++
			}
		}
		if froms != 2 {
			t.Errorf("signature %s: h=%s does not over-sign From (listed twice for one From field)", tags["s"], tags["h"])
		}
	}
	var want []string
	for _, s := range wantSels {
		want = append(want, domain+"/"+s)
	}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("DKIM-Signature fields (d/s/a, top first): got %v, want %v", got, want)
	}
}

// dropField returns raw without the header fields called name whose
// (folded) value contains substr.
func dropField(raw []byte, name, substr string) []byte {
	hdr, body, _ := bytes.Cut(raw, []byte("\r\n\r\n"))
	var out bytes.Buffer
	var field []byte
	keep := func() {
		n, v, _ := bytes.Cut(field, []byte(":"))
		if field != nil && !(strings.EqualFold(string(n), name) && bytes.Contains(v, []byte(substr))) {
			out.Write(field)
		}
	}
	for _, l := range bytes.SplitAfter(append(hdr, "\r\n"...), []byte("\r\n")) {
		if len(l) > 0 && (l[0] == ' ' || l[0] == '\t') {
			field = append(field, l...)
			continue
		}
		keep()
		field = append([]byte(nil), l...)
	}
	keep()
	out.WriteString("\r\n")
	out.Write(body)
	return out.Bytes()
}

// testBody exercises relaxed body canonicalization: tabs, runs of spaces,
// trailing whitespace, a leading dot and empty lines at the end.
const testBody = "Hello,\r\n\r\nthe figures\tare  attached. \r\n.a line starting with a dot\r\n\t indented\r\n\r\n\r\n"

var bigLines = []string{
	"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod",
	"tempor incididunt ut labore\tet dolore  magna aliqua. ",
	"",
	".veniam, quis nostrud exercitation ullamco laboris nisi ut aliquip ex ea",
}

var dkimMsgSeq int

// dkimTestMessage builds a message with the header fields milterd signs
// (a folded Subject, Cc, Reply-To) and returns it with its Message-ID.
func dkimTestMessage(from, to, subject, body string) ([]byte, string) {
	dkimMsgSeq++
	id := fmt.Sprintf("<dkim-%d-%d@client.test>", time.Now().UnixNano(), dkimMsgSeq)
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: %s\r\nTo: <%s>\r\nCc: Someone  Else <cc@outside.test>\r\nReply-To: <%s>\r\n", from, to, "reply@outside.test")
	fmt.Fprintf(&b, "Subject: %s\r\n\tcontinued on a folded line\r\nDate: Mon, 02 Mar 2026 10:00:00 +0000\r\nMessage-ID: %s\r\n", subject, id)
	b.WriteString("MIME-Version: 1.0\r\nContent-Type: text/plain;\r\n  charset=us-ascii\r\n\r\n")
	b.WriteString(body)
	return b.Bytes(), id
}

func bodyOf(msg []byte) []byte {
	_, body, _ := bytes.Cut(msg, []byte("\r\n\r\n"))
	return body
}

// waitSinkID waits for the message with Message-ID id at the relay sink.
func waitSinkID(t *testing.T, n *harness.Node, id string, timeout time.Duration) harness.Message {
	t.Helper()
	want := []byte("\r\nMessage-ID: " + id + "\r\n")
	for deadline := time.Now().Add(timeout); ; time.Sleep(50 * time.Millisecond) {
		for _, m := range n.Sink.Messages() {
			if hdr, _, ok := bytes.Cut(m.Data, []byte("\r\n\r\n")); ok && bytes.Contains(append(hdr, '\r', '\n'), want) {
				return m
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no message %s at the next hop after %v\n--- mail log:\n%s\n--- milterd log:\n%s", id, timeout, n.MailLog(), n.DaemonLog("milterd"))
		}
	}
}

// headerValues returns the values of every field called name.
func headerValues(t *testing.T, raw []byte, name string) []string {
	t.Helper()
	m, err := mail.ReadMessage(bytes.NewReader(raw))
	if err != nil {
		t.Fatalf("parsing the delivered message: %v\n%s", err, head(raw))
	}
	return m.Header[textproto.CanonicalMIMEHeaderKey(name)]
}

// dkimTags splits a DKIM-Signature value into its tags (whitespace removed).
func dkimTags(t *testing.T, v string) map[string]string {
	t.Helper()
	tags, err := dkim.ParseTags(v)
	if err != nil {
		t.Fatalf("DKIM-Signature %q: %v", v, err)
	}
	for k, val := range tags {
		tags[k] = dkim.StripFWS(val)
	}
	return tags
}

// head returns the header section of a message, for failure output.
func head(raw []byte) []byte {
	h, _, _ := bytes.Cut(raw, []byte("\r\n\r\n"))
	if len(h) == len(raw) {
		h, _, _ = bytes.Cut(raw, []byte("\n\n"))
	}
	return h
}

// flipBodyByte returns a copy of raw with the first letter of the body
// changed to another letter: a change no canonicalization undoes.
func flipBodyByte(t *testing.T, raw []byte) []byte {
	t.Helper()
	i := bytes.Index(raw, []byte("\r\n\r\n"))
	if i < 0 {
		t.Fatal("message without a body")
	}
	out := append([]byte(nil), raw...)
	for j := i + 4; j < len(out); j++ {
		if c := out[j]; c >= 'a' && c <= 'y' || c >= 'A' && c <= 'Y' {
			out[j] = c + 1
			return out
		}
	}
	t.Fatal("no letter in the body to change")
	return nil
}

// zoneKeys reads the DKIM TXT records of every local domain's zone file
// that render-config wrote (DIR/dns/<domain>.zone, DIR being the harness's
// --out directory, n.Dir) with miekg/dns's zone parser, and writes them as
// "NAME VALUE" lines for pydkimverify.py. It returns that file's path.
func zoneKeys(t *testing.T, n *harness.Node) string {
	t.Helper()
	var lines []string
	for _, d := range n.Inv.LocalDomains() {
		path := filepath.Join(n.Dir, "dns", d.Name+".zone")
		f, err := os.Open(path)
		if err != nil {
			t.Fatalf("rendered zone: %v", err)
		}
		zp := dns.NewZoneParser(f, d.Name+".", path)
		found := 0
		for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
			txt, isTXT := rr.(*dns.TXT)
			if !isTXT || !strings.Contains(strings.ToLower(txt.Hdr.Name), "._domainkey.") {
				continue
			}
			lines = append(lines, strings.TrimSuffix(strings.ToLower(txt.Hdr.Name), ".")+" "+strings.Join(txt.Txt, ""))
			found++
		}
		f.Close()
		if err := zp.Err(); err != nil {
			t.Fatalf("%s: %v", path, err)
		}
		if found != len(d.DKIM) {
			t.Fatalf("%s: %d DKIM records, want one per selector (%d)", path, found, len(d.DKIM))
		}
	}
	keyFile := filepath.Join(t.TempDir(), "dkim-keys")
	if err := os.WriteFile(keyFile, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return keyFile
}

// pyVerify runs python3-dkim on msg; ok is its verdict (all signatures
// pass), out its per-signature lines and errors.
func pyVerify(t *testing.T, keyFile string, msg []byte) (string, bool) {
	t.Helper()
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("/usr/bin/python3", filepath.Join(root, "dkim", "testdata", "pydkimverify.py"), keyFile)
	cmd.Stdin = bytes.NewReader(msg)
	out, err := cmd.CombinedOutput()
	if _, exited := err.(*exec.ExitError); err != nil && !exited {
		t.Fatalf("running python3-dkim: %v", err)
	}
	return string(out), err == nil
}

// sendmail submits msg on the node as root with Postfix's sendmail(1)
// and this node's configuration directory: pickup -> cleanup, which hands
// it to non_smtpd_milters. (A non-root user may not name another
// configuration directory unless /etc/postfix/main.cf lists it in
// alternate_config_directories; the tests leave /etc/postfix alone.)
func sendmail(n *harness.Node, from, to string, msg []byte) ([]byte, error) {
	cmd := exec.Command("/usr/sbin/sendmail", "-C", n.PostfixConfig, "-i", "-f", from, "--", to)
	cmd.Stdin = bytes.NewReader(harness.LF(msg))
	return cmd.CombinedOutput()
}

func daemonPid(t *testing.T, n *harness.Node, name string) int {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(n.Dir, "pids", name+".pid"))
	if err != nil {
		t.Fatalf("%s pid: %v", name, err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	return pid
}

// vmHWM is the peak resident set size of a process (VmHWM in
// /proc/PID/status), in bytes.
func vmHWM(t *testing.T, pid int) int64 {
	t.Helper()
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	s := bufio.NewScanner(f)
	for s.Scan() {
		if v, ok := strings.CutPrefix(s.Text(), "VmHWM:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err != nil {
				t.Fatalf("VmHWM %q: %v", v, err)
			}
			return kb << 10
		}
	}
	t.Fatalf("no VmHWM in /proc/%d/status", pid)
	return 0
}

// checkMessageSizeLimit: the inventory's postfix.message_size_limit reached
// main.cf and Postfix announces it.
func checkMessageSizeLimit(t *testing.T, n *harness.Node, limit int) {
	t.Helper()
	out, err := exec.Command("postconf", "-c", n.PostfixConfig, "-h", "message_size_limit").CombinedOutput()
	if err != nil {
		t.Fatalf("postconf: %v\n%s", err, out)
	}
	if got := strings.TrimSpace(string(out)); got != strconv.Itoa(limit) {
		t.Fatalf("rendered message_size_limit = %s, want %d from the inventory", got, limit)
	}
	c, _, err := harness.Dial(n.Submission, harness.DialOptions{})
	if err != nil {
		t.Fatal(err)
	}
	r, _ := c.Hello("client.test")
	c.Quit()
	if want := "SIZE " + strconv.Itoa(limit); !strings.Contains(r.Text(), want) {
		t.Fatalf("EHLO does not announce %q: %s", want, r.Text())
	}
}
