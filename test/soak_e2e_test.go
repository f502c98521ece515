package test

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mailnode/mailnode/test/procstat"
)

// TestSoak runs a steady mixed load through the real node for $SOAK (e.g.
// SOAK=3m; `make soak`), not part of `make test`: the three legitimate
// flows of the fault test plus a share of refused mail (outside -> outside,
// refused by the matrix; the GTUBE from outside, refused as spam). It
// samples both daemons' resident memory and open descriptors (/proc) and
// goroutines (policyd: go_goroutines on --metrics; milterd: the status
// line SIGUSR1 makes it log) after a warm-up, periodically, and at the
// end, under the same load, and asserts the end is within a margin of the
// warm-up level:
//
//	RSS:        at most 25% + 8 MiB above the warm-up sample
//	descriptors: at most 16 more
//	goroutines:  at most 16 more
//
// policyd's descriptors and goroutines are compared net of the smtpd
// processes alive at each sample: each holds one policyd connection until
// it exits, and Postfix decides how many there are.
//
// Then, drained: every accepted message delivered exactly once, no 5xx for
// legitimate mail, the queue empty.
func TestSoak(t *testing.T) {
	d, err := time.ParseDuration(os.Getenv("SOAK"))
	if err != nil || d <= 0 {
		t.Skip("a soak run: SOAK=3m (make soak)")
	}
	n := startLoadNode(t, loadOptions{})
	warm := min(45*time.Second, d/4)
	var seq atomic.Int64
	l := startLoad(n, &seq, 1<<30, 250*time.Millisecond)
	l.rejectedShare, l.spamShare = 4, 6
	start := time.Now()
	l.run()
	var samples []soakSample
	take := func(label string) soakSample {
		s := soakSample{label: label, at: time.Since(start).Round(time.Second)}
		for i, name := range []string{"policyd", "milterd"} {
			pid := n.DaemonPid(name)
			if pid == 0 {
				t.Fatalf("%s is not running:\n%s", name, n.DaemonLog(name))
			}
			rss, _ := procstat.RSS(pid)
			fds, _ := procstat.FDs(pid)
			s.d[i] = daemonFigures{rss: rss, fds: fds, goroutines: -1}
		}
		s.d[0].goroutines = policydGoroutines(t, n.Metrics)
		s.d[1].goroutines = milterdGoroutines(t, n)
		s.smtpd = smtpdProcesses(n.Dir)
		samples = append(samples, s)
		t.Logf("%-8s %5s  %s", label, s.at, s)
		return s
	}
	time.Sleep(warm)
	base := take("warm-up")
	for time.Since(start) < d-5*time.Second {
		time.Sleep(min(15*time.Second, d-time.Since(start)))
		take("sample")
	}
	end := take("end")
	l.Stop()
	q, err := n.DrainQueue(2 * time.Minute)
	queued := 0
	if err != nil {
		queued = strings.Count(q, "\n")
		t.Errorf("%v\n%s", err, q)
	}
	time.Sleep(2 * time.Second)
	take("drained")

	for i, name := range []string{"policyd", "milterd"} {
		b, e := base.d[i], end.d[i]
		if lim := b.rss + b.rss/4 + 8<<20; e.rss > lim {
			t.Errorf("%s: RSS %s at the end, warm-up %s (margin: 25%% + 8 MiB)", name, mib(e.rss), mib(b.rss))
		}
		// policyd holds one connection per smtpd process: compare what is
		// left beside them.
		if i == 0 {
			b.fds, e.fds = b.fds-base.smtpd, e.fds-end.smtpd
			b.goroutines, e.goroutines = b.goroutines-base.smtpd, e.goroutines-end.smtpd
		}
		if e.fds > b.fds+16 {
			t.Errorf("%s: %d open descriptors at the end, warm-up %d (margin: 16)", name, e.fds, b.fds)
		}
		if e.goroutines > b.goroutines+16 {
			t.Errorf("%s: %d goroutines at the end, warm-up %d (margin: 16)", name, e.goroutines, b.goroutines)
		}
	}

	r := n.account(t, "soak", n.MailLog(), l, queued, map[string]bool{})
	// The refused share is refused by design; only other 5xx count.
	var legit []string
	for _, x := range r.detail {
		if strings.HasPrefix(x, "maillog 5xx: ") && (strings.Contains(x, "to=<y@elsewhere.test>") || strings.Contains(x, "Message rejected as spam")) {
			continue
		}
		legit = append(legit, x)
	}
	r.five -= len(r.detail) - len(legit)
	r.detail = legit
	logTable(t, []tally{r})
	if r.failed() {
		t.Errorf("soak: accepted %d, delivered %d, duplicated %d, lost %d, 5xx %d, left in queue %d", r.accepted, r.delivered, r.dup, r.lost, r.five, r.qd)
	}
	if len(l.refusedUnknown) > 0 {
		t.Errorf("refused share answered otherwise: %v", l.refusedUnknown)
	}
	t.Logf("soak: %s, %d messages accepted and delivered, %d refused as they should be (outside -> outside, spam)", time.Since(start).Round(time.Second), r.accepted, l.refusedOK.Load())
}

type daemonFigures struct {
	rss             int64
	fds, goroutines int
}

type soakSample struct {
	label string
	at    time.Duration
	d     [2]daemonFigures // policyd, milterd
	smtpd int              // Postfix smtpd processes: each holds a policyd connection
}

func (s soakSample) String() string {
	f := func(x daemonFigures) string {
		return fmt.Sprintf("RSS %s, %3d fds, %3d goroutines", mib(x.rss), x.fds, x.goroutines)
	}
	return "policyd: " + f(s.d[0]) + " | milterd: " + f(s.d[1]) + fmt.Sprintf(" | %d smtpd processes", s.smtpd)
}

// smtpdProcesses counts the smtpd processes of the node's Postfix (children
// of its master): every one keeps its policyd connection open until it
// exits (max_idle, max_use), so policyd's descriptors follow their number.
func smtpdProcesses(dir string) int {
	b, _ := os.ReadFile(filepath.Join(dir, "queue", "pid", "master.pid"))
	master, _ := strconv.Atoi(strings.TrimSpace(string(b)))
	c := 0
	for _, pid := range procstat.Pids() {
		st, err := procstat.Read(pid)
		comm, _ := os.ReadFile(fmt.Sprintf("/proc/%d/comm", pid))
		if err == nil && master > 0 && st.PPid == master && strings.TrimSpace(string(comm)) == "smtpd" {
			c++
		}
	}
	return c
}

func mib(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }

var reGoGoroutines = regexp.MustCompile(`(?m)^go_goroutines (\d+)`)

// policydGoroutines reads go_goroutines from policyd's /metrics.
func policydGoroutines(t *testing.T, addr string) int {
	t.Helper()
	// No keep-alive: a connection kept open by each sample would show as
	// one more descriptor and goroutine of policyd per sample.
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("policyd metrics: %v", err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	m := reGoGoroutines.FindSubmatch(b)
	if m == nil {
		t.Fatalf("policyd metrics: no go_goroutines:\n%.2000s", b)
	}
	v, _ := strconv.Atoi(string(m[1]))
	return v
}

var reStatusGoroutines = regexp.MustCompile(`msg="milterd: status" goroutines=(\d+)`)

// milterdGoroutines sends milterd SIGUSR1 and reads the status line it
// logs (its log is written in batches: poll).
func milterdGoroutines(t *testing.T, n *loadNode) int {
	t.Helper()
	before := len(reStatusGoroutines.FindAllString(n.DaemonLog("milterd"), -1))
	if err := n.SignalDaemon("milterd", syscall.SIGUSR1); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		all := reStatusGoroutines.FindAllStringSubmatch(n.DaemonLog("milterd"), -1)
		if len(all) > before {
			v, _ := strconv.Atoi(all[len(all)-1][1])
			return v
		}
	}
	t.Fatalf("milterd logged no status line after SIGUSR1:\n%s", n.DaemonLog("milterd"))
	return 0
}
