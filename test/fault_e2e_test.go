package test

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"

	"github.com/mailnode/mailnode/test/harness"
)

// Faults with Postfix in the loop (design.md, "Failure rules"): under a
// bounded load of the three legitimate flows, each part the node depends
// on is killed with SIGKILL and started again after a couple of seconds.
// Afterwards, with the queue flushed: every message a client got 250 for
// was delivered exactly once, no legitimate message got a 5xx, and the
// queue is empty. The one duplicate allowed is the one no mail system can
// avoid, and only when Postfix says so in its log: a receiver killed after
// it stored a message but before Postfix read its 250 gets the message
// again ("message may be sent more than once"; tally.warned). The table the test logs shows, per fault, what Postfix
// answered during it and the counts.

// fault is one part to kill and start again.
type fault struct {
	name string
	// recover is how long every flow may take to get a 250 after the
	// restart; 0 means 40s.
	recover time.Duration
	kill    func() error
	restart func() error
}

func TestFaultKill(t *testing.T) {
	start := time.Now()
	n := startLoadNode(t, loadOptions{Rspamd: true, Redis: true, Unbound: true})
	// The first kill of rspamd is of the process spamtest started, by the
	// process in its directory; the restart runs it again with the same command line.
	killRspamd := func() error {
		if n.Rspamd.Running() {
			return n.Rspamd.Kill()
		}
		// spamtest runs it in its directory, in a process group of its own.
		pid := harness.ProcessIn(n.rspamdE.Dir)
		if pid == 0 {
			return fmt.Errorf("no rspamd process runs in %s", n.rspamdE.Dir)
		}
		return harness.KillGroup(pid)
	}
	faults := []fault{
		{"policyd", 0, func() error { return n.KillDaemon("policyd") }, func() error { return n.RestartDaemon("policyd") }},
		{"milterd", 0, func() error { return n.KillDaemon("milterd") }, func() error { return n.RestartDaemon("milterd") }},
		// While Dovecot's auth socket is gone, a new submission smtpd
		// exits at start ("fatal: no SASL authentication mechanisms") and
		// master(8) throttles the service for service_throttle_time (10s
		// in the rendered main.cf, Postfix's default 60s): authenticated
		// clients wait that long after Dovecot is back.
		{"dovecot", 0, n.KillDovecot, n.StartDovecot},
		{"rspamd (spam engine)", 0, killRspamd, func() error { return n.Rspamd.Start(3 * time.Minute) }},
		{"unbound (resolver)", 0, n.Unbound.Kill, func() error { return n.Unbound.Start(30 * time.Second) }},
		{"redis (policy state)", 0, n.Redis.Kill, func() error { return n.Redis.Start(30 * time.Second) }},
	}
	var seq atomic.Int64
	seen := map[string]bool{}
	var rows []tally
	// Before the first fault: the load as it is when nothing fails.
	rows = append(rows, runFault(t, n, fault{name: "none (baseline)"}, &seq, seen))
	for _, f := range faults {
		rows = append(rows, runFault(t, n, f, &seq, seen))
	}
	logTable(t, rows)
	for _, r := range rows {
		if r.failed() {
			t.Errorf("fault %s: accepted %d, delivered %d, duplicated %d (%d of them announced by Postfix), lost %d, 5xx %d, left in queue %d",
				r.name, r.accepted, r.delivered, r.dup, r.warned, r.lost, r.five, r.qd)
		}
		if r.accepted == 0 {
			t.Errorf("fault %s: no message accepted at all", r.name)
		}
	}
	t.Logf("fault test took %s", time.Since(start).Round(time.Second))
}

// runFault runs the load, kills the part a second in, starts it again two
// seconds later, lets the load run on until every flow got a 250 after
// the restart (or f.recover passed), then drains the queue and accounts.
func runFault(t *testing.T, n *loadNode, f fault, seq *atomic.Int64, seen map[string]bool) tally {
	t.Helper()
	off := len(n.MailLog())
	offP, offM := len(n.DaemonLog("policyd")), len(n.DaemonLog("milterd"))
	l := startLoad(n, seq, 300, 150*time.Millisecond)
	l.run()
	time.Sleep(time.Second)
	var upAt time.Time
	if f.kill != nil {
		if err := f.kill(); err != nil {
			l.Stop()
			t.Fatalf("killing %s: %v", f.name, err)
		}
		time.Sleep(2 * time.Second)
		if err := f.restart(); err != nil {
			l.Stop()
			t.Fatalf("starting %s again: %v", f.name, err)
		}
	}
	upAt = time.Now()
	// Recovered: each flow gets a 250 after the restart.
	within := f.recover
	if within == 0 {
		within = 40 * time.Second
	}
	missing := waitRecovered(n, upAt, within)
	l.Stop()
	if len(missing) > 0 {
		t.Errorf("%s: no 250 within %s of the restart for mail from %v", f.name, within, missing)
	}
	q, err := n.DrainQueue(60 * time.Second)
	queued := 0
	if err != nil {
		queued = strings.Count(q, "\n") // an upper bound; the listing follows
		t.Errorf("%s: %v\n%s", f.name, err, q)
	}
	log := n.MailLog()[off:]
	r := n.account(t, f.name, log, l, queued, seen)
	for k, v := range daemonSummary("policyd", n.DaemonLog("policyd")[offP:]) {
		r.answers[k] += v
	}
	for k, v := range daemonSummary("milterd", n.DaemonLog("milterd")[offM:]) {
		r.answers[k] += v
	}
	return r
}

// waitRecovered polls the mail log after the restart for a message of each
// flow committed to the queue (qmgr's from= line), at most within. Until it
// returns the load keeps running.
func waitRecovered(n *loadNode, since time.Time, within time.Duration) (missing []string) {
	off := len(n.MailLog())
	deadline := since.Add(within)
	for {
		s := summarise(n.MailLog()[off:])
		got := map[string]bool{}
		for _, from := range s.accepted {
			got[from] = true
		}
		missing = nil
		for _, f := range []string{outsideFrom, trustedFrom, authUser} {
			if !got[f] {
				missing = append(missing, f)
			}
		}
		if len(missing) == 0 && time.Since(since) > 1500*time.Millisecond {
			return nil
		}
		if time.Now().After(deadline) {
			return missing
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestFaultDiskFull: the bbolt state file on a tiny tmpfs that is then
// filled. policyd answers 4xx or nothing (Postfix's 451 4.3.5), keeps
// serving (the matrix's 550 for outside -> outside still comes), and
// recovers by itself when space returns.
func TestFaultDiskFull(t *testing.T) {
	if testing.Short() || os.Getenv(harness.EnvNetns) == "" {
		t.Skip("end-to-end test: needs root and the test network namespace")
	}
	dir, err := os.MkdirTemp("/tmp", "mnd")
	if err != nil {
		t.Fatal(err)
	}
	fs := filepath.Join(dir, "statefs")
	os.MkdirAll(fs, 0o755)
	// Mounted inside the test's namespace (ip netns exec gives it a mount
	// namespace of its own); unmounted after the node stopped.
	if out, err := runCmd("mount", "-t", "tmpfs", "-o", "size=256k,mode=0755", "mnfault", fs); err != nil {
		t.Fatalf("mount tmpfs: %v: %s", err, out)
	}
	t.Cleanup(func() {
		runCmd("umount", fs)
		os.RemoveAll(dir)
	})
	const delay = 2 * time.Second
	n := harness.StartNode(t, harness.Options{Dir: dir, Policy: true, Milter: true, DKIMKeys: true, Edit: func(doc map[string]any) {
		harness.Set(doc, "policy.greylist.enabled", true)
		harness.Set(doc, "policy.greylist.delay", "2s")
		harness.Set(doc, "policy.state", map[string]any{"backend": "bbolt", "path": filepath.Join(fs, "state.db")})
	}})
	rcpt := func(from, to string) harness.Reply {
		t.Helper()
		tr, err := harness.Send(n.SMTP, harness.Envelope{Helo: "mx.sender.test", From: from, To: []string{to}})
		if err != nil || len(tr.Rcpt) != 1 {
			t.Fatalf("RCPT %s -> %s: %v %+v", from, to, err, tr)
		}
		return tr.Rcpt[0]
	}
	// Space as usual: greylisted, then passed after the delay.
	if r := rcpt("a1@sender.test", "alice@example.com"); r.Code != 450 || !strings.Contains(r.Text(), "Greylisted") {
		t.Fatalf("first triplet: %v", r)
	}
	// Fill the file system.
	filler := filepath.Join(fs, "filler")
	out, _ := runCmd("dd", "if=/dev/zero", "of="+filler, "bs=4k")
	if !strings.Contains(out, "No space left") {
		t.Fatalf("dd did not fill the tmpfs: %s", out)
	}
	// New triplets until policyd cannot commit: 450 while answered from
	// memory, then no answer (451 4.3.5) once its lag bound passed. Never
	// a pass, never a 5xx. Bounded: 30s.
	codes := map[string]int{}
	saw451 := false
	for i := 0; i < 300 && !saw451; i++ {
		r := rcpt("full"+strconv.Itoa(i)+"@sender.test", "bob@example.com")
		codes[strconv.Itoa(r.Code)]++
		if r.Code/100 != 4 {
			t.Fatalf("disk full, new triplet %d: %v (want 4xx)", i, r)
		}
		saw451 = r.Code == 451 && strings.Contains(r.Text(), "4.3.5")
		if i > 10 {
			time.Sleep(100 * time.Millisecond)
		}
	}
	t.Logf("disk full: replies to new triplets %v", codes)
	if !saw451 {
		t.Errorf("disk full: policyd never failed to commit (no 451 4.3.5); replies %v\npolicyd log:\n%s", codes, n.DaemonLog("policyd"))
	}
	if n.DaemonPid("policyd") == 0 || syscall.Kill(n.DaemonPid("policyd"), 0) != nil {
		t.Fatalf("policyd is gone:\n%s", n.DaemonLog("policyd"))
	}
	// Still serving: the matrix needs no state.
	if r := rcpt("x@sender.test", "y@elsewhere.test"); r.Code != 550 {
		t.Errorf("disk full, outside -> outside: %v (want the matrix's 550)", r)
	}
	// Space returns: policyd recovers by itself.
	os.Remove(filler)
	deadline := time.Now().Add(30 * time.Second)
	var r harness.Reply
	for {
		r = rcpt("back@sender.test", "carol@example.net")
		if r.Code == 450 && strings.Contains(r.Text(), "Greylisted") {
			break
		}
		if r.Code/100 != 4 || time.Now().After(deadline) {
			t.Fatalf("space back, new triplet: %v (want 450 Greylisted within 30s)", r)
		}
		time.Sleep(200 * time.Millisecond)
	}
	time.Sleep(delay + 500*time.Millisecond)
	if r := rcpt("back@sender.test", "carol@example.net"); r.Code != 250 {
		t.Errorf("space back, retry after the delay: %v (want 250)", r)
	}
	log := n.DaemonLog("policyd")
	if strings.Contains(log, "panic") {
		t.Errorf("policyd panicked:\n%s", log)
	}
	t.Logf("policyd log lines about the disk: %s", grepLines(log, "no space", 4))
}

// TestFaultReloadBrokenInventory: a broken inventory given at SIGHUP is
// refused by both daemons, which say so and serve on with the old one.
func TestFaultReloadBrokenInventory(t *testing.T) {
	n := harness.StartNode(t, harness.Options{Policy: true, Milter: true, DKIMKeys: true, Edit: func(doc map[string]any) {
		harness.Set(doc, "policy.greylist.enabled", false)
		if ds, ok := doc["domains"].([]any); ok {
			for _, d := range ds {
				if m, ok := d.(map[string]any); ok && m["class"] == "relay" {
					harness.Set(doc, "postfix.relayhost", m["nexthop"])
				}
			}
		}
	}})
	good, err := os.ReadFile(n.InventoryPath)
	if err != nil {
		t.Fatal(err)
	}
	// A duplicate domain: example.net a second time.
	var doc map[string]any
	if err := yaml.Unmarshal(good, &doc); err != nil {
		t.Fatal(err)
	}
	doc["domains"] = append(doc["domains"].([]any), map[string]any{"name": "example.net", "class": "local"})
	broken, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(n.InventoryPath, broken, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.WriteFile(n.InventoryPath, good, 0o644) })
	for _, d := range []string{"policyd", "milterd"} {
		if err := n.SignalDaemon(d, syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	if log, ok := n.DaemonLogWith("policyd", "reload failed; keeping the running inventory", "example.net"); !ok {
		t.Errorf("policyd did not say it kept the running inventory:\n%s", log)
	}
	if log, ok := n.DaemonLogWith("milterd", "reload refused, keeping the running inventory"); !ok {
		t.Errorf("milterd did not say it kept the running inventory:\n%s", log)
	}
	checkServing := func(when string, sinkBefore int) {
		t.Helper()
		// policyd decides as before: outside -> outside is refused, outside -> local passes.
		tr, err := harness.Send(n.SMTP, harness.Envelope{From: "x@sender.test", To: []string{"y@elsewhere.test"}})
		if err != nil || len(tr.Rcpt) != 1 || tr.Rcpt[0].Code != 550 {
			t.Errorf("%s: outside -> outside: %v %+v", when, err, tr.Rcpt)
		}
		// milterd signs as before.
		msg := harness.NewMessage("alice@example.com", "x@outside.test", "after reload", "Signed as before?")
		tr, err = harness.Send(n.Submission, harness.Envelope{StartTLS: true, AuthUser: authUser, AuthPass: authPass,
			From: authUser, To: []string{"x@outside.test"}, Data: msg})
		if err != nil || tr.Final.Code != 250 {
			t.Fatalf("%s: authenticated -> outside: %v %+v", when, err, tr)
		}
		got := n.WaitSink(t, sinkBefore+1)
		data := string(got[sinkBefore].Data)
		for _, sel := range []string{"s=mx2026r", "s=mx2026e"} {
			if !strings.Contains(data, "DKIM-Signature:") || !strings.Contains(data, sel) {
				t.Errorf("%s: not signed with %s:\n%s", when, sel, data)
			}
		}
	}
	checkServing("after a broken SIGHUP", 0)
	if pid := n.DaemonPid("policyd"); pid == 0 || syscall.Kill(pid, 0) != nil {
		t.Error("policyd is gone")
	}
	// Restored: both reload it.
	os.WriteFile(n.InventoryPath, good, 0o644)
	for _, d := range []string{"policyd", "milterd"} {
		n.SignalDaemon(d, syscall.SIGHUP)
	}
	if log, ok := n.DaemonLogWith("policyd", "policyd: inventory reloaded"); !ok {
		t.Errorf("policyd did not reload the restored inventory:\n%s", log)
	}
	if log, ok := n.DaemonLogWith("milterd", "milterd: inventory reloaded"); !ok {
		t.Errorf("milterd did not reload the restored inventory:\n%s", log)
	}
	checkServing("after the restored SIGHUP", 1)
	// Both loads of each daemon, at start and at the good reload, ran in
	// mailnode load-inventory (the broken one too: its problems above are
	// the helper's), and none fell back to loading in process.
	for _, d := range []string{"policyd", "milterd"} {
		var log string
		for deadline := time.Now().Add(10 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
			if log = n.DaemonLog(d); strings.Count(log, "loaded_by=load-inventory") >= 2 {
				break
			}
		}
		if strings.Count(log, "loaded_by=load-inventory") < 2 || strings.Contains(log, "helper_failed") {
			t.Errorf("%s did not load through mailnode load-inventory at start and reload:\n%s", d, grepLines(log, "loaded", 5))
		}
	}
	t.Logf("policyd: %s", grepLines(n.DaemonLog("policyd"), "reload", 3))
	t.Logf("milterd: %s", grepLines(n.DaemonLog("milterd"), "reload", 3))
}

func runCmd(name string, args ...string) (string, error) {
	out, err := execCombined(name, args...)
	return string(out), err
}

// httpGet fetches http://addr+path (a daemon's metrics or health
// endpoint) and returns its status and body; it fails the test when the
// request does not go through.
func httpGet(t *testing.T, addr, path string) (int, string) {
	t.Helper()
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// grepLines returns up to max lines of log containing substr (case
// insensitive), joined.
func grepLines(log, substr string, max int) string {
	var out []string
	for _, l := range strings.Split(log, "\n") {
		if strings.Contains(strings.ToLower(l), strings.ToLower(substr)) {
			out = append(out, l)
			if len(out) == max {
				break
			}
		}
	}
	return "\n" + strings.Join(out, "\n")
}

func execCombined(name string, args ...string) ([]byte, error) {
	return exec.Command(name, args...).CombinedOutput()
}
