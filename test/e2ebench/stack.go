package main

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/mailnode/mailnode/dkim"
	"github.com/mailnode/mailnode/test/harness"
	"github.com/mailnode/mailnode/test/opendkim"
	"github.com/mailnode/mailnode/test/procstat"
)

// The stacks, in table order. Floor is the mailnode stack with both
// sidecars replaced by ones that do nothing (mailnode-bench dunno-server,
// null-milter) on the same sockets: Postfix speaking the policy and milter
// protocols exactly as with mailnode, and nothing else. What floor loses
// against bare is the protocols' cost to Postfix, which no sidecar can
// avoid; mailnode's loss beyond floor is mailnode's own work.
const (
	Bare     = "bare"
	Floor    = "floor"
	Mailnode = "mailnode"
	Classic  = "classic"
	Rspamd   = "rspamd"
)

var stackNames = []string{Bare, Floor, Mailnode, Classic, Rspamd}

// Addresses of the two load paths (examples/inventory.yaml).
const (
	trustedFrom = "alice@example.com" // a local sender on a trust host
	trustedTo   = "carol@partner.org" // a relay domain: next hop = the stack's smtp-sink
	outsideFrom = "news@outside.test" // an outside sender, DKIM-signed, SPF pass
	outsideTo   = "alice@example.com" // a local mailbox: virtual_transport = the smtp-sink too
)

// stack is one private Postfix instance with its sidecars and its smtp-sink.
// proc is a child process and the channel closed when it has exited.
type proc struct {
	cmd  *exec.Cmd
	done chan struct{}
}

func startProc(cmd *exec.Cmd) (*proc, error) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	p := &proc{cmd: cmd, done: make(chan struct{})}
	go func() { cmd.Wait(); close(p.done) }()
	return p, nil
}

func (p *proc) stop() {
	syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

type stack struct {
	name     string
	node     *harness.Node
	sinkAddr string
	sinkDir  string         // smtp-sink writes one file per message here
	daemons  map[string]int // sidecar name -> pid, for VmHWM
	procs    []*proc        // smtp-sink; classic: opendkim, postgrey; rspamd: redis, rspamd
	redis    string         // rspamd: the Redis address
	logf     func(string, ...any)
}

// startStack starts one stack: smtp-sink, then the node from the rendered
// inventory, then (classic) OpenDKIM and postgrey wired in with postconf -e.
func startStack(name, shm string, logf func(string, ...any)) (*stack, error) {
	s := &stack{name: name, daemons: map[string]int{}, logf: logf}
	if err := s.startSink(shm); err != nil {
		return s, err
	}
	var err error
	s.node, err = harness.Start(harness.Options{
		Policy:       name == Mailnode || name == Floor,
		Milter:       name == Mailnode || name == Floor,
		DKIMKeys:     true, // classic signs with the same RSA key
		RelayNexthop: "[127.0.0.1]:" + portOf(s.sinkAddr),
		Edit: func(doc map[string]any) {
			editInventory(doc, name == Rspamd)
			if name == Floor {
				// The floor's do-nothing milter takes milterd's place and
				// serves no SRS reversal map: without this, every
				// recipient lookup in virtual_alias_maps fails (451 4.3.0).
				// Reversing SRS addresses is mailnode's work, not the floor's.
				harness.Set(doc, "forwarding.srs", false)
			}
		},
		Log: logf,
	})
	if err != nil {
		return s, fmt.Errorf("%s: %w", name, err)
	}
	if err := stopDovecot(s.node.Dir); err != nil {
		return s, fmt.Errorf("%s: %w", name, err)
	}
	if name == Floor {
		if err := s.startFloor(); err != nil {
			return s, err
		}
	}
	for _, d := range []string{"policyd", "milterd"} {
		if pid := s.node.DaemonPid(d); pid > 0 {
			s.daemons[d] = pid
		}
	}
	// Local mailboxes go to the sink as well (not Dovecot LMTP), so that
	// both load paths measure Postfix and its sidecars, not Maildir I/O;
	// recipient validation (virtual_mailbox_maps) still applies.
	settings := []string{"virtual_transport = smtp:[127.0.0.1]:" + portOf(s.sinkAddr)}
	if name == Classic {
		cs, err := s.startClassic()
		if err != nil {
			return s, err
		}
		settings = append(settings, cs...)
	}
	if name == Rspamd {
		rs, err := s.startRspamd()
		if err != nil {
			return s, fmt.Errorf("%s: %w", name, err)
		}
		settings = append(settings, rs...)
	}
	if err := s.postconf(settings...); err != nil {
		return s, err
	}
	if out, err := exec.Command("postfix", "-c", s.node.PostfixConfig, "reload").CombinedOutput(); err != nil {
		return s, fmt.Errorf("%s: postfix reload: %v: %s", name, err, out)
	}
	if err := harness.WaitBanner(s.node.SMTP, 20*time.Second); err != nil {
		return s, err
	}
	if err := s.primeGreylist(); err != nil {
		return s, err
	}
	return s, nil
}

// stopDovecot stops the Dovecot the harness started with the node. It is on
// no measured path (local mailboxes go to the sink; SASL is only offered on
// submission), so each stack runs without it and the three stacks compare
// Postfix and their sidecars only.
func stopDovecot(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, "run", "master.pid"))
	if err != nil {
		return fmt.Errorf("dovecot pid: %w", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 0 {
		return fmt.Errorf("dovecot pid %q", b)
	}
	syscall.Kill(pid, syscall.SIGTERM)
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if syscall.Kill(pid, 0) != nil {
			return nil
		}
		if st, err := procstat.Read(pid); err == nil && st.Zombie() {
			return nil
		}
	}
	return fmt.Errorf("dovecot %d did not stop", pid)
}

// editInventory makes the benchmark inventory out of the example: a second
// listener on 127.0.0.2 for the trust host, greylisting with a 1 s delay
// (primed before the runs, so policyd does its lookups and updates but never
// defers, like postgrey --delay=1), and rate limits far above the load (counted,
// never hit). With outsideAddr, a third listener on OutsideAddr: the
// rspamd stack's outside path (see OutsideAddr).
func editInventory(doc map[string]any, outsideAddr bool) {
	ifaces := harness.OutsideClient + ", " + harness.TrustedClient
	if l, ok := harness.Get(doc, "postfix.smtp_listen").([]any); ok && len(l) == 1 {
		a, _ := l[0].(string)
		listen := []any{a, strings.Replace(a, harness.OutsideClient+":", harness.TrustedClient+":", 1)}
		if outsideAddr {
			listen = append(listen, strings.Replace(a, harness.OutsideClient+":", OutsideAddr+":", 1))
			ifaces += ", " + OutsideAddr
		}
		harness.Set(doc, "postfix.smtp_listen", listen)
	}
	harness.Set(doc, "postfix.inet_interfaces", ifaces)
	harness.Set(doc, "policy.greylist", map[string]any{"enabled": true, "delay": "1s", "retry_window": "48h", "auto_whitelist_after": 5, "expire": "840h"})
	harness.Set(doc, "policy.ratelimit", map[string]any{"messages_per_hour": 1000000000, "recipients_per_hour": 1000000000})
	harness.Set(doc, "spam.engine", "builtin")
}

// OutsideAddr is the outside client of the rspamd stack. rspamd counts
// every loopback address as local, whatever local_addrs says, and skips
// for local clients what an outside client gets (SPF, DMARC, greylisting,
// the milter headers...): from 127.0.0.1 its outside path would measure
// a trusted client's. So this documentation address (TEST-NET-1) is added
// to lo like 127.0.0.2 and the rspamd node listens on it too: connections
// to it come from it, an address rspamd takes for the Internet. The other
// stacks look at node.trusted_networks only and keep 127.0.0.1.
const OutsideAddr = "192.0.2.25"

// outsideAddr is the node's port-25 service for the outside path.
func (s *stack) outsideAddr() string {
	if s.name == Rspamd {
		return OutsideAddr + ":" + portOf(s.node.SMTP)
	}
	return s.node.SMTP
}

// trustedAddr is the node's port-25 service on 127.0.0.2: connections to it
// come from 127.0.0.2 (see routeTrusted), a trust host.
func (s *stack) trustedAddr() string {
	return harness.TrustedClient + ":" + portOf(s.node.SMTP)
}

func (s *stack) startSink(shm string) error {
	s.sinkDir = filepath.Join(shm, s.name)
	if err := os.MkdirAll(s.sinkDir, 0o777); err != nil {
		return err
	}
	os.Chmod(s.sinkDir, 0o777) // smtp-sink runs as nobody
	port, err := harness.FreePort()
	if err != nil {
		return err
	}
	s.sinkAddr = "127.0.0.1:" + strconv.Itoa(port)
	log, err := os.Create(filepath.Join(shm, s.name+"-sink.log"))
	if err != nil {
		return err
	}
	defer log.Close()
	// -d: one file per message (concurrent transactions cannot interleave).
	cmd := exec.Command(sbin("smtp-sink"), "-u", "nobody", "-d", s.sinkDir+"/m.", s.sinkAddr, "256")
	cmd.Stdout, cmd.Stderr = log, log
	p, err := startProc(cmd)
	if err != nil {
		return fmt.Errorf("smtp-sink: %w", err)
	}
	s.procs = append(s.procs, p)
	return harness.WaitBanner(s.sinkAddr, 10*time.Second)
}

// startFloor replaces policyd and milterd by the do-nothing servers of
// mailnode-bench on their sockets; main.cf stays as rendered for mailnode.
func (s *stack) startFloor() error {
	bench, err := harness.BenchBinary()
	if err != nil {
		return err
	}
	for _, d := range []struct{ daemon, bench, listen string }{
		{"policyd", "dunno-server", s.node.Inv.Policy.Listen},
		{"milterd", "null-milter", s.node.Inv.Milter.Listen},
	} {
		if err := s.node.StopDaemon(d.daemon); err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		pid, err := s.startExtra(d.bench, filepath.Join(s.node.Dir, "log"), d.listen, bench, d.bench, "--listen", d.listen)
		if err != nil {
			return fmt.Errorf("%s: %w", s.name, err)
		}
		s.daemons[d.bench] = pid
	}
	return nil
}

// startClassic starts OpenDKIM (same RSA key as milterd's example.com
// selector, unix socket in Postfix's private/) and postgrey (inet, Debian's
// default wiring, --delay=1, primed like policyd), and returns the main.cf
// settings that wire them in.
func (s *stack) startClassic() ([]string, error) {
	dir := filepath.Join(s.node.Dir, "classic")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	d := s.node.Inv.LocalDomains()[0]
	var sel string
	for _, k := range d.DKIM {
		if k.Algorithm == "rsa" {
			sel = k.Selector
			break
		}
	}
	sock := filepath.Join(s.node.Inv.Postfix.QueueDirectory, "private", "opendkim")
	conf := filepath.Join(dir, "opendkim.conf")
	c := opendkim.Config{
		Domain: d.Name, Selector: sel, KeyFile: dkim.KeyPath(s.node.Inv.DKIM.KeyDir, d.Name, sel),
		Socket: sock, PidFile: filepath.Join(dir, "opendkim.pid"),
		Mode: "sv", InternalHosts: s.node.Inv.Node.TrustedNetworks, UMask: "000",
		Nameservers: []string{"127.0.0.1"}, UnsafeKeyPath: true,
	}
	if err := os.WriteFile(conf, []byte(c.String()), 0o644); err != nil {
		return nil, err
	}
	od, err := s.startExtra("opendkim", dir, "unix:"+sock, "/usr/sbin/opendkim", "-f", "-x", conf)
	if err != nil {
		return nil, err
	}
	s.daemons["opendkim"] = od

	db := filepath.Join(dir, "postgrey")
	os.MkdirAll(db, 0o755)
	if err := chown(db, "postgrey"); err != nil {
		return nil, err
	}
	port, err := harness.FreePort()
	if err != nil {
		return nil, err
	}
	pg := "127.0.0.1:" + strconv.Itoa(port)
	pid, err := s.startExtra("postgrey", dir, "inet:"+pg, "/usr/sbin/postgrey",
		"--inet="+pg, "--dbdir="+db, "--delay=1", "--pidfile="+filepath.Join(dir, "postgrey.pid"))
	if err != nil {
		return nil, err
	}
	s.daemons["postgrey"] = pid
	return []string{
		"smtpd_milters = unix:" + sock,
		"non_smtpd_milters = unix:" + sock,
		"milter_default_action = tempfail",
		"milter_protocol = 6",
		// Debian's README.Debian wiring of postgrey.
		"smtpd_recipient_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination, check_policy_service inet:" + pg,
	}, nil
}

func (s *stack) startExtra(name, dir, listen string, argv ...string) (int, error) {
	log, err := os.Create(filepath.Join(dir, name+".log"))
	if err != nil {
		return 0, err
	}
	defer log.Close()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Stdout, cmd.Stderr = log, log
	p, err := startProc(cmd)
	if err != nil {
		return 0, fmt.Errorf("%s: %w", name, err)
	}
	s.procs = append(s.procs, p)
	deadline := time.Now().Add(30 * time.Second)
	for {
		select {
		case <-p.done:
			b, _ := os.ReadFile(filepath.Join(dir, name+".log"))
			return 0, fmt.Errorf("%s exited at start-up: %v\n%s", name, cmd.ProcessState, b)
		default:
		}
		if harness.WaitListening(listen, 100*time.Millisecond) == nil {
			return cmd.Process.Pid, nil
		}
		if time.Now().After(deadline) {
			b, _ := os.ReadFile(filepath.Join(dir, name+".log"))
			return 0, fmt.Errorf("%s: %s not listening after 30s\n%s", name, listen, b)
		}
	}
}

func (s *stack) postconf(settings ...string) error {
	args := append([]string{"-c", s.node.PostfixConfig, "-e"}, settings...)
	if out, err := exec.Command("postconf", args...).CombinedOutput(); err != nil {
		return fmt.Errorf("%s: postconf -e: %v: %s", s.name, err, out)
	}
	return nil
}

// primeGreylist passes the outside triplet through greylisting once (RCPT
// only, no message): first attempt deferred by policyd or postgrey, a
// second one after the 1 s delay passes and the triplet stays passed.
// Every measured message then makes the greylister look up and update it.
func (s *stack) primeGreylist() error {
	deadline := time.Now().Add(15 * time.Second)
	env := harness.Envelope{From: outsideFrom, To: []string{outsideTo}}
	if s.name == Rspamd {
		// rspamd greylists at the end of the message, by the hash of
		// sender, recipient and client network as well as of the body:
		// one message passed makes every later one of the triplet pass.
		env.Helo = "mail.outside.test"
		env.Data = []byte("From: " + outsideFrom + "\r\nTo: " + outsideTo + "\r\nSubject: priming\r\n\r\npriming\r\n")
	}
	for {
		tr, err := harness.Send(s.outsideAddr(), env)
		if err != nil {
			return fmt.Errorf("%s: priming greylisting: %w", s.name, err)
		}
		if len(tr.Rcpt) == 1 && tr.Rcpt[0].Code == 250 && (env.Data == nil || tr.Final.Code == 250) {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: priming greylisting: still %v %v after 15s", s.name, tr.Rcpt, tr.Final)
		}
		time.Sleep(1100 * time.Millisecond)
	}
}

// queueEmpty reports whether postqueue -p shows no message.
func (s *stack) queueEmpty() (bool, string, error) {
	out, err := exec.Command("postqueue", "-c", s.node.PostfixConfig, "-p").CombinedOutput()
	if err != nil {
		return false, string(out), fmt.Errorf("postqueue -p: %v: %s", err, out)
	}
	return strings.Contains(string(out), "Mail queue is empty"), string(out), nil
}

// hwm is VmHWM (peak resident set) of every sidecar, in KiB; for rspamd
// that of its largest process (they share most of their pages).
func (s *stack) hwm() map[string]int {
	m := map[string]int{}
	for name, pid := range s.daemons {
		if b, err := procstat.PeakRSS(pid); err == nil {
			m[name] = int(b / 1024)
		}
		if forking[name] {
			for _, kid := range children(pid) {
				if b, err := procstat.PeakRSS(kid); err == nil {
					m[name] = max(m[name], int(b/1024))
				}
			}
		}
	}
	return m
}

func (s *stack) stop() {
	// Sidecars first (Postfix then has nobody to talk to), the sink last.
	for i := len(s.procs) - 1; i >= 1; i-- {
		s.procs[i].stop()
	}
	if s.node != nil {
		if err := s.node.Stop(); err != nil {
			s.logf("%s: stopping: %v", s.name, err)
		}
	}
	if len(s.procs) > 0 {
		s.procs[0].stop()
	}
}

func portOf(addr string) string {
	_, p, _ := net.SplitHostPort(addr)
	return p
}

func sbin(prog string) string {
	if p, err := exec.LookPath(prog); err == nil {
		return p
	}
	return "/usr/sbin/" + prog
}

func chown(path, user string) error {
	out, err := exec.Command("chown", user+":"+user, path).CombinedOutput()
	if err != nil {
		return fmt.Errorf("chown %s %s: %v: %s", user, path, err, out)
	}
	return nil
}

// logTail is the end of the mail log and of the sidecars' logs, for errors.
func (s *stack) logTail() string {
	tail := func(b []byte, n int) string {
		l := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
		if len(l) > n {
			l = l[len(l)-n:]
		}
		return strings.Join(l, "\n")
	}
	var out strings.Builder
	files := []string{filepath.Join(s.node.Dir, "log", "maillog")}
	for _, d := range []string{"policyd", "milterd"} {
		files = append(files, filepath.Join(s.node.Dir, "log", d+".log"))
	}
	files = append(files, filepath.Join(s.node.Dir, "classic", "opendkim.log"), filepath.Join(s.node.Dir, "classic", "postgrey.log"),
		filepath.Join(s.node.Dir, "rspamd", "rspamd.log"), filepath.Join(s.node.Dir, "rspamd", "log", "rspamd.log"))
	for _, f := range files {
		if b, err := os.ReadFile(f); err == nil && len(b) > 0 {
			fmt.Fprintf(&out, "--- %s (end):\n%s\n", f, tail(b, 25))
		}
	}
	return out.String()
}
