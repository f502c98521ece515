package main

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/mailnode/mailnode/state/statetest"
)

// buildMailnode compiles the binary once per test run.
var buildMailnode = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "mailnode-bin")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "mailnode")
	out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

// buildBench compiles the benchmark program (cmd/mailnode-bench), whose
// policy load generator some tests drive policyd with, once per test run.
var buildBench = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "mailnode-bench-bin")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "mailnode-bench")
	out, err := exec.Command("go", "build", "-o", bin, "../mailnode-bench").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("go build: %v\n%s", err, out)
	}
	return bin, nil
})

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// TestPolicydProcess runs the real binary: it answers on its socket, serves
// /healthz and /metrics, keeps the running inventory when SIGHUP finds a
// broken one, takes a good one without dropping the open connection, and
// drains on SIGTERM (exit 0, socket removed, mail log written).
func TestPolicydProcess(t *testing.T) {
	dir := t.TempDir()
	good, err := os.ReadFile("../../policy/testdata/inventory.yaml")
	if err != nil {
		t.Fatal(err)
	}
	invPath := filepath.Join(dir, "inventory.yaml")
	if err := os.WriteFile(invPath, good, 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "policy.sock")
	maillog := filepath.Join(dir, "mail.log")
	port, err := statetest.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	metrics := "127.0.0.1:" + strconv.Itoa(port)
	p := startDaemon(t, sock, "policyd", "-i", invPath, "--listen", "unix:"+sock,
		"--metrics", metrics, "--maillog", maillog, "--log-level", "debug")
	c, err := net.Dial("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if fi, err := os.Stat(sock); err != nil || fi.Mode().Perm() != 0o666 {
		t.Errorf("socket mode %v, %v; want 0666", fi.Mode(), err)
	}
	r := bufio.NewReader(c)
	ask := func(req string) string {
		t.Helper()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(c, req); err != nil {
			t.Fatal(err)
		}
		var b strings.Builder
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				t.Fatalf("reading reply: %v (got %q)", err, b.String())
			}
			b.WriteString(line)
			if line == "\n" {
				return b.String()
			}
		}
	}
	relay := "request=smtpd_access_policy\nprotocol_state=RCPT\nqueue_id=QID1\nsender=eve@example.org\nrecipient=frank@example.org\nclient_address=198.51.100.7\n\n"
	denied := "action=550 5.7.1 Sorry, relay for <frank@example.org> not permitted\n\n"
	if got := ask(relay); got != denied {
		t.Fatalf("got %q, want %q", got, denied)
	}

	get := func(path string) (int, string) { return httpGet(metrics, path) }
	// The inventory's postfix.config_directory holds no rendered config:
	// a drift, which /healthz reports without failing.
	if code, body := get("/healthz"); code != 200 || !strings.HasPrefix(body, "ok\nwarning: inventory drift: ") {
		t.Errorf("/healthz: %d %q", code, body)
	}
	// The probe that found the socket open has closed its connection, but
	// policyd may not have read that end yet: wait for the gauge to say 1.
	var body string
	waitUntil(t, "the open-connections gauge to count this connection only", func() bool {
		_, body = get("/metrics")
		return strings.Contains(body, "mailnode_policy_open_connections 1\n")
	})
	if !strings.Contains(body, `mailnode_policy_decisions_total{action="reject",cell="outside/none->outside",reason="relay-denied"} 1`) ||
		!strings.Contains(body, "mailnode_policy_open_connections 1\n") {
		t.Errorf("/metrics lacks the decision or the open connection:\n%s", body)
	}

	// A broken inventory: logged, the old one kept.
	if err := os.WriteFile(invPath, []byte("node: {hostname: \"\"}\ndomains: [\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitUntil(t, "the failed reload to be logged", func() bool {
		return strings.Contains(p.stderr.String(), "reload failed; keeping the running inventory")
	})
	if got := ask(relay); got != denied {
		t.Fatalf("after a failed reload: %q", got)
	}
	// A good new inventory where example.org is a relay domain: the open
	// connection stays and its next answer changes.
	if err := os.WriteFile(invPath, append(good, "  - name: example.org\n    class: relay\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	p.cmd.Process.Signal(syscall.SIGHUP)
	waitUntil(t, "the reload", func() bool { return strings.Contains(p.stderr.String(), "inventory reloaded") })
	want := "action=550 5.7.1 Please use own mail service for send mail from <eve@example.org>\n\n"
	if got := ask(relay); got != want {
		t.Fatalf("after reload: %q, want %q", got, want)
	}
	if _, body := get("/metrics"); !strings.Contains(body, `mailnode_policy_inventory_reloads_total{result="failed"} 1`) ||
		!strings.Contains(body, `mailnode_policy_inventory_reloads_total{result="ok"} 1`) {
		t.Errorf("/metrics lacks the reload counts")
	}
	// The status page shows the last reload and the decisions so far.
	code, page := get("/")
	for _, want := range []string{"<h1>mailnode policyd</h1>", "<td>last reload</td><td>", " ok</td>",
		`mailnode_policy_decisions_total{action=&#34;reject&#34;,cell=&#34;outside/none-&gt;outside&#34;,reason=&#34;relay-denied&#34;}</code></td><td>2</td>`} {
		if code != 200 || !strings.Contains(page, want) {
			t.Errorf("status page (%d) lacks %s:\n%s", code, want, page)
		}
	}

	p.stop(t)
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("socket left behind: %v", err)
	}
	log, _ := os.ReadFile(maillog)
	lines := strings.Split(strings.TrimSpace(string(log)), "\n")
	if len(lines) != 3 || !strings.Contains(lines[0], "queue_id=QID1 client=[198.51.100.7]") ||
		!strings.Contains(lines[2], `cell=relay/none->relay rcpt=1 action="550 5.7.1 Please use own mail service`) {
		t.Errorf("mail log:\n%s", log)
	}
}
