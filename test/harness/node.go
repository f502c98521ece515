package harness

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/mailnode/mailnode/dkim"
	"github.com/mailnode/mailnode/inventory"
	"github.com/mailnode/mailnode/state/statetest"
	"github.com/mailnode/mailnode/test/procstat"
)

// Client source addresses inside the namespace. Dial binds the source
// with DialOptions.LocalAddr / Envelope.LocalAddr; the default is
// OutsideClient.
const (
	// TrustedClient is in node.trusted_networks (a trust host).
	TrustedClient = "127.0.0.2"
	// OutsideClient is not: neither authenticated nor trusted.
	OutsideClient = "127.0.0.1"
)

// Options choose what StartNode starts.
type Options struct {
	// Inventory is the inventory to start from (path). "" means the
	// repository's examples/inventory.yaml.
	Inventory string
	// Policy wires policyd into main.cf (policy.enabled) and starts
	// `mailnode policyd --inventory <rendered inventory>`; false sets
	// policy.enabled: false explicitly. Milter does the same for milterd.
	Policy, Milter bool
	// DKIMKeys creates a key under the private dkim.key_dir for every
	// selector of the inventory before rendering (zones then carry the
	// TXT records; milterd can sign).
	DKIMKeys bool
	// Edit changes the inventory document after the harness has rewritten
	// paths and ports and before it is written and rendered, e.g.
	//	Edit: func(doc map[string]any) { harness.Set(doc, "policy.sender_login", "strict") }
	Edit func(doc map[string]any)
	// RelayNexthop, when set, becomes the next hop of every relay domain
	// instead of an in-process Sink (the demo runs its sink in a separate
	// process).
	RelayNexthop string
	// Dir is the root of the private tree; "" makes a fresh one under /tmp
	// that Stop removes. Keep it short: Unix socket paths live below it.
	Dir string
	// TrustedNetworks replaces node.trusted_networks. nil means: the
	// inventory's networks with loopback ones replaced by TrustedClient's
	// /32, so that a client from 127.0.0.1 (the default source) is an
	// outside client and one bound to TrustedClient is a trust host.
	TrustedNetworks []string
	// Ports lets the caller fix the loopback ports (the demo); zero
	// values get free ports.
	Ports Ports
	// ListenAddr is the address Postfix and Dovecot listen on (and
	// Postfix's only inet_interfaces); "" means 127.0.0.1. Another node of
	// a tier takes another address of lo (StartTier adds it).
	ListenAddr string
	// DaemonArgs are extra arguments of a sidecar ("policyd", "milterd"),
	// after --inventory, also when RestartDaemon starts it again.
	DaemonArgs map[string][]string
	// Node is the tier node (a hostname of the inventory's tier.nodes)
	// this node is: the inventory is loaded as it, and render-config and
	// every sidecar run with --node Node. "" passes no --node.
	Node string
	// Log receives progress lines (StartNode passes t.Logf).
	Log func(format string, args ...any)
}

// Ports are the loopback TCP ports of one node.
type Ports struct {
	SMTP, Submission, IMAP, POP3 int
	Submissions                  int // implicit TLS (postfix.submissions_listen)
	ManageSieve                  int // dovecot.sieve.listen, when the inventory has dovecot.sieve
}

// Node is a running private mail node: Postfix, Dovecot and (when enabled)
// policyd and milterd, all started from the files `mailnode render-config`
// wrote from the inventory at InventoryPath.
type Node struct {
	Dir           string               // root of the private tree
	InventoryPath string               // the rewritten inventory every daemon reads
	Inv           *inventory.Inventory // that inventory, loaded
	Bin           string               // the mailnode binary
	Hostname      string               // node.hostname (unix users live at user@Hostname)

	SMTP       string // port-25 service, "127.0.0.1:PORT"
	Submission string // submission service (STARTTLS, then AUTH)
	// Submissions is the implicit-TLS submission service (TLS from the
	// first byte, then AUTH): dial it with DialOptions.ImplicitTLS.
	Submissions string
	IMAP, POP3  string // Dovecot, plain (STARTTLS available)
	// ManageSieve is Dovecot's ManageSieve service (STARTTLS, then AUTH),
	// "" unless the inventory has dovecot.sieve.
	ManageSieve string

	Sink *Sink // next hop of every relay domain (nil with Options.RelayNexthop); a null client's relayhost
	// NullClient: the inventory's node.role is nullclient. Such a node has
	// Postfix (SMTP is its loopback smtpd) and milterd only: no Dovecot,
	// no policyd, no submission; its relayhost is Sink (or
	// Options.RelayNexthop) unless Edit names another.
	NullClient bool

	PostfixConfig string // postfix.config_directory (Dir/postfix)
	DovecotConfig string // dovecot.conf path
	CertFile      string // the self-signed certificate (also the CA to trust)

	tempDir    bool
	node       string // Options.Node
	daemonArgs map[string][]string
	procs      map[string]*exec.Cmd
	done       map[string]chan struct{}
	logf       func(string, ...any)
}

// StartNode starts a node for one test and stops it in t.Cleanup. It fails
// the test (t.Fatal) when anything does not come up, with the logs. With
// -short it skips: end-to-end tests need root and a network namespace.
func StartNode(t testing.TB, opt Options) *Node {
	t.Helper()
	if testing.Short() {
		t.Skip("end-to-end test: skipped with -short")
	}
	if os.Getenv(EnvNetns) == "" {
		t.Fatal("end-to-end tests must run inside their own network namespace: add `func TestMain(m *testing.M) { harness.Main(m) }` to the package")
	}
	if opt.Log == nil {
		opt.Log = t.Logf
	}
	n, err := Start(opt)
	if n != nil {
		t.Cleanup(func() {
			if t.Failed() {
				t.Logf("mail log of the failed test:\n%s", n.MailLog())
				if !n.NullClient {
					t.Logf("dovecot log:\n%s", readFile(filepath.Join(n.Dir, "log", "dovecot.log")))
				}
			}
			if err := n.Stop(); err != nil {
				t.Errorf("stopping the node: %v", err)
			}
		})
	}
	if err != nil {
		t.Fatalf("starting the node: %v", err)
	}
	return n
}

// Start starts a node (see StartNode); the caller must call Stop, also
// after an error when the returned node is not nil.
func Start(opt Options) (*Node, error) {
	if opt.Log == nil {
		opt.Log = func(string, ...any) {}
	}
	bin, err := Binary()
	if err != nil {
		return nil, err
	}
	src, err := opt.inventoryFile()
	if err != nil {
		return nil, err
	}
	n := &Node{Bin: bin, Dir: opt.Dir, node: opt.Node, daemonArgs: opt.DaemonArgs, procs: map[string]*exec.Cmd{}, done: map[string]chan struct{}{}, logf: opt.Log}
	if n.Dir == "" {
		d, err := os.MkdirTemp("/tmp", "mn")
		if err != nil {
			return nil, err
		}
		n.Dir, n.tempDir = d, true
	} else if n.Dir, err = filepath.Abs(n.Dir); err != nil {
		return nil, err
	}
	if err := n.prepare(src, opt); err != nil {
		return n, err
	}
	if err := n.start(opt); err != nil {
		return n, fmt.Errorf("%w\n--- mail log:\n%s", err, n.MailLog())
	}
	return n, nil
}

// nodeArgs are the arguments that make a mailnode command load the
// inventory as this node of its tier (Options.Node).
func (n *Node) nodeArgs() []string {
	if n.node == "" {
		return nil
	}
	return []string{"--node", n.node}
}

func (n *Node) path(p ...string) string { return filepath.Join(append([]string{n.Dir}, p...)...) }

// prepare makes the private tree, the certificate, the inventory and the
// rendered configuration.
func (n *Node) prepare(src string, opt Options) error {
	if err := os.MkdirAll(n.Dir, 0o755); err != nil {
		return err
	}
	os.Chmod(n.Dir, 0o755)
	for _, d := range []string{"log", "tls", "spool", "vmail", "data", "queue", "state", "pids", "dkim"} {
		if err := os.MkdirAll(n.path(d), 0o755); err != nil {
			return err
		}
	}
	os.Chmod(n.path("spool"), 0o1777)
	os.Chmod(n.path("dkim"), 0o700)
	if err := Chown("postfix", n.path("data")); err != nil {
		return err
	}
	if err := Chown("vmail", n.path("vmail")); err != nil {
		return err
	}
	n.CertFile = n.path("tls", "cert.pem")
	keyFile := n.path("tls", "key.pem")

	raw, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	var doc map[string]any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		return fmt.Errorf("%s: %w", src, err)
	}
	ports := opt.Ports
	for _, p := range []*int{&ports.SMTP, &ports.Submission, &ports.IMAP, &ports.POP3, &ports.Submissions} {
		if *p == 0 {
			if *p, err = FreePort(); err != nil {
				return err
			}
		}
	}
	listenAddr := opt.ListenAddr
	if listenAddr == "" {
		listenAddr = "127.0.0.1"
	}
	lo := func(p int) string { return net.JoinHostPort(listenAddr, strconv.Itoa(p)) }
	n.SMTP, n.Submission, n.IMAP, n.POP3 = lo(ports.SMTP), lo(ports.Submission), lo(ports.IMAP), lo(ports.POP3)
	n.Submissions = lo(ports.Submissions)
	q := n.path("queue")
	n.NullClient = Get(doc, "node.role") == inventory.RoleNullClient
	trusted := opt.TrustedNetworks
	if trusted == nil {
		trusted = []string{TrustedClient + "/32"}
		if l, ok := Get(doc, "node.trusted_networks").([]any); ok {
			for _, v := range l {
				s, _ := v.(string)
				if p, err := inventory.ParsePrefix(s); err == nil && !p.Addr().IsLoopback() {
					trusted = append(trusted, s)
				}
			}
		}
	}
	tl := make([]any, len(trusted))
	for i, s := range trusted {
		tl[i] = s
	}
	Set(doc, "node.trusted_networks", tl)
	Set(doc, "postfix.config_directory", n.path("postfix"))
	Set(doc, "postfix.queue_directory", q)
	Set(doc, "postfix.data_directory", n.path("data"))
	Set(doc, "postfix.tls", map[string]any{"cert_file": n.CertFile, "key_file": keyFile})
	Set(doc, "postfix.inet_protocols", "ipv4")
	if n.NullClient {
		// A port alone: the role's inet_interfaces (loopback-only) is what
		// keeps the null client's smtpd off every other address.
		Set(doc, "postfix.smtp_listen", []any{strconv.Itoa(ports.SMTP)})
		n.Submission, n.Submissions, n.IMAP, n.POP3 = "", "", "", ""
	} else {
		Set(doc, "postfix.smtp_listen", []any{n.SMTP})
		Set(doc, "postfix.submission_listen", []any{n.Submission})
		Set(doc, "postfix.submissions_listen", []any{n.Submissions})
		Set(doc, "postfix.inet_interfaces", listenAddr)
	}
	Set(doc, "postfix.maillog_file", n.path("log", "maillog"))
	Set(doc, "postfix.instance_name", "mailnode-"+filepath.Base(n.Dir))
	Set(doc, "postfix.mail_spool_directory", n.path("spool"))
	Set(doc, "postfix.relayhost", "")
	if !n.NullClient { // a null client runs no policyd and no Dovecot
		Set(doc, "policy.enabled", opt.Policy)
		Set(doc, "policy.listen", "unix:"+q+"/private/mailnode-policy")
		if b, _ := Get(doc, "policy.state.backend").(string); b == "" || b == "bbolt" {
			Set(doc, "policy.state.path", n.path("state", "state.db"))
		}
		Set(doc, "dovecot.config_directory", n.path("dovecot"))
		Set(doc, "dovecot.base_dir", n.path("run"))
		Set(doc, "dovecot.mail_location", "maildir:"+n.path("vmail")+"/%d/%n")
		Set(doc, "dovecot.imap_listen", []any{n.IMAP})
		Set(doc, "dovecot.pop3_listen", []any{n.POP3})
		Set(doc, "dovecot.log_path", n.path("log", "dovecot.log"))
	} else if opt.Policy {
		return fmt.Errorf("harness: a null client runs no policyd (Options.Policy)")
	}
	Set(doc, "milter.enabled", opt.Milter)
	Set(doc, "milter.listen", "unix:"+q+"/private/mailnode-milter")
	Set(doc, "dkim.key_dir", n.path("dkim"))
	nexthop := opt.RelayNexthop
	if nexthop == "" {
		if n.Sink, err = StartSink("127.0.0.1:0", ""); err != nil {
			return err
		}
		nexthop = "[127.0.0.1]:" + n.Sink.Port()
	}
	if n.NullClient {
		Set(doc, "postfix.relayhost", nexthop)
	}
	if ds, ok := doc["domains"].([]any); ok {
		for _, d := range ds {
			if m, ok := d.(map[string]any); ok && m["class"] == "relay" {
				m["nexthop"] = nexthop
			}
		}
	}
	// forwarding.srs: milterd needs a secret; Edit may name another file
	// (a tier shares node 0's), which is created when it does not exist.
	Set(doc, "forwarding.srs_secret_file", n.path("srs.secret"))
	// node.resolver_anchor_file: an unbound a test starts with the rendered
	// unbound.conf keeps its own root trust anchor (RFC 5011), never the
	// host's; seeded here as Debian seeds /var/lib/unbound/root.key. Edit
	// may name another file, seeded likewise when it does not exist.
	Set(doc, "node.resolver_anchor_file", n.path("unbound-anchor", "root.key"))
	if opt.Edit != nil {
		opt.Edit(doc)
	}
	if p, _ := Get(doc, "forwarding.srs_secret_file").(string); p != "" {
		if err := WriteSRSSecret(p); err != nil {
			return err
		}
	}
	if p, _ := Get(doc, "node.resolver_anchor_file").(string); p != "" {
		// Without dns-root-data no node can run unbound anyway; the tests
		// that start one say what is missing.
		if _, err := os.Stat(inventory.RootKeyFile); err == nil {
			if err := SeedTrustAnchor(p); err != nil {
				return err
			}
		}
	}
	if _, ok := Get(doc, "dovecot.sieve").(map[string]any); ok {
		if ports.ManageSieve == 0 {
			if ports.ManageSieve, err = FreePort(); err != nil {
				return err
			}
		}
		n.ManageSieve = lo(ports.ManageSieve)
		Set(doc, "dovecot.sieve.listen", []any{n.ManageSieve})
	}
	if learn, _ := Get(doc, "dovecot.spam_learning").(bool); learn {
		// The learning rules run mailnode as the mail user, who cannot
		// reach the build's private directory: a copy in the tree.
		if err := copyExecutable(n.Bin, n.path("bin", "mailnode")); err != nil {
			return err
		}
		Set(doc, "dovecot.mailnode_path", n.path("bin", "mailnode"))
	}
	out, err := yaml.Marshal(doc)
	if err != nil {
		return err
	}
	n.InventoryPath = n.path("inventory.yaml")
	if err := os.WriteFile(n.InventoryPath, out, 0o644); err != nil {
		return err
	}
	if n.Inv, err = inventory.LoadWith(n.InventoryPath, inventory.LoadOptions{Node: n.node}); err != nil {
		return fmt.Errorf("the rewritten inventory is invalid:\n%w", err)
	}
	n.Hostname = n.Inv.Node.Hostname
	if err := WriteSelfSigned(n.CertFile, keyFile, n.Hostname); err != nil {
		return err
	}
	if opt.DKIMKeys {
		for _, d := range n.Inv.LocalDomains() {
			for _, s := range d.DKIM {
				p := dkim.KeyPath(n.Inv.DKIM.KeyDir, d.Name, s.Selector)
				if _, err := os.Stat(p); err == nil {
					continue
				}
				k, err := dkim.Generate(s.Algorithm)
				if err != nil {
					return err
				}
				if err := dkim.WriteKey(p, k); err != nil {
					return err
				}
			}
		}
	}
	n.PostfixConfig = n.Inv.Postfix.ConfigDirectory
	if !n.NullClient {
		n.DovecotConfig = filepath.Join(n.Inv.Dovecot.ConfigDirectory, "dovecot.conf")
	}
	if _, err := n.run(n.Bin, append([]string{"render-config", "--inventory", n.InventoryPath, "--out", n.Dir, "--postmap"}, n.nodeArgs()...)...); err != nil {
		return err
	}
	return nil
}

// start brings the daemons up in dependency order and waits for each.
func (n *Node) start(opt Options) error {
	// postfix check creates queue_directory and its private/ directory,
	// where Dovecot and the sidecars bind their sockets.
	if _, err := n.run("postfix", "-c", n.PostfixConfig, "check"); err != nil {
		return err
	}
	if opt.Policy {
		if err := n.startDaemon("policyd", n.Inv.Policy.Listen); err != nil {
			return err
		}
	}
	if opt.Milter {
		if err := n.startDaemon("milterd", n.Inv.Milter.Listen); err != nil {
			return err
		}
	}
	if n.NullClient {
		if err := n.runDaemonizing("postfix", "-c", n.PostfixConfig, "start"); err != nil {
			return err
		}
		if err := WaitBanner(n.SMTP, 20*time.Second); err != nil {
			return fmt.Errorf("postfix: %w", err)
		}
		n.logf("null client %s up in %s: loopback smtp %s, relayhost %s", n.Hostname, n.Dir, n.SMTP, n.Inv.Postfix.Relayhost)
		return nil
	}
	if err := n.runDaemonizing("dovecot", "-c", n.DovecotConfig); err != nil {
		return err
	}
	q := n.Inv.Postfix.QueueDirectory
	wait := []string{"unix:" + filepath.Join(q, n.Inv.Dovecot.LMTPSocket), "unix:" + filepath.Join(q, n.Inv.Dovecot.SASLSocket), "inet:" + n.IMAP, "inet:" + n.POP3}
	if n.ManageSieve != "" {
		wait = append(wait, "inet:"+n.ManageSieve)
	}
	for _, w := range wait {
		if err := WaitListening(w, 20*time.Second); err != nil {
			return fmt.Errorf("dovecot: %w\n%s", err, readFile(n.path("log", "dovecot.log")))
		}
	}
	if err := n.runDaemonizing("postfix", "-c", n.PostfixConfig, "start"); err != nil {
		return err
	}
	for _, a := range []string{n.SMTP, n.Submission} {
		if err := WaitBanner(a, 20*time.Second); err != nil {
			return fmt.Errorf("postfix: %w", err)
		}
	}
	// Implicit TLS: no banner before a handshake; master(8) listening is
	// enough (smtpd starts per connection).
	if err := WaitListening("inet:"+n.Submissions, 20*time.Second); err != nil {
		return fmt.Errorf("postfix: %w", err)
	}
	n.logf("node %s up in %s: smtp %s, submission %s, submissions %s, imap %s, pop3 %s", n.Hostname, n.Dir, n.SMTP, n.Submission, n.Submissions, n.IMAP, n.POP3)
	return nil
}

// startDaemon runs `mailnode NAME --inventory INV` (and its DaemonArgs) in
// its own process group, logging to Dir/log/NAME.log, and waits for its
// socket.
func (n *Node) startDaemon(name, listen string) error {
	logf, err := os.OpenFile(n.path("log", name+".log"), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer logf.Close()
	args := append([]string{name, "--inventory", n.InventoryPath}, n.nodeArgs()...)
	cmd := exec.Command(n.Bin, append(args, n.daemonArgs[name]...)...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	n.procs[name], n.done[name] = cmd, done
	os.WriteFile(n.path("pids", name+".pid"), []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644)
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-done:
			return fmt.Errorf("mailnode %s exited at start-up: %s\n%s", name, cmd.ProcessState, readFile(n.path("log", name+".log")))
		default:
		}
		if dialListen(listen) == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("mailnode %s: %s not listening after 20s\n%s", name, listen, readFile(n.path("log", name+".log")))
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// StopDaemon stops one sidecar ("policyd", "milterd") and waits for it
// to exit, e.g. to show that Postfix then answers 4xx, never accepts.
func (n *Node) StopDaemon(name string) error { return n.endDaemon(name, syscall.SIGTERM) }

// endDaemon sends sig to a sidecar's process group and waits for it to
// exit: after 10s a SIGTERM is followed by SIGKILL, and a SIGKILL that
// did not end it is an error.
func (n *Node) endDaemon(name string, sig syscall.Signal) error {
	cmd, ok := n.procs[name]
	if !ok {
		return fmt.Errorf("harness: %s is not running", name)
	}
	syscall.Kill(-cmd.Process.Pid, sig)
	select {
	case <-n.done[name]:
	case <-time.After(10 * time.Second):
		if sig == syscall.SIGKILL {
			return fmt.Errorf("harness: %s (pid %d) still there 10s after SIGKILL", name, cmd.Process.Pid)
		}
		syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
		<-n.done[name]
	}
	delete(n.procs, name)
	os.Remove(n.path("pids", name+".pid"))
	return nil
}

// Stop stops everything the node started and, for a temporary tree,
// removes it (set MAILNODE_KEEP=1 to keep it for a post-mortem).
func (n *Node) Stop() error {
	for name, cmd := range n.procs {
		syscall.Kill(-cmd.Process.Pid, syscall.SIGTERM)
		select {
		case <-n.done[name]:
		case <-time.After(5 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-n.done[name]
		}
		os.Remove(n.path("pids", name+".pid"))
	}
	err := StopDir(n.Dir)
	if n.Sink != nil {
		n.Sink.Close()
	}
	if n.tempDir && os.Getenv("MAILNODE_KEEP") == "" && err == nil {
		os.RemoveAll(n.Dir)
	}
	return err
}

// StopDir stops a node from its tree alone (the demo's `down`): the
// sidecars listed in DIR/pids, Postfix, and Dovecot; it waits for each to
// exit.
func StopDir(dir string) error {
	var errs []error
	pids, _ := filepath.Glob(filepath.Join(dir, "pids", "*.pid"))
	for _, f := range pids {
		if pid := readPid(f); pid > 0 {
			syscall.Kill(-pid, syscall.SIGTERM)
			syscall.Kill(pid, syscall.SIGTERM)
			if !waitGone(pid, 5*time.Second) {
				syscall.Kill(-pid, syscall.SIGKILL)
				syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		os.Remove(f)
	}
	pcfg := filepath.Join(dir, "postfix")
	if _, err := os.Stat(filepath.Join(pcfg, "main.cf")); err == nil {
		if pid := readPid(filepath.Join(dir, "queue", "pid", "master.pid")); pid > 0 && alive(pid) {
			if out, err := exec.Command("postfix", "-c", pcfg, "stop").CombinedOutput(); err != nil {
				errs = append(errs, fmt.Errorf("postfix stop: %v: %s", err, out))
			}
			if !waitGone(pid, 10*time.Second) {
				syscall.Kill(pid, syscall.SIGKILL)
				errs = append(errs, fmt.Errorf("postfix master %d did not stop; killed", pid))
			}
		}
	}
	if pid := readPid(filepath.Join(dir, "run", "master.pid")); pid > 0 && alive(pid) {
		syscall.Kill(pid, syscall.SIGTERM)
		if !waitGone(pid, 10*time.Second) {
			syscall.Kill(pid, syscall.SIGKILL)
			errs = append(errs, fmt.Errorf("dovecot master %d did not stop; killed", pid))
		}
	}
	return errors.Join(errs...)
}

func readPid(file string) int {
	b, err := os.ReadFile(file)
	if err != nil {
		return 0
	}
	p, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	return p
}

func alive(pid int) bool {
	if syscall.Kill(pid, 0) != nil {
		return false
	}
	// A zombie is gone for our purposes.
	st, err := procstat.Read(pid)
	return err == nil && !st.Zombie()
}

func waitGone(pid int, timeout time.Duration) bool {
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if !alive(pid) {
			return true
		}
	}
	return !alive(pid)
}

// copyExecutable copies the program src to dst, mode 0755.
func copyExecutable(src, dst string) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(dst, b, 0o755); err != nil {
		return err
	}
	return os.Chmod(dst, 0o755)
}

// run runs a command and returns its combined output; the error carries it.
func (n *Node) run(name string, args ...string) (string, error) {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return string(out), fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out), nil
}

// runDaemonizing runs a command that leaves a daemon behind (dovecot,
// postfix start). Its output goes to a file, not a pipe: the daemon
// inherits the descriptors and would hold a pipe open forever.
func (n *Node) runDaemonizing(name string, args ...string) error {
	logName := n.path("log", name+"-start.log")
	f, err := os.Create(logName)
	if err != nil {
		return err
	}
	defer f.Close()
	cmd := exec.Command(name, args...)
	cmd.Stdout, cmd.Stderr = f, f
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, readFile(logName))
	}
	return nil
}

// MailLog returns Postfix's log so far.
func (n *Node) MailLog() string { return readFile(filepath.Join(n.Dir, "log", "maillog")) }

// DaemonLog returns the output of a sidecar ("policyd", "milterd").
func (n *Node) DaemonLog(name string) string { return readFile(n.path("log", name+".log")) }

func readFile(p string) string {
	b, err := os.ReadFile(p)
	if err != nil {
		return fmt.Sprintf("(%v)", err)
	}
	return string(b)
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago
// (statetest.FreePort).
func FreePort() (int, error) {
	handedMu.Lock()
	defer handedMu.Unlock()
	for i := 0; ; i++ {
		p, err := statetest.FreePort()
		if err != nil || !handed[p] || i >= 100 {
			if err == nil {
				handed[p] = true
			}
			return p, err
		}
	}
}

// handed holds every port FreePort has returned in this process: the
// kernel may give a port just closed to the next bind to port 0, and two
// listeners of one node were once handed the same port.
var (
	handedMu sync.Mutex
	handed   = map[int]bool{}
)

func dialListen(spec string) error {
	network, addr, err := inventory.ParseListen(spec)
	if err != nil {
		return err
	}
	c, err := net.DialTimeout(network, addr, time.Second)
	if err != nil {
		return err
	}
	return c.Close()
}

// WaitListening polls until a "unix:/path" or "inet:host:port" accepts
// connections.
func WaitListening(spec string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		err := dialListen(spec)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not listening after %s: %v", spec, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// WaitBanner polls until an SMTP server at addr answers with a 220 banner.
func WaitBanner(addr string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for {
		c, banner, err := Dial(addr, DialOptions{Timeout: 5 * time.Second})
		if err == nil {
			c.Quit()
			if banner.Code == 220 {
				return nil
			}
			err = fmt.Errorf("banner %q", banner.Text())
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: no SMTP banner after %s: %v", addr, timeout, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Chown gives paths to a system user and its primary group, as a daemon
// that drops to that user needs its directories.
func Chown(username string, paths ...string) error {
	u, err := user.Lookup(username)
	if err != nil {
		return fmt.Errorf("harness: system user %s: %w", username, err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	for _, p := range paths {
		if err := os.Chown(p, uid, gid); err != nil {
			return err
		}
	}
	return nil
}

// Set assigns value at a dotted path of a YAML document, creating the
// mappings on the way: Set(doc, "policy.greylist.enabled", true).
func Set(doc map[string]any, path string, value any) {
	keys := strings.Split(path, ".")
	m := doc
	for _, k := range keys[:len(keys)-1] {
		next, ok := m[k].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[k] = next
		}
		m = next
	}
	m[keys[len(keys)-1]] = value
}

// Get returns the value at a dotted path, or nil.
func Get(doc map[string]any, path string) any {
	var cur any = doc
	for _, k := range strings.Split(path, ".") {
		m, ok := cur.(map[string]any)
		if !ok {
			return nil
		}
		cur = m[k]
	}
	return cur
}

// inventoryFile is the inventory a node starts from: Options.Inventory, or
// the repository's examples/inventory.yaml.
func (o Options) inventoryFile() (string, error) {
	if o.Inventory != "" {
		return o.Inventory, nil
	}
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	return filepath.Join(root, "examples", "inventory.yaml"), nil
}

// WriteSRSSecret writes a fresh random SRS secret (forwarding.srs_secret_file)
// at path, mode 0640, unless a file is there already.
func WriteSRSSecret(path string) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	key := make([]byte, 24)
	if _, err := rand.Read(key); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(base64.StdEncoding.EncodeToString(key)+"\n"), 0o640)
}

// SeedTrustAnchor makes path (node.resolver_anchor_file) from dns-root-data's
// root key (inventory.RootKeyFile) when it does not exist yet, as Debian's
// `unbound-helper root_trust_anchor_update` does before unbound starts:
// unbound refuses to start without its auto-trust-anchor-file, and then
// rewrites it itself. An existing file is left as unbound wrote it.
func SeedTrustAnchor(path string) error {
	if _, err := os.Stat(path); err == nil {
		return nil
	}
	b, err := os.ReadFile(inventory.RootKeyFile)
	if err != nil {
		return fmt.Errorf("seeding unbound's root trust anchor: %w (apt-get install dns-root-data)", err)
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	return os.WriteFile(path, b, 0o644)
}
