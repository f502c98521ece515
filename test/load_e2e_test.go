package test

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/mailnode/mailnode/dns/dnstest"
	"github.com/mailnode/mailnode/spam/spamtest"
	"github.com/mailnode/mailnode/test/harness"
)

// The load of the fault and soak tests: the three legitimate flows of a
// node, as its clients produce them, and the accounting that shows every
// message Postfix accepted was delivered exactly once.
//
//   - outside -> local: Postfix's smtp-source from 127.0.0.1 to a mailbox
//   - trusted -> relay: smtp-source connecting to the node's 127.0.0.2
//     listener (so it comes from a trust host) to the relay domain, whose
//     next hop is the harness sink
//   - authenticated -> outside: the Go client on submission with STARTTLS
//     and AUTH, to an outside address; postfix.relayhost is the sink
//
// A message is identified by the queue id Postfix gave it (long queue ids,
// unique): qmgr logs "ID: from=<...>" for every message committed to the
// queue, i.e. every message a client got 250 for, and our Postfix's
// Received: header carries "(Postfix) with ESMTP id ID" in every delivered
// copy. The Go client also puts its own X-Fault-Id in each message and
// checks its 250s against what arrived.

const (
	outsideFrom = "x@sender.test"
	outsideTo   = "alice@example.com"
	trustedFrom = "bob@example.com"
	trustedTo   = "dave@partner.org"
	authUser    = "alice@example.com"
	authPass    = "alicepass"
	authTo      = "x@outside.test"
)

// loadZone: sender.test publishes SPF for the loopback clients and a
// DMARC policy; outside.test has an MX (a relayhost is used anyway). TTLs
// of 1s: milterd and unbound ask again nearly every message, so a dead
// resolver is noticed.
const loadZone = `
sender.test.        1 IN TXT "v=spf1 ip4:127.0.0.0/8 -all"
_dmarc.sender.test. 1 IN TXT "v=DMARC1; p=none"
sender.test.        1 IN MX 10 mx.sender.test.
mx.sender.test.     1 IN A 127.0.0.1
outside.test.       1 IN MX 10 mx.outside.test.
mx.outside.test.    1 IN A 127.0.0.1
`

// loadNode is a node with everything in the loop: policyd with its state in
// Redis (or bbolt), milterd with rspamd (or builtin) and unbound as
// node.resolver, forwarding everything to the test's DNS server.
type loadNode struct {
	*harness.Node
	DNS      *dnstest.Server
	Unbound  *harness.Proc
	Redis    *harness.Proc
	Rspamd   *harness.Proc // started again after a kill
	rspamdE  *spamtest.Engine
	Trusted  string // the port-25 service on 127.0.0.2
	Metrics  string // policyd's metrics address
	resolver string
}

type loadOptions struct {
	Rspamd, Redis, Unbound bool
	Edit                   func(doc map[string]any)
}

func startLoadNode(t *testing.T, o loadOptions) *loadNode {
	t.Helper()
	if testing.Short() || os.Getenv(harness.EnvNetns) == "" {
		t.Skip("end-to-end test: needs root and the test network namespace")
	}
	// 127.0.0.2 as an address of lo: connections to it come from it, so
	// smtp-source (which cannot bind a source address) is a trust host
	// when it connects to the node's listener there.
	if out, err := exec.Command("ip", "addr", "replace", harness.TrustedClient+"/32", "dev", "lo").CombinedOutput(); err != nil {
		t.Fatalf("ip addr replace: %v: %s", err, out)
	}
	ln := &loadNode{DNS: spamtest.StartDNS(t, loadZone)}
	dir := t.TempDir()
	ln.resolver = ln.DNS.Addr
	if o.Unbound {
		p, err := harness.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		ln.resolver = "127.0.0.1:" + strconv.Itoa(p)
	}
	redisURL := ""
	if o.Redis {
		port, err := harness.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		addr := "127.0.0.1:" + strconv.Itoa(port)
		ln.Redis = &harness.Proc{Name: "redis-server", LogFile: filepath.Join(dir, "redis.log"),
			Args:  []string{"redis-server", "--port", strconv.Itoa(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--daemonize", "no", "--dir", dir},
			Ready: func() error { return pingRedis(addr) }}
		if err := ln.Redis.Start(20 * time.Second); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(ln.Redis.Stop)
		redisURL = "redis://" + addr + "/0"
	}
	rspamdURL := ""
	if o.Rspamd {
		ln.rspamdE = spamtest.StartRspamd(t, ln.DNS.Addr)
		rspamdURL = ln.rspamdE.URL
		ln.Rspamd = &harness.Proc{Name: "rspamd", LogFile: filepath.Join(dir, "rspamd.out"), Dir: ln.rspamdE.Dir,
			Args: rspamdArgs(ln.rspamdE.Dir), Ready: func() error { return pingRspamd(rspamdURL) }}
		t.Cleanup(ln.Rspamd.Stop)
	}
	mport, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	ln.Metrics = "127.0.0.1:" + strconv.Itoa(mport)
	ln.Node = harness.StartNode(t, harness.Options{Policy: true, Milter: true, DKIMKeys: true, Edit: func(doc map[string]any) {
		harness.Set(doc, "policy.greylist.enabled", false)
		harness.Set(doc, "policy.ratelimit", map[string]any{"messages_per_hour": 1000000, "recipients_per_hour": 1000000})
		harness.Set(doc, "policy.metrics_listen", ln.Metrics)
		if redisURL != "" {
			harness.Set(doc, "policy.state", map[string]any{"backend": "redis", "url": redisURL})
		}
		harness.Set(doc, "node.resolver", ln.resolver)
		if rspamdURL != "" {
			harness.Set(doc, "spam.engine", "rspamd")
			harness.Set(doc, "spam.rspamd_url", rspamdURL)
		}
		if ds, ok := doc["domains"].([]any); ok {
			for _, d := range ds {
				if m, ok := d.(map[string]any); ok && m["class"] == "relay" {
					harness.Set(doc, "postfix.relayhost", m["nexthop"])
				}
			}
		}
		if l, ok := harness.Get(doc, "postfix.smtp_listen").([]any); ok && len(l) == 1 {
			a := l[0].(string)
			harness.Set(doc, "postfix.smtp_listen", []any{a, strings.Replace(a, harness.OutsideClient+":", harness.TrustedClient+":", 1)})
		}
		harness.Set(doc, "postfix.inet_interfaces", harness.OutsideClient+", "+harness.TrustedClient)
		if o.Edit != nil {
			o.Edit(doc)
		}
	}})
	ln.Trusted = harness.TrustedClient + ":" + portOf(ln.SMTP)
	if o.Unbound {
		ln.Unbound = startUnbound(t, ln.Node, ln.resolver, ln.DNS.Addr, dir)
	}
	return ln
}

func portOf(addr string) string { _, p, _ := net.SplitHostPort(addr); return p }

// rspamdArgs is the command line spamtest.StartRspamd runs rspamd with in
// its directory dir; the fault test starts it again with it after a kill.
func rspamdArgs(dir string) []string {
	return []string{"rspamd", "-f", "-c", "/etc/rspamd/rspamd.conf", "-u", "_rspamd", "-g", "_rspamd",
		"--var", "LOCAL_CONFDIR=" + filepath.Join(dir, "etc"), "--var", "DBDIR=" + filepath.Join(dir, "db"),
		"--var", "RUNDIR=" + filepath.Join(dir, "run"), "--var", "LOGDIR=" + filepath.Join(dir, "log")}
}

func pingRspamd(url string) error {
	c, err := net.DialTimeout("tcp", strings.TrimPrefix(url, "http://"), time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Second))
	fmt.Fprintf(c, "GET /ping HTTP/1.0\r\n\r\n")
	b := make([]byte, 512)
	n, _ := c.Read(b)
	if !strings.Contains(string(b[:n]), "200") {
		return fmt.Errorf("rspamd /ping: %q", b[:n])
	}
	return nil
}

func pingRedis(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(time.Second))
	fmt.Fprintf(c, "PING\r\n")
	b := make([]byte, 7)
	n, _ := c.Read(b)
	if string(b[:n]) != "+PONG\r\n" {
		return fmt.Errorf("redis PING: %q", b[:n])
	}
	return nil
}

// startUnbound runs the real unbound with the unbound.conf render-config
// wrote, through a test-only wrapper (as TestDNSCheckThroughRenderedUnbound
// does): no privilege drop, its own pid file, its log on stderr, "test."
// forwarded to the test's DNS server on loopback, taken as unsigned.
func startUnbound(t *testing.T, n *harness.Node, resolver, upstream, dir string) *harness.Proc {
	t.Helper()
	if _, err := os.Stat(n.Inv.Node.ResolverAnchorFile); err != nil {
		t.Fatalf("unbound's root trust anchor: %v (the harness seeds it from dns-root-data: apt-get install dns-root-data)", err)
	}
	host, port, _ := net.SplitHostPort(upstream)
	var w strings.Builder
	fmt.Fprintf(&w, "include: %q\nserver:\n", filepath.Join(n.Dir, "unbound", "unbound.conf"))
	fmt.Fprintf(&w, "    username: \"\"\n    chroot: \"\"\n    directory: %q\n    pidfile: %q\n", dir, filepath.Join(dir, "unbound.pid"))
	w.WriteString("    use-syslog: no\n    logfile: \"\"\n    verbosity: 1\n    log-servfail: yes\n")
	// Every name the load asks for is under "test.", one of the zones
	// unbound answers itself by default (RFC 6761); here it is forwarded.
	w.WriteString("    do-not-query-localhost: no\n    domain-insecure: \"test.\"\n    local-zone: \"test.\" nodefault\n")
	fmt.Fprintf(&w, "forward-zone:\n    name: \"test.\"\n    forward-addr: %s@%s\n", host, port)
	conf := filepath.Join(dir, "unbound-test.conf")
	if err := os.WriteFile(conf, []byte(w.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	if o, err := exec.Command("unbound-checkconf", conf).CombinedOutput(); err != nil {
		t.Fatalf("unbound-checkconf: %v\n%s", err, o)
	}
	p := &harness.Proc{Name: "unbound", LogFile: filepath.Join(dir, "unbound.out"), Args: []string{"unbound", "-d", "-c", conf},
		Ready: func() error {
			m := new(mdns.Msg)
			m.SetQuestion("sender.test.", mdns.TypeTXT)
			c := mdns.Client{Timeout: time.Second}
			r, _, err := c.ExchangeContext(context.Background(), m, resolver)
			if err != nil {
				return err
			}
			if r.Rcode != mdns.RcodeSuccess || len(r.Answer) == 0 {
				return fmt.Errorf("unbound: %s, %d answers", mdns.RcodeToString[r.Rcode], len(r.Answer))
			}
			return nil
		}}
	if err := p.Start(30 * time.Second); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return p
}

// flowStats is what one client flow saw.
type flowStats struct {
	mu       sync.Mutex
	attempts int            // messages tried
	ok       int            // 250 seen by the client (Go client only)
	replies  map[string]int // non-250 answers the client saw, normalised
	fiveXX   []string       // every 5xx the client saw, as is
	faultIDs map[string]int // Go client: X-Fault-Id of each message that got 250
	sentIDs  map[string]bool
}

func newFlowStats() *flowStats {
	return &flowStats{replies: map[string]int{}, faultIDs: map[string]int{}, sentIDs: map[string]bool{}}
}

func (f *flowStats) reply(stage string, r harness.Reply) {
	f.mu.Lock()
	defer f.mu.Unlock()
	text := r.Text()
	if i := strings.IndexByte(text, '\n'); i >= 0 {
		text = text[:i]
	}
	f.replies[stage+" "+normalise(text)]++
	if r.Code >= 500 {
		f.fiveXX = append(f.fiveXX, stage+" "+r.Text())
	}
}

// load runs the flows until stop is closed or each reaches max messages.
type load struct {
	n              *loadNode
	out, tr, auth  *flowStats
	stop           chan struct{}
	wg             sync.WaitGroup
	seq            *atomic.Int64
	pause          time.Duration
	max            int
	rejectedShare  int // every Nth outside message goes to an outside address (refused by the matrix); 0: none
	spamShare      int // every Nth outside message is the GTUBE (refused as spam); 0: none
	refusedOK      atomic.Int64
	refusedUnknown []string
	mu             sync.Mutex
}

func startLoad(n *loadNode, seq *atomic.Int64, max int, pause time.Duration) *load {
	l := &load{n: n, out: newFlowStats(), tr: newFlowStats(), auth: newFlowStats(), stop: make(chan struct{}), seq: seq, max: max, pause: pause}
	return l
}

func (l *load) run() {
	l.wg.Add(3)
	go l.source(l.out, l.n.SMTP, outsideFrom, outsideTo, "mx.sender.test")
	go l.source(l.tr, l.n.Trusted, trustedFrom, trustedTo, "app1.example.com")
	go l.submit()
}

// Stop ends the load and waits for the clients to finish what they send.
func (l *load) Stop() { close(l.stop); l.wg.Wait() }

func (l *load) stopped() bool {
	select {
	case <-l.stop:
		return true
	default:
		return false
	}
}

// smtpSourceLine: what smtp-source -A prints for a reply it did not want,
// e.g. "/usr/sbin/smtp-source: warning: recipient rejected: 451 4.3.5 ...";
// it then sends RSET and goes on with the next message.
var smtpSourceLine = regexp.MustCompile(`(?m)^\S*smtp-source: (?:warning|fatal): (.*)$`)

// source runs smtp-source in rounds of 2 messages over 2 sessions: -A so
// that a 4xx does not end it; what it prints (one line per unwanted reply
// or failed connection) is collected.
func (l *load) source(f *flowStats, addr, from, to, helo string) {
	defer l.wg.Done()
	for !l.stopped() && f.attempts < l.max {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		cmd := exec.CommandContext(ctx, "/usr/sbin/smtp-source", "-4", "-A", "-m", "2", "-s", "2",
			"-f", from, "-t", to, "-M", helo, addr)
		out, _ := cmd.CombinedOutput()
		cancel()
		f.mu.Lock()
		f.attempts += 2
		for _, m := range smtpSourceLine.FindAllStringSubmatch(string(out), -1) {
			f.replies["smtp-source: "+normalise(m[1])]++
			if regexp.MustCompile(`\b5\d\d[ -]`).MatchString(m[1]) {
				f.fiveXX = append(f.fiveXX, m[1])
			}
		}
		f.mu.Unlock()
		l.sleep()
	}
}

func (l *load) sleep() {
	select {
	case <-l.stop:
	case <-time.After(l.pause):
	}
}

// submit sends authenticated mail with the Go client, one message at a
// time; every Nth round (rejectedShare, spamShare) it also sends a message
// the node must refuse, from outside.
func (l *load) submit() {
	defer l.wg.Done()
	f := l.auth
	for i := 1; !l.stopped() && f.attempts < l.max; i++ {
		id := fmt.Sprintf("fault-%d-%d", time.Now().UnixNano(), l.seq.Add(1))
		msg := fmt.Appendf(nil, "From: <%s>\r\nTo: <%s>\r\nSubject: load %s\r\nX-Fault-Id: %s\r\nMessage-ID: <%s@example.com>\r\nDate: %s\r\n\r\nA legitimate message.\r\n",
			authUser, authTo, id, id, id, time.Now().UTC().Format(time.RFC1123Z))
		f.mu.Lock()
		f.attempts++
		f.sentIDs[id] = true
		f.mu.Unlock()
		tr, err := harness.Send(l.n.Submission, harness.Envelope{StartTLS: true, AuthUser: authUser, AuthPass: authPass,
			From: authUser, To: []string{authTo}, Data: msg})
		l.account(f, tr, err, id)
		if l.rejectedShare > 0 && i%l.rejectedShare == 0 {
			l.refused(harness.Envelope{Helo: "mx.sender.test", From: outsideFrom, To: []string{"y@elsewhere.test"}, Data: []byte("Subject: x\r\n\r\nx\r\n")}, "RCPT", 550)
		}
		if l.spamShare > 0 && i%l.spamShare == 0 {
			l.refused(harness.Envelope{Helo: "mx.sender.test", From: outsideFrom, To: []string{outsideTo}, Data: gtubeMessage(outsideFrom, outsideTo)}, "DATA", 550)
		}
		l.sleep()
	}
}

// account records one Go-client transaction.
func (l *load) account(f *flowStats, tr harness.Transcript, err error, id string) {
	stages := []struct {
		name string
		r    harness.Reply
	}{{"banner", tr.Banner}, {"EHLO", tr.EHLO}, {"STARTTLS", tr.StartTLS}, {"EHLO", tr.EHLO2}, {"AUTH", tr.Auth}, {"MAIL", tr.Mail}, {"DATA", tr.DataCmd}, {"end of DATA", tr.Final}}
	for _, s := range stages {
		if s.r.Code != 0 && !s.r.OK() {
			f.reply(s.name, s.r)
		}
	}
	for _, r := range tr.Rcpt {
		if !r.OK() {
			f.reply("RCPT", r)
		}
	}
	if tr.Final.Code == 250 {
		f.mu.Lock()
		f.ok++
		f.faultIDs[id]++
		f.mu.Unlock()
	} else if err != nil {
		f.mu.Lock()
		f.replies["client: "+normalise(err.Error())]++
		f.mu.Unlock()
	}
}

// refused sends one message the node must refuse with code at stage (or
// 4xx in a fault); anything else is recorded.
func (l *load) refused(e harness.Envelope, stage string, code int) {
	tr, err := harness.Send(l.n.SMTP, e)
	got := harness.Reply{}
	switch {
	case len(tr.Rcpt) == 1 && !tr.Rcpt[0].OK():
		got = tr.Rcpt[0]
		if stage != "RCPT" && got.Code < 500 {
			stage = "RCPT"
		}
	case tr.Final.Code != 0:
		got = tr.Final
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if err == nil && (got.Code == code || got.Code/100 == 4) {
		l.refusedOK.Add(1)
		return
	}
	l.refusedUnknown = append(l.refusedUnknown, fmt.Sprintf("%s: %v %v", stage, got, err))
}

var normaliser = regexp.MustCompile(`<[^>]*>|\[[0-9.]+\]|\b[0-9A-Za-z]{10,}\b|\d+(\.\d+)?s\b`)

// normalise turns a reply or log text into a key: addresses, queue ids and
// times replaced.
func normalise(s string) string {
	s = normaliser.ReplaceAllString(s, "…")
	if i := strings.Index(s, "; from="); i >= 0 {
		s = s[:i]
	}
	if len(s) > 110 {
		s = s[:110]
	}
	return strings.TrimSpace(s)
}

// Maillog accounting.

var (
	reQmgrFrom   = regexp.MustCompile(`/qmgr\[\d+\]: ([0-9A-Za-z]+): from=<([^>]*)>`)
	reReject     = regexp.MustCompile(`: (?:NOQUEUE|[0-9A-Za-z]+): reject: (\S+) from [^:]*: (\d{3}) (.*)$`)
	reMilterRej  = regexp.MustCompile(`: [0-9A-Za-z]+: milter-reject: (\S+) from [^:]*: (?:\d{3} )?(\d\.\d\.\d+) (.*)$`)
	reDeferred   = regexp.MustCompile(`/(lmtp|smtp)\[\d+\]: [0-9A-Za-z]+: .*status=deferred \((.*)\)$`)
	reBounced    = regexp.MustCompile(`status=bounced`)
	reWarning    = regexp.MustCompile(`/(\w+)\[\d+\]: (warning|fatal|panic): (.*)$`)
	reReceivedID = regexp.MustCompile(`\(Postfix\)\s+with\s+\S+\s+id\s+([0-9A-Za-z]+)`)
)

// logSummary is what Postfix logged in a stretch of its log.
type logSummary struct {
	accepted map[string]string // queue id -> envelope sender, from qmgr
	answers  map[string]int    // what Postfix answered or did, normalised
	fiveXX   []string          // 5xx rejections (and bounces) as logged
}

func summarise(log string) logSummary {
	s := logSummary{accepted: map[string]string{}, answers: map[string]int{}}
	for _, line := range strings.Split(log, "\n") {
		if m := reQmgrFrom.FindStringSubmatch(line); m != nil {
			if _, ok := s.accepted[m[1]]; !ok {
				s.accepted[m[1]] = m[2]
			}
			continue
		}
		if m := reReject.FindStringSubmatch(line); m != nil {
			s.answers[m[1]+" "+m[2]+" "+normalise(m[3])]++
			if m[2][0] == '5' {
				s.fiveXX = append(s.fiveXX, line)
			}
			continue
		}
		if m := reMilterRej.FindStringSubmatch(line); m != nil {
			s.answers["milter "+m[1]+" "+m[2]+" "+normalise(m[3])]++
			if m[2][0] == '5' {
				s.fiveXX = append(s.fiveXX, line)
			}
			continue
		}
		if m := reDeferred.FindStringSubmatch(line); m != nil {
			s.answers[m[1]+" deferred: "+normalise(m[2])]++
			continue
		}
		if reBounced.MatchString(line) {
			s.fiveXX = append(s.fiveXX, line)
			continue
		}
		if m := reWarning.FindStringSubmatch(line); m != nil {
			s.answers[m[1]+" "+m[2]+": "+normalise(m[3])]++
		}
	}
	return s
}

// reSlogMsg is the level and message of a daemon's log line (log/slog).
var reSlogMsg = regexp.MustCompile(`level=(WARN|ERROR) msg="([^"]*)"`)

// daemonSummary counts what a daemon's log says in a stretch of it: its
// warnings and errors by message, and the milter decisions that carry a
// DNS temperror or a spam engine error.
func daemonSummary(name, log string) map[string]int {
	m := map[string]int{}
	for _, line := range strings.Split(log, "\n") {
		if x := reSlogMsg.FindStringSubmatch(line); x != nil {
			m[name+" "+x[1]+": "+x[2]]++
		}
		if strings.Contains(line, "engine_error") {
			m[name+": decisions with a spam engine error (accepted: on_engine_failure accept)"]++
		}
		if strings.Contains(line, "temperror") {
			m[name+": decisions with a DNS temperror"]++
		}
	}
	return m
}

// delivered counts the copies of each queue id that arrived: in the
// mailbox of outsideTo and at the sink; and the X-Fault-Id of each sink
// copy.
func (n *loadNode) delivered(t *testing.T) (byID map[string]int, byFaultID map[string]int) {
	t.Helper()
	byID, byFaultID = map[string]int{}, map[string]int{}
	mails, err := n.ReadMaildir(outsideTo)
	if err != nil {
		t.Fatal(err)
	}
	add := func(data []byte) {
		head, _, _ := strings.Cut(strings.ReplaceAll(string(data), "\r\n", "\n"), "\n\n")
		if m := reReceivedID.FindStringSubmatch(head); m != nil {
			byID[m[1]]++
		} else {
			byID["(no queue id)"]++
		}
		for _, l := range strings.Split(head, "\n") {
			if v, ok := strings.CutPrefix(l, "X-Fault-Id: "); ok {
				byFaultID[strings.TrimSpace(v)]++
			}
		}
	}
	for _, m := range mails {
		add(m.Data)
	}
	for _, m := range n.Sink.Messages() {
		add(m.Data)
	}
	return byID, byFaultID
}

// tally is one row of the fault table.
type tally struct {
	name                                     string
	accepted, delivered, dup, lost, five, qd int
	// warned counts the duplicates Postfix announced: the delivery
	// agent lost its peer after sending the end of the data and logged
	// "message may be sent more than once". LMTP and SMTP acknowledge a
	// message only after the receiver stored it, so a receiver killed
	// between the two gets it again: delivery is at least once, and no
	// receiving side can tell the retry from a new message. Only those are
	// excused; any other duplicate fails.
	warned  int
	answers map[string]int
	detail  []string
}

// account checks a drained stretch of load: every accepted queue id (from
// the log segment) arrived exactly once, every X-Fault-Id the Go client got
// 250 for arrived exactly once, no 5xx. seen holds the ids earlier
// stretches accounted for.
func (n *loadNode) account(t *testing.T, name, logSeg string, l *load, queued int, seen map[string]bool) tally {
	t.Helper()
	s := summarise(logSeg)
	byID, byFault := n.delivered(t)
	r := tally{name: name, answers: s.answers, qd: queued}
	for id, from := range s.accepted {
		if seen[id] {
			continue
		}
		seen[id] = true
		switch from {
		case outsideFrom, trustedFrom, authUser:
		default:
			r.detail = append(r.detail, fmt.Sprintf("queue id %s from=<%s>: not load (a bounce?)", id, from))
		}
		r.accepted++
		switch c := byID[id]; {
		case c == 0:
			r.lost++
			r.detail = append(r.detail, fmt.Sprintf("lost: queue id %s from=<%s> accepted, never delivered", id, from))
		case c > 1:
			r.delivered++
			r.dup += c - 1
			why := ""
			if sentTwiceWarned(logSeg, id) {
				r.warned += c - 1
				why = " (Postfix logged \"message may be sent more than once\": its peer died after the end of the data)"
			}
			r.detail = append(r.detail, fmt.Sprintf("duplicate: queue id %s delivered %d times%s", id, c, why))
		default:
			r.delivered++
		}
	}
	if l != nil {
		// The Go client's own view: its 250s against what arrived.
		l.auth.mu.Lock()
		for id := range l.auth.sentIDs {
			got, ok := byFault[id], l.auth.faultIDs[id] > 0
			switch {
			case ok && got == 0:
				r.detail = append(r.detail, fmt.Sprintf("lost: X-Fault-Id %s got 250, never delivered", id))
				r.lost++
			case got > 1:
				r.detail = append(r.detail, fmt.Sprintf("duplicate: X-Fault-Id %s delivered %d times", id, got))
			case !ok && got > 0:
				r.detail = append(r.detail, fmt.Sprintf("X-Fault-Id %s delivered although the client saw no 250", id))
			}
		}
		l.auth.mu.Unlock()
		for _, f := range []*flowStats{l.out, l.tr, l.auth} {
			f.mu.Lock()
			r.five += len(f.fiveXX)
			for _, x := range f.fiveXX {
				r.detail = append(r.detail, "client saw 5xx: "+x)
			}
			for k, v := range f.replies {
				r.answers["client "+k] += v
			}
			f.mu.Unlock()
		}
	}
	r.five += len(s.fiveXX)
	for _, x := range s.fiveXX {
		r.detail = append(r.detail, "maillog 5xx: "+x)
	}
	if c := byID["(no queue id)"]; c > 0 && !seen["(no queue id)"] {
		seen["(no queue id)"] = true
		r.detail = append(r.detail, fmt.Sprintf("%d delivered message(s) without our Received: id", c))
	}
	return r
}

func (r tally) failed() bool { return r.lost > 0 || r.dup > r.warned || r.five > 0 || r.qd > 0 }

// sentTwiceWarned tells whether the log segment has a delivery attempt of
// queue id whose peer died after the end of the data, which Postfix logs
// as "... while sending end of data -- message may be sent more than once".
func sentTwiceWarned(log, id string) bool {
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(l, " "+id+": ") && strings.Contains(l, "message may be sent more than once") {
			return true
		}
	}
	return false
}

// logTable prints the per-fault table and what Postfix answered in each.
func logTable(t *testing.T, rows []tally) {
	t.Helper()
	var b strings.Builder
	fmt.Fprintf(&b, "\n%-22s %8s %9s %10s %7s %5s %4s %15s\n", "fault", "accepted", "delivered", "duplicated", "warned", "lost", "5xx", "left in queue")
	for _, r := range rows {
		fmt.Fprintf(&b, "%-22s %8d %9d %10d %7d %5d %4d %15d\n", r.name, r.accepted, r.delivered, r.dup, r.warned, r.lost, r.five, r.qd)
	}
	b.WriteString("(warned: duplicates of a delivery Postfix logged as \"message may be sent more than once\")\n")
	for _, r := range rows {
		fmt.Fprintf(&b, "\n%s — what Postfix answered and did, and what the clients saw:\n", r.name)
		keys := make([]string, 0, len(r.answers))
		for k := range r.answers {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		if len(keys) == 0 {
			b.WriteString("    (nothing but 250s and deliveries)\n")
		}
		for _, k := range keys {
			fmt.Fprintf(&b, "    %5d× %s\n", r.answers[k], k)
		}
		for _, d := range r.detail {
			fmt.Fprintf(&b, "    !! %s\n", d)
		}
	}
	t.Log(b.String())
}
