package test

import (
	"bytes"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/mailnode/mailnode/test/harness"
)

// nullClientAddr is a non-loopback address of the test's namespace, put on
// lo for this test: the null client's host address as the network sees it.
// (TEST-NET-1: never routed anywhere, and the namespace has no route out.)
const nullClientAddr = "192.0.2.25"

// The null client (examples/nullclient.yaml) through a real Postfix and a
// real milterd: mail submitted with its sendmail(1) and through its
// loopback smtpd, to a local domain's user and to an outside address, all
// leaves for the relayhost (a harness sink in smarthost mode: STARTTLS,
// then AUTH with the inventory's postfix.relayhost_auth), signed with the
// null client's own selectors, which python3-dkim accepts with the keys
// `mailnode dkim keygen` prints for publication. Nothing is delivered on the
// node, no Dovecot runs, and its address off loopback offers no SMTP.
func TestNullClient(t *testing.T) {
	const user, pass = "app1@example.com", "app1 smarthost secret"
	sh := startSmarthost(t, user, pass, false)
	root, err := harness.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	secret := filepath.Join(t.TempDir(), "relayhost.secret")
	if err := os.WriteFile(secret, []byte(pass+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	n := harness.StartNode(t, harness.Options{Inventory: filepath.Join(root, "examples", "nullclient.yaml"), Milter: true, DKIMKeys: true,
		Edit: func(doc map[string]any) {
			harness.Set(doc, "postfix.relayhost", "[127.0.0.1]:"+sh.Port())
			harness.Set(doc, "postfix.relayhost_auth", map[string]any{"username": user, "password_file": secret})
		}})
	if !n.NullClient {
		t.Fatal("examples/nullclient.yaml did not start a null client")
	}
	keys := keygenKeys(t, n)
	sels := []string{"app1e/ed25519-sha256", "app1r/rsa-sha256"}

	// atRelayhost waits for the message with Message-ID id at the smarthost
	// and checks that it came with the login, to the recipient, signed.
	atRelayhost := func(t *testing.T, id, from, rcpt string) harness.Message {
		t.Helper()
		want := []byte("\r\nMessage-ID: " + id + "\r\n")
		deadline := time.Now().Add(harness.DeliveryTimeout)
		for {
			for _, m := range sh.Messages() {
				if hdr, _, ok := bytes.Cut(m.Data, []byte("\r\n\r\n")); ok && bytes.Contains(append(hdr, '\r', '\n'), want) {
					if m.Login != user || m.From != from || strings.Join(m.To, ",") != rcpt {
						t.Errorf("the relayhost got login %q, from %q, to %v; want %q, %q, %s", m.Login, m.From, m.To, user, from, rcpt)
					}
					verifySigned(t, keys, m.Data, "example.com", sels)
					return m
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("no message %s at the relayhost after %v\n--- mail log:\n%s\n--- milterd log:\n%s", id, harness.DeliveryTimeout, n.MailLog(), n.DaemonLog("milterd"))
			}
			time.Sleep(50 * time.Millisecond)
		}
	}

	for _, rcpt := range []string{"bob@example.com", "frank@example.org"} {
		t.Run("sendmail to "+rcpt, func(t *testing.T) {
			msg, id := dkimTestMessage("alice@example.com", rcpt, "from the application", testBody)
			if out, err := sendmail(n, "alice@example.com", rcpt, msg); err != nil {
				t.Fatalf("sendmail: %v\n%s", err, out)
			}
			atRelayhost(t, id, "alice@example.com", rcpt)
		})
		t.Run("loopback smtpd, trusted client, to "+rcpt, func(t *testing.T) {
			msg, id := dkimTestMessage("alice@example.com", rcpt, "over loopback SMTP", testBody)
			wantFinal(t, send(t, n.SMTP, harness.Envelope{LocalAddr: harness.TrustedClient, From: "alice@example.com", To: []string{rcpt}, Data: msg}))
			atRelayhost(t, id, "alice@example.com", rcpt)
		})
	}
	if log, ok := n.DaemonLogWith("milterd", "origin=local"); !ok {
		t.Errorf("milterd logged no local submission (non_smtpd_milters):\n%s", log)
	}

	t.Run("a unix user's mail leaves too: local delivery is off", func(t *testing.T) {
		msg, id := dkimTestMessage("alice@example.com", "root", "cron output", testBody)
		if out, err := sendmail(n, "alice@example.com", "root", msg); err != nil {
			t.Fatalf("sendmail: %v\n%s", err, out)
		}
		atRelayhost(t, id, "alice@example.com", "root@"+n.Hostname)
	})

	t.Run("an untrusted loopback client is refused", func(t *testing.T) {
		before := len(sh.Messages())
		for _, rcpt := range []string{"bob@example.com", "frank@example.org"} {
			tr := send(t, n.SMTP, harness.Envelope{LocalAddr: harness.OutsideClient, From: "alice@example.com", To: []string{rcpt},
				Data: harness.NewMessage("alice@example.com", rcpt, "not from here", "x")})
			if len(tr.Rcpt) != 1 || tr.Rcpt[0].Code/100 != 5 || tr.Final.Code == 250 {
				t.Errorf("untrusted client to %s: RCPT %v, final %q; want a 5xx at RCPT", rcpt, tr.Rcpt, tr.Final.Text())
			} else {
				t.Logf("untrusted client to %s: %s", rcpt, tr.Rcpt[0].Text())
			}
		}
		time.Sleep(time.Second)
		if got := len(sh.Messages()); got != before {
			t.Errorf("the relayhost got %d messages from an untrusted client", got-before)
		}
	})

	t.Run("no SMTP service off loopback", func(t *testing.T) {
		if out, err := exec.Command("ip", "addr", "add", nullClientAddr+"/32", "dev", "lo").CombinedOutput(); err != nil {
			t.Fatalf("ip addr add: %v\n%s", err, out)
		}
		t.Cleanup(func() { exec.Command("ip", "addr", "del", nullClientAddr+"/32", "dev", "lo").Run() })
		_, port, _ := net.SplitHostPort(n.SMTP)
		for _, p := range []string{port, "25"} {
			c, err := net.DialTimeout("tcp", net.JoinHostPort(nullClientAddr, p), 5*time.Second)
			if err == nil {
				c.Close()
				t.Errorf("%s:%s accepts TCP connections: the null client listens off loopback", nullClientAddr, p)
				continue
			}
			if !errors.Is(err, syscall.ECONNREFUSED) {
				t.Errorf("%s:%s: %v, want connection refused", nullClientAddr, p, err)
			}
		}
		// The loopback smtpd is there all the same.
		if err := harness.WaitBanner(n.SMTP, 5*time.Second); err != nil {
			t.Error(err)
		}
	})

	t.Run("nothing delivered here, no Dovecot", func(t *testing.T) {
		sent := 0
		for _, l := range strings.Split(n.MailLog(), "\n") {
			if strings.Contains(l, "status=") && !strings.Contains(l, "relay=127.0.0.1[127.0.0.1]:"+sh.Port()) {
				t.Errorf("a delivery not to the relayhost: %s", l)
			}
			if strings.Contains(l, "status=sent") {
				sent++
			}
		}
		if sent != 5 {
			t.Errorf("%d messages sent to the relayhost, want the 5 of this test", sent)
		}
		for _, d := range []string{"vmail", "spool"} {
			if es, _ := os.ReadDir(filepath.Join(n.Dir, d)); len(es) > 0 {
				t.Errorf("%s/%s holds %d entries: mail was delivered on the null client", n.Dir, d, len(es))
			}
		}
		for _, f := range []string{"dovecot", "dns"} {
			if _, err := os.Stat(filepath.Join(n.Dir, f)); err == nil {
				t.Errorf("render-config wrote %s/ for a null client", f)
			}
		}
		procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
		for _, p := range procs {
			b, _ := os.ReadFile(p)
			if args := strings.Split(string(b), "\x00"); strings.HasSuffix(args[0], "dovecot") || strings.HasSuffix(args[0], "policyd") || (len(args) > 1 && args[1] == "policyd") {
				if bytes.Contains(b, []byte(n.Dir)) {
					t.Errorf("%s runs for the null client: %q", filepath.Dir(p), args)
				}
			}
		}
	})
	if c := sh.Counts(); c.ClearAuth+c.ClearMail != 0 {
		t.Errorf("before STARTTLS: %d AUTH and %d MAIL attempts", c.ClearAuth, c.ClearMail)
	}
}

// keygenKeys writes the DKIM records `mailnode dkim keygen` prints for the
// node's keys (the records an admin publishes; a null client renders no
// zone) into a key file for pyVerify.
func keygenKeys(t *testing.T, n *harness.Node) string {
	t.Helper()
	out, err := exec.Command(n.Bin, "dkim", "keygen", "--inventory", n.InventoryPath).Output()
	if err != nil {
		t.Fatalf("mailnode dkim keygen: %v\n%s", err, out)
	}
	zp := dns.NewZoneParser(bytes.NewReader(out), "", "keygen")
	var lines []string
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		if txt, isTXT := rr.(*dns.TXT); isTXT {
			lines = append(lines, strings.TrimSuffix(strings.ToLower(txt.Hdr.Name), ".")+" "+strings.Join(txt.Txt, ""))
		}
	}
	if err := zp.Err(); err != nil {
		t.Fatalf("dkim keygen output: %v\n%s", err, out)
	}
	want := 0
	for _, d := range n.Inv.LocalDomains() {
		want += len(d.DKIM)
	}
	if len(lines) != want {
		t.Fatalf("dkim keygen printed %d DKIM records, want %d:\n%s", len(lines), want, out)
	}
	f := filepath.Join(t.TempDir(), "dkim-keys")
	if err := os.WriteFile(f, []byte(strings.Join(lines, "\n")+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	return f
}
