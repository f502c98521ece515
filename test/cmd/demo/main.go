// Command demo runs a private mailnode node for trying things by hand
// (`make demo` / `make demo-stop`):
//
//	go run ./test/cmd/demo up   --dir .demo
//	go run ./test/cmd/demo down --dir .demo
//
// up renders examples/inventory.yaml into DIR and starts Postfix, Dovecot,
// policyd and milterd from it on fixed loopback ports inside the network
// namespace mailnode-demo (only loopback: nothing reaches off the
// machine), with an SMTP sink standing in for the relay domain's next hop.
// It sends one welcome message through the node to check it works. Beside
// it runs a null client (examples/nullclient.yaml, in DIR/nullclient):
// Postfix and milterd only, relaying through the node's submission service
// with alice's login; one message submitted with its sendmail checks that
// path, signed by both. up then prints ready-to-paste swaks and sendmail
// lines and where mail lands. down stops everything and deletes the
// namespace; the mail in DIR stays (make clean
// removes it). Both need root. The building blocks are package
// test/harness, the same ones the end-to-end tests use.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"syscall"
	"time"

	"github.com/mailnode/mailnode/test/harness"
)

// Namespace is the long-lived network namespace of the demo.
const Namespace = "mailnode-demo"

// Fixed demo ports, so the printed commands stay the same.
var ports = harness.Ports{SMTP: 2525, Submission: 2587, IMAP: 2143, POP3: 2110, ManageSieve: 4190}

const sinkPort = 2526

// nullClientPort is the null client's loopback smtpd.
const nullClientPort = 2725

// nullClientDir is the null client's tree inside the demo's DIR.
func nullClientDir(dir string) string { return filepath.Join(dir, "nullclient") }

func usage() {
	fmt.Fprintf(os.Stderr, `usage: demo up|down [--dir DIR]

  up    render examples/inventory.yaml into DIR and start a private node
        (Postfix, Dovecot, policyd, milterd) in network namespace %s,
        and beside it the null client of examples/nullclient.yaml
  down  stop it and delete the namespace (DIR keeps the mail)
`, Namespace)
	os.Exit(2)
}

func main() {
	if len(os.Args) < 2 {
		usage()
	}
	cmd := os.Args[1]
	fs := flag.NewFlagSet(cmd, flag.ExitOnError)
	dir := fs.String("dir", ".demo", "state `DIR` of the demo node")
	listen := fs.String("listen", "", "sink: address to listen on")
	fs.Parse(os.Args[2:])
	abs, err := filepath.Abs(*dir)
	if err != nil {
		fail(err)
	}
	switch cmd {
	case "up":
		err = up(abs)
	case "down":
		err = down(abs)
	case "up-inside": // internal: the second half of up, inside the namespace
		err = upInside(abs)
	case "sink": // internal: the relay next hop, a process of its own
		err = sink(*listen, filepath.Join(abs, "sink"))
	default:
		usage()
	}
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "demo:", err)
	os.Exit(1)
}

func up(dir string) error {
	if err := harness.CheckPrerequisites(); err != nil {
		return fmt.Errorf("cannot start:\n  %v", err)
	}
	if running(dir) {
		fmt.Printf("The demo node is already running (state in %s).\n\n", dir)
		printHelp(dir)
		return nil
	}
	if err := os.MkdirAll(filepath.Join(dir, "bin"), 0o755); err != nil {
		return err
	}
	os.Chmod(dir, 0o755)
	root, err := harness.RepoRoot()
	if err != nil {
		return err
	}
	// Build outside the namespace (go may need the module proxy), and keep
	// a copy of this program for the sink process.
	bin, err := harness.BuildTo(root, filepath.Join(dir, "bin", "mailnode"))
	if err != nil {
		return err
	}
	self := filepath.Join(dir, "bin", "demo")
	if err := copyExecutable(self); err != nil {
		return err
	}
	if err := harness.CreateNetns(Namespace); err != nil {
		return err
	}
	c := exec.Command("ip", "netns", "exec", Namespace, self, "up-inside", "--dir", dir)
	c.Env = append(os.Environ(), harness.EnvBin+"="+bin, harness.EnvNetns+"="+Namespace)
	c.Dir = root
	c.Stdout, c.Stderr = os.Stdout, os.Stderr
	if err := c.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "demo: start-up failed; cleaning up")
		down(dir)
		return err
	}
	return nil
}

// greylistDelay replaces the example inventory's 300 s for the demo.
const greylistDelay = 15 * time.Second

func upInside(dir string) error {
	sinkAddr := "127.0.0.1:" + strconv.Itoa(sinkPort)
	if err := startSink(dir, sinkAddr); err != nil {
		return err
	}
	n, err := harness.Start(harness.Options{
		Dir:          dir,
		Ports:        ports,
		Policy:       true,
		Milter:       true,
		DKIMKeys:     true,
		RelayNexthop: "[127.0.0.1]:" + strconv.Itoa(sinkPort),
		Log:          func(f string, a ...any) { fmt.Printf(f+"\n", a...) },
		Edit: func(doc map[string]any) {
			// The example's greylisting, with a delay a demo can wait for.
			harness.Set(doc, "policy.greylist.delay", greylistDelay.String())
			// The mailbox side: spam into Junk (Sieve), ManageSieve, a
			// quota for every mailbox.
			harness.Set(doc, "dovecot.sieve", map[string]any{"junk_folder": "Junk"})
			harness.Set(doc, "dovecot.quota", "1G")
		},
	})
	if err != nil {
		return err
	}
	// Check it works: one welcome message through port 25 into a Maildir.
	msg := harness.NewMessage("demo@outside.test", "alice@example.com", "Welcome to the mailnode demo",
		"This message went through Postfix, policyd, milterd and Dovecot LMTP.")
	before, _ := n.ReadMaildir("alice@example.com")
	// The first attempt from the outside is greylisted; a real MTA retries,
	// and so does this check, until the delay has passed.
	env := harness.Envelope{From: "demo@outside.test", To: []string{"alice@example.com"}, Data: msg}
	tr, err := harness.Send(n.SMTP, env)
	if err == nil && len(tr.Rcpt) > 0 && tr.Rcpt[0].Code == 450 {
		fmt.Printf("Self-check: first attempt greylisted as it should be: %s\nSelf-check: retrying after %s ...\n", tr.Rcpt[0].Text(), greylistDelay)
		for retryEnd := time.Now().Add(greylistDelay + 30*time.Second); time.Now().Before(retryEnd); {
			time.Sleep(2 * time.Second)
			if tr, err = harness.Send(n.SMTP, env); err != nil || len(tr.Rcpt) == 0 || tr.Rcpt[0].Code != 450 {
				break
			}
		}
	}
	if err != nil || tr.Final.Code != 250 {
		return fmt.Errorf("self-check: the welcome message was not accepted: %v %+v\n%s", err, tr, n.MailLog())
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		got, _ := n.ReadMaildir("alice@example.com")
		if len(got) > len(before) {
			fmt.Printf("Self-check: welcome message delivered to %s\n\n", got[len(got)-1].Path)
			break
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("self-check: the welcome message did not reach alice's Maildir in 30s\n%s", n.MailLog())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if err := upNullClient(dir, n); err != nil {
		return err
	}
	printHelp(dir)
	return nil
}

// upNullClient starts the null client of examples/nullclient.yaml, whose
// relayhost is the node's submission service (STARTTLS, then alice's
// login), and checks it: a message submitted with its sendmail reaches
// bob's Maildir signed by the null client's selectors and the node's.
func upNullClient(dir string, node *harness.Node) error {
	root, err := harness.RepoRoot()
	if err != nil {
		return err
	}
	ncDir := nullClientDir(dir)
	if err := os.MkdirAll(ncDir, 0o755); err != nil {
		return err
	}
	secret := filepath.Join(ncDir, "relayhost.secret")
	if err := os.WriteFile(secret, []byte("alicepass\n"), 0o600); err != nil {
		return err
	}
	nc, err := harness.Start(harness.Options{
		Dir:          ncDir,
		Inventory:    filepath.Join(root, "examples", "nullclient.yaml"),
		Milter:       true,
		DKIMKeys:     true,
		Ports:        harness.Ports{SMTP: nullClientPort},
		RelayNexthop: "[127.0.0.1]:" + strconv.Itoa(ports.Submission),
		Log:          func(f string, a ...any) { fmt.Printf(f+"\n", a...) },
		Edit: func(doc map[string]any) {
			harness.Set(doc, "postfix.relayhost_auth", map[string]any{"username": "alice@example.com", "password_file": secret})
		},
	})
	if err != nil {
		return fmt.Errorf("null client: %w", err)
	}
	before, _ := node.ReadMaildir("bob@example.com")
	msg := harness.NewMessage("alice@example.com", "bob@example.com", "Sent with the null client's sendmail",
		"This message left the null client signed by its milterd and went to the node's submission service.")
	cmd := exec.Command("/usr/sbin/sendmail", "-C", nc.PostfixConfig, "-i", "-f", "alice@example.com", "--", "bob@example.com")
	cmd.Stdin = bytes.NewReader(harness.LF(msg))
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("self-check: the null client's sendmail: %v\n%s", err, out)
	}
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		got, _ := node.ReadMaildir("bob@example.com")
		if len(got) > len(before) {
			m := got[len(got)-1]
			for _, sel := range []string{"s=app1e;", "s=app1r;", "s=mx2026r;", "s=mx2026e;"} {
				if !bytes.Contains(m.Data, []byte(sel)) {
					return fmt.Errorf("self-check: the null client's message in bob's Maildir has no DKIM-Signature with %s\n%s", sel, m.Data)
				}
			}
			fmt.Printf("Self-check: the null client's message delivered to %s, signed by the null client and the node\n\n", m.Path)
			return nil
		}
		if time.Now().After(deadline) {
			return errors.New("self-check: the null client's message did not reach bob's Maildir in 30s\n--- null client:\n" + nc.MailLog() + "\n--- node:\n" + node.MailLog())
		}
	}
}

func printHelp(dir string) {
	rel := func(p string) string {
		if wd, err := os.Getwd(); err == nil {
			if r, err := filepath.Rel(wd, p); err == nil && len(r) < len(p) {
				return r
			}
		}
		return p
	}
	d := rel(dir)
	x := "ip netns exec " + Namespace + " "
	fmt.Printf(`mailnode demo node mx1.example.com is up in network namespace %s (state: %s)
  port-25 service   127.0.0.1:%d   (MX role; the ACL matrix of policyd applies)
  submission        127.0.0.1:%d   (STARTTLS, then AUTH: alice@example.com / alicepass)
  IMAP / POP3       127.0.0.1:%d / 127.0.0.1:%d
  ManageSieve       127.0.0.1:%d   (users' own Sieve scripts; STARTTLS, then the IMAP login)
  relay next hop    127.0.0.1:%d   (a sink standing in for partner.org's MX)
  trust host        source address 127.0.0.2 (swaks --local-interface 127.0.0.2)

Send a message from the outside to a local mailbox (greylisting answers 450
on first contact; send it again after %s and it is delivered):
  %sswaks --server 127.0.0.1:%d --from someone@outside.test --to alice@example.com

Submit as alice (signed by milterd), to a mailbox and to the relay domain:
  %sswaks --server 127.0.0.1:%d --tls --auth PLAIN --auth-user alice@example.com --auth-password alicepass --from alice@example.com --to bob@example.com,dave@partner.org

See policyd refuse relaying:
  %sswaks --server 127.0.0.1:%d --from someone@outside.test --to x@elsewhere.test --quit-after RCPT

Null client app1.example.com (examples/nullclient.yaml; Postfix and milterd only, state in
%s): sends only, to the node's submission service as alice; nothing listens off loopback,
its loopback smtpd 127.0.0.1:%d takes mail from 127.0.0.2 only. Send with its sendmail, then
look in bob's Maildir for the DKIM-Signatures of app1e/app1r (null client) and mx2026r/mx2026e (node):
  printf 'From: alice@example.com\nSubject: from app1\n\nhello\n' | %s/usr/sbin/sendmail -C %s -i -f alice@example.com bob@example.com

Where mail lands:
  %s/vmail/<domain>/<user>/new/   local mailboxes (Dovecot LMTP, Maildir)
  %s/vmail/<domain>/<user>/.Junk/ mail milterd tagged as spam (X-Spam-Status: Yes), filed by Sieve
  %s/spool/root                   unix users (local(8), mbox): root@mx1.example.com
  %s/sink/*.eml                   relay domain partner.org (the next hop)
Quota of each mailbox (1G; a full one is refused at RCPT with 552 5.2.2):
  %sdoveadm -c %s/dovecot/dovecot.conf quota get -u alice@example.com
Logs: %s/log/maillog, dovecot.log, policyd.log, milterd.log; the null client's in %s/log/
Stop: make demo-stop
`, Namespace, d, ports.SMTP, ports.Submission, ports.IMAP, ports.POP3, ports.ManageSieve, sinkPort,
		greylistDelay, x, ports.SMTP, x, ports.Submission, x, ports.SMTP,
		rel(nullClientDir(dir)), nullClientPort, x, filepath.Join(nullClientDir(dir), "postfix"),
		d, d, d, d, x, d, d, rel(nullClientDir(dir)))
}

// running reports whether the demo's Postfix master is alive.
func running(dir string) bool {
	b, err := os.ReadFile(filepath.Join(dir, "queue", "pid", "master.pid"))
	if err != nil || !harness.NetnsExists(Namespace) {
		return false
	}
	pid, err := strconv.Atoi(string(bytes.TrimSpace(b)))
	return err == nil && syscall.Kill(pid, 0) == nil
}

func down(dir string) error {
	err := errors.Join(harness.StopDir(nullClientDir(dir)), harness.StopDir(dir))
	if e := harness.DeleteNetns(Namespace); e != nil && err == nil {
		err = e
	}
	if err != nil {
		return err
	}
	fmt.Printf("mailnode demo stopped; namespace %s deleted (mail kept in %s)\n", Namespace, dir)
	return nil
}

// startSink runs `demo sink` as a detached process (its pid in
// DIR/pids/sink.pid, so StopDir stops it) and waits until it listens.
func startSink(dir, addr string) error {
	os.MkdirAll(filepath.Join(dir, "pids"), 0o755)
	os.MkdirAll(filepath.Join(dir, "log"), 0o755)
	logf, err := os.OpenFile(filepath.Join(dir, "log", "sink.log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	self, err := os.Executable()
	if err != nil {
		return err
	}
	c := exec.Command(self, "sink", "--dir", dir, "--listen", addr)
	c.Stdout, c.Stderr = logf, logf
	c.SysProcAttr = &syscall.SysProcAttr{Setsid: true}
	if err := c.Start(); err != nil {
		return err
	}
	os.WriteFile(filepath.Join(dir, "pids", "sink.pid"), []byte(strconv.Itoa(c.Process.Pid)+"\n"), 0o644)
	c.Process.Release()
	return harness.WaitListening("inet:"+addr, 10*time.Second)
}

func sink(addr, dir string) error {
	if addr == "" {
		return fmt.Errorf("sink: --listen is required")
	}
	s, err := harness.StartSink(addr, dir)
	if err != nil {
		return err
	}
	fmt.Printf("sink listening on %s, writing to %s\n", s.Addr, dir)
	select {} // until StopDir sends SIGTERM
}

func copyExecutable(dst string) error {
	src, err := os.Executable()
	if err != nil {
		return err
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	tmp := dst + ".tmp"
	out, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	if err := out.Close(); err != nil {
		return err
	}
	return os.Rename(tmp, dst)
}
