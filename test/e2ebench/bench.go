package main

import (
	"bytes"
	"crypto"
	"crypto/rsa"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	msgauth "github.com/emersion/go-msgauth/dkim"

	"github.com/mailnode/mailnode/dkim"
	"github.com/mailnode/mailnode/dns/dnstest"
	"github.com/mailnode/mailnode/test/harness"
	"github.com/mailnode/mailnode/test/procstat"
)

// Config chooses the load.
type Config struct {
	Runs     int     // measured runs of every (scenario, stack)
	Scale    float64 // multiplies the messages per scenario (Scenarios)
	Quick    bool    // smoke run: few messages, one run
	Timeout  time.Duration
	Stacks   []string
	Sizes    []int
	Sessions []int
	Logf     func(string, ...any)
	// PerfDir, when set, records every sidecar with `perf record -g` during
	// each measurement into PerfDir/<stack>-<daemon>-<scenario>.perf.
	PerfDir string
}

// Scenario is one load: a path (trusted→relay or outside→local), a body
// size, parallel sessions, and how many messages.
type Scenario struct {
	Path     string // "trusted" or "outside"
	Size     int
	Sessions int
	N        int
}

func (s Scenario) String() string {
	p := "trusted→relay (sign)"
	if s.Path == "outside" {
		p = "outside→local (verify+spam)"
	}
	return fmt.Sprintf("%s %s s%d", p, sizeName(s.Size), s.Sessions)
}

// Scenarios: every path × size × sessions. N is sized so that one
// measurement takes a few seconds on a 2-core machine (more parallel
// sessions, more messages; 64 KiB, fewer).
func (c Config) Scenarios() []Scenario {
	var l []Scenario
	for _, path := range []string{"trusted", "outside"} {
		for _, size := range c.Sizes {
			for _, sess := range c.Sessions {
				n := 150 * sess
				if n > 600 {
					n = 600
				}
				if size > 16<<10 {
					n = n * 2 / 3
				}
				n = int(float64(n) * c.Scale)
				if c.Quick {
					n = 4 * sess
				}
				if n < sess {
					n = sess
				}
				l = append(l, Scenario{Path: path, Size: size, Sessions: sess, N: n})
			}
		}
	}
	return l
}

// Result is one measurement.
type Result struct {
	Stack      string
	Scenario   Scenario
	Accepted   float64 // messages/s: N / smtp-source wall time
	Delivered  float64 // messages/s: N / (start .. N-th arrival at the sink)
	Load       float64 // 1-minute load average when the measurement started
	Duplicates int     // copies beyond the first at the sink
	Lost       int     // accepted but never arrived
	// CPU is the CPU time per message in ms of each part of the stack
	// ("postfix", "policyd", "milterd", "opendkim", "postgrey", "sink",
	// "source" = smtp-source) from start to drained queue.
	CPU map[string]float64
}

// Bench is a running set of stacks with their messages and DNS.
type Bench struct {
	cfg    Config
	dir    string // messages, sink dumps (tmpfs when available)
	dns    *dnstest.Server
	stacks map[string]*stack
	msgs   map[string]string // "path/size" -> message file for smtp-source -F
	// Retried lists the measurements that ended on a 4xx and were made again.
	Retried []string
}

// Setup prepares the namespace (127.0.0.2 as a source address), the DNS
// server on 127.0.0.1:53 (outside.test: SPF, DKIM key, DMARC), the
// messages, and starts the stacks.
func Setup(cfg Config) (*Bench, error) {
	if os.Getenv(harness.EnvNetns) == "" {
		return nil, fmt.Errorf("e2ebench: must run inside its network namespace")
	}
	if cfg.Logf == nil {
		cfg.Logf = func(string, ...any) {}
	}
	if len(cfg.Stacks) == 0 {
		cfg.Stacks = stackNames
	}
	if err := routeTrusted(); err != nil {
		return nil, err
	}
	base := "/dev/shm"
	if st, err := os.Stat(base); err != nil || !st.IsDir() {
		base = os.TempDir()
	}
	dir, err := os.MkdirTemp(base, "e2ebench")
	if err != nil {
		return nil, err
	}
	os.Chmod(dir, 0o755)
	b := &Bench{cfg: cfg, dir: dir, stacks: map[string]*stack{}, msgs: map[string]string{}}
	key, err := dkim.Generate("rsa")
	if err != nil {
		return b, err
	}
	txt, err := dkim.TXTValue(key)
	if err != nil {
		return b, err
	}
	if b.dns, err = dnstest.New("127.0.0.1:53"); err != nil {
		return b, fmt.Errorf("dns server on 127.0.0.1:53: %w", err)
	}
	zone := "outside.test. SOA ns.outside.test. hostmaster.outside.test. 1 3600 900 1209600 300\n" +
		"outside.test. TXT \"v=spf1 ip4:127.0.0.0/8 ip4:" + OutsideAddr + " -all\"\n" +
		"mail.outside.test. A " + OutsideAddr + "\n" +
		"_dmarc.outside.test. TXT \"v=DMARC1; p=reject\"\n" +
		"bench._domainkey.outside.test. TXT " + quoteTXT(txt) + "\n"
	if err := b.dns.Add(zone); err != nil {
		return b, err
	}
	for _, size := range cfg.Sizes {
		for _, path := range []string{"trusted", "outside"} {
			m, err := message(path, size, key.(*rsa.PrivateKey))
			if err != nil {
				return b, err
			}
			f := filepath.Join(dir, fmt.Sprintf("%s-%d.eml", path, size))
			if err := os.WriteFile(f, m, 0o644); err != nil {
				return b, err
			}
			b.msgs[fmt.Sprintf("%s/%d", path, size)] = f
		}
	}
	for _, name := range cfg.Stacks {
		t0 := time.Now()
		s, err := startStack(name, dir, cfg.Logf)
		if s != nil {
			b.stacks[name] = s
		}
		if err != nil {
			return b, err
		}
		cfg.Logf("stack %s up in %v (%s)", name, time.Since(t0).Round(time.Millisecond), s.node.Dir)
	}
	return b, nil
}

// Close stops everything Setup started.
func (b *Bench) Close() {
	for _, s := range b.stacks {
		s.stop()
	}
	if b.dns != nil {
		b.dns.Close()
	}
	if b.dir != "" {
		os.RemoveAll(b.dir)
	}
}

// routeTrusted adds 127.0.0.2 to lo as an address of its own: Postfix's
// inet_interfaces then accepts it, and connections to 127.0.0.2 leave from
// 127.0.0.2 (the kernel's local route for it gets src 127.0.0.2; by default
// every 127/8 destination is reached from 127.0.0.1). So smtp-source, which
// cannot bind a source address, plays a trust host when it connects to the
// node's 127.0.0.2 listener. OutsideAddr is added the same way. Only in
// this namespace.
func routeTrusted() error {
	for _, a := range []string{harness.TrustedClient, OutsideAddr} {
		out, err := exec.Command("ip", "addr", "replace", a+"/32", "dev", "lo").CombinedOutput()
		if err != nil {
			return fmt.Errorf("ip addr replace %s/32 dev lo: %v: %s", a, err, out)
		}
	}
	return nil
}

// Measure runs one scenario against one stack: smtp-source sends N
// messages; the sink's files are counted until N arrived; the queue must
// be empty and every Postfix queue id must have arrived exactly once.
func (b *Bench) Measure(name string, sc Scenario) (Result, error) {
	s := b.stacks[name]
	r := Result{Stack: name, Scenario: sc, Load: loadavg()}
	// A failed measurement before may have left messages on their way.
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(50 * time.Millisecond) {
		if empty, _, err := s.queueEmpty(); err != nil || empty || time.Now().After(deadline) {
			break
		}
	}
	if err := clearDir(s.sinkDir); err != nil {
		return r, err
	}
	addr, from, to, helo := s.outsideAddr(), outsideFrom, outsideTo, "mail.outside.test"
	if sc.Path == "trusted" {
		addr, from, to, helo = s.trustedAddr(), trustedFrom, trustedTo, "app1.example.com"
	}
	file := b.msgs[fmt.Sprintf("%s/%d", sc.Path, sc.Size)]
	cmd := exec.Command(sbin("smtp-source"), "-4", "-m", strconv.Itoa(sc.N), "-s", strconv.Itoa(sc.Sessions),
		"-f", from, "-t", to, "-M", helo, "-F", file, addr)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	arrived := make(chan time.Time, 1)
	stopPoll := make(chan struct{})
	stopPerf := b.perf(s, sc)
	defer stopPerf()
	cpu0 := s.cpu()
	start := time.Now()
	go func() {
		for {
			if countFiles(s.sinkDir) >= sc.N {
				arrived <- time.Now()
				return
			}
			select {
			case <-stopPoll:
				return
			case <-time.After(5 * time.Millisecond):
			}
		}
	}()
	defer close(stopPoll)
	err := cmd.Run()
	sent := time.Since(start)
	if err != nil || strings.TrimSpace(out.String()) != "" {
		err := fmt.Errorf("%s, %s: smtp-source: %v\n%s\n%s", name, sc, err, out.String(), s.logTail())
		if strings.Contains(out.String(), "rejected: 4") {
			return r, &TempError{err}
		}
		return r, err
	}
	r.Accepted = float64(sc.N) / sent.Seconds()
	timeout := b.cfg.Timeout
	if timeout == 0 {
		timeout = 2 * time.Minute
	}
	select {
	case t := <-arrived:
		r.Delivered = float64(sc.N) / t.Sub(start).Seconds()
	case <-time.After(timeout):
	}
	// Drained: the queue empty, then nothing more may arrive.
	deadline := time.Now().Add(timeout)
	for {
		empty, q, err := s.queueEmpty()
		if err != nil {
			return r, err
		}
		if empty {
			break
		}
		if time.Now().After(deadline) {
			return r, fmt.Errorf("%s, %s: queue not empty after %v:\n%s", name, sc, timeout, q)
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	r.CPU = perMessage(cpu0, s.cpu(), sc.N)
	stopPerf()
	if ps := cmd.ProcessState; ps != nil {
		r.CPU["source"] = float64((ps.UserTime() + ps.SystemTime()).Microseconds()) / 1000 / float64(sc.N)
	}
	ids, err := queueIDs(s.sinkDir, s.node.Hostname, sc, name)
	if err != nil {
		return r, err
	}
	total := 0
	for _, c := range ids {
		total += c
		if c > 1 {
			r.Duplicates += c - 1
		}
	}
	if len(ids) < sc.N {
		r.Lost = sc.N - len(ids)
	}
	if len(ids) > sc.N {
		return r, fmt.Errorf("%s, %s: %d distinct messages arrived, %d were sent", name, sc, len(ids), sc.N)
	}
	if r.Delivered == 0 && r.Lost == 0 {
		return r, fmt.Errorf("%s, %s: all arrived but not within %v", name, sc, timeout)
	}
	return r, nil
}

// perf starts `perf record` on every sidecar of s (with Config.PerfDir)
// and returns what stops them; calling it twice is harmless.
func (b *Bench) perf(s *stack, sc Scenario) func() {
	if b.cfg.PerfDir == "" {
		return func() {}
	}
	var ps []*proc
	for name, pid := range s.daemons {
		f := filepath.Join(b.cfg.PerfDir, fmt.Sprintf("%s-%s-%s-%d-s%d.perf", s.name, name, sc.Path, sc.Size, sc.Sessions))
		cmd := exec.Command("perf", "record", "-q", "-F", "999", "-g", "-p", strconv.Itoa(pid), "-o", f)
		if p, err := startProc(cmd); err == nil {
			ps = append(ps, p)
		} else {
			b.cfg.Logf("perf record %s: %v", name, err)
		}
	}
	time.Sleep(200 * time.Millisecond) // perf attaches
	done := false
	return func() {
		if done {
			return
		}
		done = true
		for _, p := range ps {
			p.cmd.Process.Signal(os.Interrupt)
			select {
			case <-p.done:
			case <-time.After(10 * time.Second):
				p.stop()
			}
		}
	}
}

// TempError is a measurement that ended on a 4xx reply (a real client
// would retry): RunAll measures again, once, and reports it.
type TempError struct{ error }

var (
	postfixID = regexp.MustCompile(`\(Postfix\) with E?SMTPS?A? id ([0-9A-Za-z]+)`)
	dkimSig   = regexp.MustCompile(`(?mi)^DKIM-Signature:`)
	authRes   = regexp.MustCompile(`(?mi)^Authentication-Results:`)
)

// queueIDs reads every message at the sink and counts them by the queue id
// of the node's Received header. It also checks what each stack must have
// done to the messages: signed (mailnode: RSA and Ed25519; classic: RSA) on
// the trusted path, Authentication-Results on the outside path (mailnode,
// classic), and bare does neither.
func queueIDs(dir, hostname string, sc Scenario, stackName string) (map[string]int, error) {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	ids := map[string]int{}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			return nil, err
		}
		ms := postfixID.FindAllSubmatch(b, -1)
		if len(ms) == 0 {
			return nil, fmt.Errorf("%s, %s: %s has no Received header of the node:\n%.600s", stackName, sc, e.Name(), b)
		}
		for _, m := range ms {
			ids[string(m[1])]++
		}
		hdr, _, _ := bytes.Cut(b, []byte("\n\n"))
		if i := bytes.Index(b, []byte("\r\n\r\n")); i >= 0 && i < len(hdr) {
			hdr = b[:i]
		}
		sigs, ars := len(dkimSig.FindAll(hdr, -1)), len(authRes.FindAll(hdr, -1))
		var bad string
		switch {
		case sc.Path == "trusted" && (stackName == Mailnode || stackName == Rspamd) && sigs != 2:
			bad = fmt.Sprintf("%d DKIM signatures, want 2 (RSA, Ed25519)", sigs)
		case sc.Path == "trusted" && stackName == Classic && sigs != 1:
			bad = fmt.Sprintf("%d DKIM signatures, want 1 (RSA)", sigs)
		case sc.Path == "trusted" && (stackName == Bare || stackName == Floor) && sigs != 0:
			bad = fmt.Sprintf("%d DKIM signatures, want none", sigs)
		case sc.Path == "outside" && (stackName == Mailnode || stackName == Classic || stackName == Rspamd) && ars == 0:
			bad = "no Authentication-Results"
		case sc.Path == "outside" && sigs != 1:
			bad = fmt.Sprintf("%d DKIM signatures, want the sender's 1", sigs)
		}
		if bad != "" {
			return nil, fmt.Errorf("%s, %s: %s: %s:\n%.1500s", stackName, sc, e.Name(), bad, hdr)
		}
	}
	return ids, nil
}

// message is the file smtp-source sends with -F: headers and a text body of
// size bytes. The outside message is DKIM-signed (RSA-2048, relaxed/relaxed)
// by outside.test, whose key the namespace's DNS server publishes.
func message(path string, size int, key *rsa.PrivateKey) ([]byte, error) {
	from, to := "Alice <"+trustedFrom+">", "Carol <"+trustedTo+">"
	if path == "outside" {
		from, to = "Outside News <"+outsideFrom+">", "Alice <"+outsideTo+">"
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "From: %s\r\nTo: %s\r\nSubject: quarterly figures\r\nDate: Sun, 01 Mar 2026 12:00:00 +0000\r\n"+
		"Message-ID: <e2ebench.%s.%d@bench>\r\nMIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n", from, to, path, size)
	lines := []string{
		"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod",
		"tempor incididunt ut labore et dolore magna aliqua. Ut enim ad minim",
		"veniam, quis nostrud exercitation ullamco laboris nisi ut aliquip ex ea",
		"",
		"commodo consequat. Duis aute irure dolor in reprehenderit in voluptate",
	}
	var body bytes.Buffer
	for i := 0; body.Len() < size; i++ {
		body.WriteString(lines[i%len(lines)])
		body.WriteString("\r\n")
	}
	b.Write(body.Bytes())
	if path != "outside" {
		return b.Bytes(), nil
	}
	var signed bytes.Buffer
	err := msgauth.Sign(&signed, bytes.NewReader(b.Bytes()), &msgauth.SignOptions{
		Domain: "outside.test", Selector: "bench", Signer: crypto.Signer(key),
		HeaderCanonicalization: msgauth.CanonicalizationRelaxed, BodyCanonicalization: msgauth.CanonicalizationRelaxed,
		HeaderKeys: []string{"From", "To", "Subject", "Date", "Message-ID", "MIME-Version", "Content-Type"},
	})
	// smtp-source -F appends CRLF to every line it reads: give it LF lines.
	return bytes.ReplaceAll(signed.Bytes(), []byte("\r\n"), []byte("\n")), err
}

func quoteTXT(v string) string {
	var parts []string
	for len(v) > 0 {
		n := min(len(v), 250)
		parts = append(parts, `"`+v[:n]+`"`)
		v = v[n:]
	}
	return strings.Join(parts, " ")
}

func sizeName(n int) string {
	if n >= 1<<10 && n%(1<<10) == 0 {
		return fmt.Sprintf("%d KiB", n>>10)
	}
	return fmt.Sprintf("%d B", n)
}

func countFiles(dir string) int {
	f, err := os.Open(dir)
	if err != nil {
		return 0
	}
	defer f.Close()
	names, _ := f.Readdirnames(-1)
	return len(names)
}

func clearDir(dir string) error {
	ents, err := os.ReadDir(dir)
	if err != nil {
		return err
	}
	for _, e := range ents {
		if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
			return err
		}
	}
	return nil
}

// loadavg is the 1-minute load average.
func loadavg() float64 {
	l, err := procstat.LoadAvg()
	if err != nil {
		return -1
	}
	return l[0]
}
