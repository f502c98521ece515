package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"gopkg.in/yaml.v3"

	"github.com/mailnode/mailnode/state"
	"github.com/mailnode/mailnode/state/statetest"
	"github.com/mailnode/mailnode/test/harness"
)

// statefulInventory writes policy/testdata/inventory.yaml with the policy
// settings of set (dotted keys under policy.) to dir/name.
func statefulInventory(t *testing.T, dir, name string, set map[string]any) string {
	t.Helper()
	raw, err := os.ReadFile("../../policy/testdata/inventory.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc map[string]any
	if err := yaml.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	pol := doc["policy"].(map[string]any)
	for k, v := range set {
		pol[k] = v
	}
	out, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, out, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// daemonProc is one running daemon of the built binary.
type daemonProc struct {
	name   string
	cmd    *exec.Cmd
	sock   string
	stderr *harness.SyncBuffer
	exited chan error
}

// startDaemon runs the built mailnode with args (args[0] names the daemon),
// kills it at the end of the test (logging its stderr if the test failed),
// and waits until it accepts on the unix socket sock.
func startDaemon(t *testing.T, sock string, args ...string) *daemonProc {
	t.Helper()
	bin, err := buildMailnode()
	if err != nil {
		t.Fatal(err)
	}
	p := &daemonProc{name: args[0], cmd: exec.Command(bin, args...), sock: sock, stderr: &harness.SyncBuffer{}, exited: make(chan error, 1)}
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.exited <- p.cmd.Wait() }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		if t.Failed() {
			t.Logf("%s %s stderr:\n%s", p.name, sock, p.stderr.String())
		}
	})
	waitUntil(t, p.name+"'s socket "+sock, func() bool {
		c, err := net.Dial("unix", sock)
		if err == nil {
			c.Close()
		}
		return err == nil
	})
	return p
}

func startPolicyd(t *testing.T, invPath, sock string, extra ...string) *daemonProc {
	t.Helper()
	return startDaemon(t, sock, append([]string{"policyd", "-i", invPath, "--listen", "unix:" + sock, "--maillog", "off", "--log-level", "debug"}, extra...)...)
}

// httpGet fetches http://addr/path: the status and the body (0 and the
// error's text when the request fails).
func httpGet(addr, path string) (int, string) {
	resp, err := http.Get("http://" + addr + path)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// stop sends SIGTERM and wants a clean exit within 15 s.
func (p *daemonProc) stop(t *testing.T) {
	t.Helper()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.exited:
		if err != nil {
			t.Fatalf("%s exited with %v\n%s", p.name, err, p.stderr.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatalf("%s did not stop on SIGTERM", p.name)
	}
}

// policyConn is one Postfix-like connection.
type policyConn struct {
	c net.Conn
	r *bufio.Reader
}

func dialPolicyd(t *testing.T, sock string) *policyConn {
	t.Helper()
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return &policyConn{c, bufio.NewReader(c)}
}

// ask sends one request and returns the reply ("" and an error when the
// server closed the connection without one).
func (p *policyConn) ask(req string) (string, error) {
	p.c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(p.c, req); err != nil {
		return "", err
	}
	var b strings.Builder
	for {
		line, err := p.r.ReadString('\n')
		if err != nil {
			return b.String(), err
		}
		b.WriteString(line)
		if line == "\n" {
			return b.String(), nil
		}
	}
}

func rcpt(client, sasl, sender, to, instance string) string {
	return "request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=" + client + "\nsasl_username=" + sasl +
		"\nsender=" + sender + "\nrecipient=" + to + "\ninstance=" + instance + "\n\n"
}

const (
	greyFirst = "action=450 4.7.1 Greylisted, please try again in 2 seconds\n\n"
	dunno     = "action=DUNNO\n\n"
)

// TestPolicydGreylistBolt: the real binary greylists on its bbolt file,
// refuses to start a second process on the same file with an error naming
// it, turns greylisting off and on with SIGHUP on the same open store, and
// leaves a file `mailnode state list` reads after SIGTERM.
func TestPolicydGreylistBolt(t *testing.T) {
	dir := t.TempDir()
	db := filepath.Join(dir, "state", "state.db")
	grey := map[string]any{"enabled": true, "delay": "2s"}
	st := map[string]any{"backend": "bbolt", "path": db}
	inv := statefulInventory(t, dir, "inventory.yaml", map[string]any{"greylist": grey, "state": st})
	p := startPolicyd(t, inv, filepath.Join(dir, "p.sock"))
	c := dialPolicyd(t, p.sock)
	inbound := rcpt("198.51.100.7", "", "eve@example.org", "bob@example.com", "i1")
	if got, err := c.ask(inbound); got != greyFirst {
		t.Fatalf("first attempt: %q %v", got, err)
	}
	// One Go processor more than the cores, for the commits (commitProcs).
	if want := fmt.Sprintf("gomaxprocs=%d", runtime.GOMAXPROCS(0)+1); os.Getenv("GOMAXPROCS") == "" && !strings.Contains(p.stderr.String(), want) {
		t.Errorf("policyd on bbolt did not log %s:\n%s", want, p.stderr.String())
	}
	// Its commits on a thread at a lower priority (state/boltprio.go).
	if !strings.Contains(p.stderr.String(), "nice=+10") {
		t.Errorf("policyd on bbolt did not log its commits at nice=+10:\n%s", p.stderr.String())
	}

	// A second policyd on the same file: a clear error naming the file.
	bin, _ := buildMailnode()
	out, err := exec.Command(bin, "policyd", "-i", inv, "--listen", "unix:"+filepath.Join(dir, "q.sock"), "--maillog", "off").CombinedOutput()
	if err == nil || !strings.Contains(string(out), db) || !strings.Contains(string(out), "in use by another process") {
		t.Errorf("second policyd on %s: %v\n%s", db, err, out)
	}

	time.Sleep(2100 * time.Millisecond)
	if got, err := c.ask(inbound); got != dunno {
		t.Fatalf("after the delay: %q %v", got, err)
	}
	// SIGHUP: greylisting off, then on with another delay; same store.
	statefulInventory(t, dir, "inventory.yaml", map[string]any{"state": st})
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitUntil(t, "the reload", func() bool { return strings.Count(p.stderr.String(), "inventory reloaded") == 1 })
	other := rcpt("198.51.100.7", "", "eve@example.org", "alice@example.com", "i2")
	if got, err := c.ask(other); got != dunno {
		t.Fatalf("greylisting off: %q %v", got, err)
	}
	statefulInventory(t, dir, "inventory.yaml", map[string]any{"greylist": map[string]any{"enabled": true, "delay": "7s"}, "state": st})
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitUntil(t, "the second reload", func() bool { return strings.Count(p.stderr.String(), "inventory reloaded") == 2 })
	if got, err := c.ask(other); got != "action=450 4.7.1 Greylisted, please try again in 7 seconds\n\n" {
		t.Fatalf("greylisting on again, delay 7s: %q %v", got, err)
	}
	if got, err := c.ask(inbound); got != dunno {
		t.Fatalf("the passed triplet after two reloads: %q %v", got, err)
	}
	p.stop(t)

	out, err = exec.Command(bin, "state", "list", "-i", inv, "--greylist").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "grey/t/198.51.100.0/24/eve@example.org/bob@example.com") ||
		!strings.Contains(string(out), "grey/t/198.51.100.0/24/eve@example.org/alice@example.com") {
		t.Errorf("mailnode state list: %v\n%s", err, out)
	}
}

// TestPolicydRedisTwoProcesses: two policyd processes on one redis-server
// share one greylist and one rate limit, as two MX nodes of one domain set.
func TestPolicydRedisTwoProcesses(t *testing.T) {
	dir := t.TempDir()
	addr := statetest.Redis(t).Addr
	inv := statefulInventory(t, dir, "inventory.yaml", map[string]any{
		"greylist":  map[string]any{"enabled": true, "delay": "2s"},
		"ratelimit": map[string]any{"messages_per_hour": 3},
		"state":     map[string]any{"backend": "redis", "url": "redis://" + addr + "/0"},
	})
	a := startPolicyd(t, inv, filepath.Join(dir, "a.sock"))
	b := startPolicyd(t, inv, filepath.Join(dir, "b.sock"))
	ca, cb := dialPolicyd(t, a.sock), dialPolicyd(t, b.sock)

	inbound := rcpt("198.51.100.7", "", "eve@example.org", "bob@example.com", "i1")
	if got, err := ca.ask(inbound); got != greyFirst {
		t.Fatalf("first attempt through A: %q %v", got, err)
	}
	if got, err := cb.ask(inbound); !strings.HasPrefix(got, "action=450 4.7.1 Greylisted, please try again in ") {
		t.Fatalf("early retry through B: %q %v", got, err)
	}
	time.Sleep(2100 * time.Millisecond)
	if got, err := cb.ask(inbound); got != dunno {
		t.Fatalf("retry through B after the delay: %q %v", got, err)
	}
	if got, err := ca.ask(inbound); got != dunno {
		t.Fatalf("and through A: %q %v", got, err)
	}

	// alice's messages through both count against one limit of 3.
	send := func(c *policyConn, inst string) string {
		got, err := c.ask(rcpt("198.51.100.7", "alice@example.com", "alice@example.com", "x@outside.test", inst))
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	for i, c := range []*policyConn{ca, cb, ca} {
		if got := send(c, "m"+strconv.Itoa(i)); got != dunno {
			t.Fatalf("message %d: %q", i+1, got)
		}
	}
	over := "action=450 4.7.1 Rate limit exceeded for <alice@example.com>, try again later\n\n"
	if got := send(cb, "m3"); got != over {
		t.Fatalf("4th message through B: %q, want %q", got, over)
	}
	if got := send(ca, "m4"); got != over {
		t.Fatalf("5th message through A: %q, want %q", got, over)
	}

	// Redis gone: no reply, never a pass (Postfix answers 451 4.3.5).
	exec.Command("redis-cli", "-h", "127.0.0.1", "-p", strings.Split(addr, ":")[1], "shutdown", "nosave").Run()
	got, err := ca.ask(rcpt("198.51.100.7", "", "mallory@example.org", "bob@example.com", "i9"))
	if got != "" || err == nil {
		t.Errorf("with Redis down: %q %v; want no reply", got, err)
	}
	a.stop(t)
	b.stop(t)
	if !strings.Contains(a.stderr.String(), "greylist/rate state unavailable") {
		t.Errorf("no warning with Redis down:\n%s", a.stderr.String())
	}
}

// TestPolicydCrashUnderLoad: SIGKILL the real policyd in the middle of a
// `mailnode-bench policy` run with greylisting and rate limits on, restart
// it on the same bbolt file: the file is intact (bbolt's own check), an
// update acknowledged more than the store's MaxLag (1 s) before the crash
// survived it, the restarted process serves a full run with every reply
// right, and `mailnode state list` reads the file.
func TestPolicydCrashUnderLoad(t *testing.T) {
	if testing.Short() {
		t.Skip("load run")
	}
	bin, err := buildMailnode()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	db := filepath.Join(dir, "state.db")
	inv := statefulInventory(t, dir, "inventory.yaml", map[string]any{
		"greylist":  map[string]any{"enabled": true, "delay": "2s"},
		"ratelimit": map[string]any{"messages_per_hour": 50, "recipients_per_hour": 200},
		"state":     map[string]any{"backend": "bbolt", "path": db},
	})
	sock := filepath.Join(dir, "p.sock")
	p := startPolicyd(t, inv, sock)
	c := dialPolicyd(t, sock)
	before := rcpt("198.51.100.7", "", "eve@example.org", "bob@example.com", "i1")
	if got, err := c.ask(before); got != greyFirst {
		t.Fatalf("first attempt: %q %v", got, err)
	}
	acked := time.Now()
	time.Sleep(1200 * time.Millisecond) // > MaxLag: on disk by now

	benchBin, err := buildBench()
	if err != nil {
		t.Fatal(err)
	}
	bench := exec.Command(benchBin, "policy", "--addr", "unix:"+sock, "-c", "4", "-n", "10000000", "-i", inv)
	var benchOut harness.SyncBuffer
	bench.Stdout, bench.Stderr = &benchOut, &benchOut
	if err := bench.Start(); err != nil {
		t.Fatal(err)
	}
	benchDone := make(chan error, 1)
	go func() { benchDone <- bench.Wait() }()
	time.Sleep(1500 * time.Millisecond)
	p.cmd.Process.Kill() // SIGKILL, mid-run
	<-p.exited
	select {
	case err := <-benchDone:
		if o := benchOut.String(); err == nil || !strings.Contains(o, "closed the connection") && !strings.Contains(o, "connection reset") {
			t.Fatalf("bench did not see policyd die: %v\n%s", err, benchOut.String())
		}
	case <-time.After(20 * time.Second):
		bench.Process.Kill()
		t.Fatal("bench still running after policyd died")
	}
	t.Logf("bench at the kill: %s", strings.TrimSpace(benchOut.String()))

	// Restart on the same file.
	os.Remove(sock)
	p = startPolicyd(t, inv, sock)
	c = dialPolicyd(t, sock)
	time.Sleep(time.Until(acked.Add(2100 * time.Millisecond)))
	if got, err := c.ask(before); got != dunno {
		t.Fatalf("the triplet acknowledged %v before the crash was lost: %q %v", 1200*time.Millisecond, got, err)
	}
	out, err := exec.Command(benchBin, "policy", "--addr", "unix:"+sock, "-c", "4", "-n", "4000", "-i", inv).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "checked:     0 mismatches") {
		t.Fatalf("bench after the restart: %v\n%s", err, out)
	}
	t.Logf("bench after the restart:\n%s", out)
	p.stop(t)

	out, err = exec.Command(bin, "state", "list", "-i", inv).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "grey/t/198.51.100.0/24/eve@example.org/bob@example.com") ||
		!strings.Contains(string(out), "rate/u/") {
		t.Fatalf("state list: %v\n%s", err, out)
	}
	st, err := state.OpenBolt(db, state.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if err := st.DB().View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			t.Errorf("bbolt check: %v", err)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// TestCommitProcs: policyd on bbolt runs one Go processor more than the
// runtime's default, unless GOMAXPROCS is set; on Redis, as the default.
func TestCommitProcs(t *testing.T) {
	b, err := state.OpenBolt(filepath.Join(t.TempDir(), "s.db"), state.BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	srv := statetest.Redis(t)
	r, err := state.OpenRedis(t.Context(), srv.URL(), state.RedisOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	for _, c := range []struct {
		st   state.Store
		env  string
		want int
	}{{b, "", 3}, {b, "2", 2}, {r, "", 2}, {nil, "", 2}} {
		if got := commitProcs(c.st, c.env, 2); got != c.want {
			t.Errorf("commitProcs(%T, %q, 2) = %d, want %d", c.st, c.env, got, c.want)
		}
	}
}
