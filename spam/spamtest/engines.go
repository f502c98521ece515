package spamtest

import (
	"bufio"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mailnode/mailnode/internal/testpeer"
	"github.com/mailnode/mailnode/test/harness"
)

// InNetns reports whether this process runs in a network namespace that a
// test harness created (harness.EnvNetns is set): only then may tests start
// engines, since only then can nothing they do leave the machine.
func InNetns() bool { return os.Getenv(harness.EnvNetns) != "" }

// Main is the TestMain of a package with real-engine tests. Run as root
// outside a namespace, it creates a fresh network namespace with only
// loopback up, re-runs the test binary inside it and deletes it afterwards.
// Otherwise (not root, -short, or already inside) it runs the tests in
// place, and the engine tests skip unless InNetns.
func Main(m *testing.M) {
	flag.Parse()
	if InNetns() || testing.Short() || os.Geteuid() != 0 {
		os.Exit(m.Run())
	}
	if _, err := exec.LookPath("ip"); err != nil {
		os.Exit(m.Run())
	}
	code, err := harness.RerunInNetns("mnspam")
	if err != nil {
		fmt.Fprintf(os.Stderr, "spamtest: %v\n", err)
		os.Exit(1)
	}
	os.Exit(code)
}

// Engine is a running real engine started by a test.
type Engine struct {
	Name string
	Addr string // host:port it listens on
	URL  string // rspamd: http://Addr
	// ControllerURL is rspamd's controller worker (learning, /stat).
	ControllerURL string
	Dir           string // its private directory
	LogFile       string
	cmd           *exec.Cmd
	done          chan struct{}
}

// Log returns the tail of the engine's log, for failure messages.
func (e *Engine) Log() string {
	b, _ := os.ReadFile(e.LogFile)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	return string(b)
}

// WaitLog polls the engine's log until it contains substr; false after
// timeout. The rspamd benchmark waits for "hyperscan database" so that it
// does not measure the regexp fallback rspamd uses while hyperscan compiles.
func (e *Engine) WaitLog(substr string, timeout time.Duration) bool {
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); time.Sleep(200 * time.Millisecond) {
		if b, _ := os.ReadFile(e.LogFile); strings.Contains(string(b), substr) {
			return true
		}
	}
	return false
}

// Stop ends the engine (its process group: the main process and the
// workers it forked) and waits for it to exit.
func (e *Engine) Stop() {
	if e.cmd == nil || e.cmd.Process == nil {
		return
	}
	select {
	case <-e.done:
		return
	default:
	}
	syscall.Kill(-e.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-e.done:
	case <-time.After(10 * time.Second):
		syscall.Kill(-e.cmd.Process.Pid, syscall.SIGKILL)
		<-e.done
	}
}

// Running reports whether the engine's main process is still alive.
func (e *Engine) Running() bool {
	select {
	case <-e.done:
		return false
	default:
		return true
	}
}

// engineDir makes a private directory tree readable by the engine's user.
func engineDir(t testing.TB, name string) string {
	t.Helper()
	dir, err := os.MkdirTemp("", "mn-"+name+"-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(dir, 0o755)
	t.Cleanup(func() { os.RemoveAll(dir) })
	return dir
}

func (e *Engine) start(t testing.TB, bin string, args []string, env []string) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = e.Dir
	cmd.Env = append(os.Environ(), env...)
	out, err := os.Create(filepath.Join(e.Dir, "stdout"))
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		out.Close()
		t.Fatalf("%s: %v", bin, err)
	}
	e.cmd = cmd
	e.done = make(chan struct{})
	go func() { cmd.Wait(); out.Close(); close(e.done) }()
	t.Cleanup(e.Stop)
}

// waitReady polls ready until it succeeds, the engine exits or timeout.
func (e *Engine) waitReady(t testing.TB, timeout time.Duration, ready func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = ready(); err == nil {
			return
		}
		if !e.Running() {
			out, _ := os.ReadFile(filepath.Join(e.Dir, "stdout"))
			t.Fatalf("%s exited before it was ready: %s\n%s\n%s", e.Name, err, out, e.Log())
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s not ready after %v: %v\n%s", e.Name, timeout, err, e.Log())
}

// StartRspamd starts the real rspamd (Debian's /etc/rspamd configuration,
// overridden from a private directory) with its normal worker on a free
// loopback port, fuzzy_check disabled, the fuzzy storage and proxy workers
// off, and its DNS pointed at dnsAddr only (the test's DNS server). It
// waits until the worker answers /ping. Must run inside a namespace.
func StartRspamd(t testing.TB, dnsAddr string) *Engine {
	t.Helper()
	return startRspamd(t, dnsAddr, nil)
}

// StartRspamdBayes is StartRspamd with the Bayes classifier kept in the
// Redis server at redisAddr (HOST:PORT), learning from a single message
// on: what a test teaches it through the controller (ControllerURL)
// shows in the controller's /stat.
func StartRspamdBayes(t testing.TB, dnsAddr, redisAddr string) *Engine {
	t.Helper()
	return startRspamd(t, dnsAddr, map[string]string{
		"local.d/classifier-bayes.conf": fmt.Sprintf("servers = \"%s\";\nmin_learns = 1;\n", redisAddr),
	})
}

// startRspamd starts rspamd with extra configuration files (name under
// the private configuration directory -> contents).
func startRspamd(t testing.TB, dnsAddr string, extra map[string]string) *Engine {
	t.Helper()
	if !InNetns() {
		t.Skip("real rspamd runs only inside a test network namespace (run as root: go test)")
	}
	if _, err := exec.LookPath("rspamd"); err != nil {
		testpeer.Missing(t, "rspamd not installed (apt-get install rspamd)")
	}
	e := &Engine{Name: "rspamd", Dir: engineDir(t, "rspamd")}
	p1, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	p2, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	e.Addr = "127.0.0.1:" + strconv.Itoa(p1)
	e.URL = "http://" + e.Addr
	conf := filepath.Join(e.Dir, "etc")
	for _, d := range []string{"etc/local.d", "etc/override.d", "db", "run", "log"} {
		if err := os.MkdirAll(filepath.Join(e.Dir, d), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string]string{
		"override.d/options.inc":           fmt.Sprintf("dns { nameserver = [\"%s\"]; timeout = 1s; retransmits = 1; }\n", dnsAddr),
		"override.d/worker-normal.inc":     fmt.Sprintf("bind_socket = \"%s\";\ncount = 1;\n", e.Addr),
		"override.d/worker-controller.inc": fmt.Sprintf("bind_socket = \"127.0.0.1:%d\";\ncount = 1;\n", p2),
		"override.d/worker-proxy.inc":      "enabled = false;\n",
		"override.d/worker-fuzzy.inc":      "enabled = false;\ncount = -1;\n",
		"local.d/fuzzy_check.conf":         "enabled = false;\n",
		"local.d/logging.inc":              "level = \"info\";\n",
	}
	for name, body := range extra {
		files[name] = body
	}
	e.ControllerURL = fmt.Sprintf("http://127.0.0.1:%d", p2)
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(conf, name), []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if err := harness.Chown("_rspamd", filepath.Join(e.Dir, "db"), filepath.Join(e.Dir, "run"), filepath.Join(e.Dir, "log")); err != nil {
		t.Fatal(err)
	}
	e.LogFile = filepath.Join(e.Dir, "log", "rspamd.log")
	e.start(t, "rspamd", []string{"-f", "-c", "/etc/rspamd/rspamd.conf", "-u", "_rspamd", "-g", "_rspamd",
		"--var", "LOCAL_CONFDIR=" + conf, "--var", "DBDIR=" + filepath.Join(e.Dir, "db"),
		"--var", "RUNDIR=" + filepath.Join(e.Dir, "run"), "--var", "LOGDIR=" + filepath.Join(e.Dir, "log")}, nil)
	client := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil}}
	e.waitReady(t, 3*time.Minute, func() error {
		resp, err := client.Get(e.URL + "/ping")
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		if !strings.HasPrefix(string(b), "pong") {
			return fmt.Errorf("/ping: %q", b)
		}
		return nil
	})
	return e
}

// StartSpamd starts the real SpamAssassin spamd with local tests only (-L:
// no DNS, no network tests), no Bayes, no user configs, one child, on a
// free loopback port, with a private site configuration (Debian's .pre
// files and a local.cf) and temp directory. It waits until spamd answers
// PING. Must run inside a namespace.
func StartSpamd(t testing.TB) *Engine {
	t.Helper()
	return startSpamd(t, false)
}

// StartSpamdBayes is StartSpamd with a Bayes database of its own
// (BayesPath) that TELL (--allow-tell) trains; `sa-learn --dbpath` on it
// shows what was learned.
func StartSpamdBayes(t testing.TB) *Engine {
	t.Helper()
	return startSpamd(t, true)
}

// BayesPath is the directory of spamd's Bayes database (StartSpamdBayes).
func (e *Engine) BayesPath() string { return filepath.Join(e.Dir, "bayes") }

func startSpamd(t testing.TB, bayes bool) *Engine {
	t.Helper()
	if !InNetns() {
		t.Skip("real spamd runs only inside a test network namespace (run as root: go test)")
	}
	if _, err := exec.LookPath("spamd"); err != nil {
		if _, err := os.Stat("/usr/sbin/spamd"); err != nil {
			testpeer.Missing(t, "spamd not installed (apt-get install spamd spamc)")
		}
	}
	e := &Engine{Name: "spamd", Dir: engineDir(t, "spamd")}
	p, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	e.Addr = "127.0.0.1:" + strconv.Itoa(p)
	site := filepath.Join(e.Dir, "site")
	tmp := filepath.Join(e.Dir, "tmp")
	for _, d := range []string{site, tmp} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	pres, _ := filepath.Glob("/etc/spamassassin/*.pre")
	if len(pres) == 0 {
		t.Fatal("no /etc/spamassassin/*.pre: is spamassassin installed?")
	}
	for _, p := range pres {
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(site, filepath.Base(p)), b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	local := "use_bayes 0\nbayes_auto_learn 0\nskip_rbl_checks 1\ndns_available no\n"
	args := []string{"-L", "-x", "-i", e.Addr, "-A", "127.0.0.1", "-m", "2",
		"--min-children=1", "--min-spare=1", "--max-spare=1", "-s", filepath.Join(e.Dir, "spamd.log"),
		"-u", "debian-spamd", "-H", e.Dir, "--siteconfigpath=" + site, "-r", filepath.Join(e.Dir, "spamd.pid")}
	if bayes {
		if err := os.MkdirAll(e.BayesPath(), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := harness.Chown("debian-spamd", e.BayesPath()); err != nil {
			t.Fatal(err)
		}
		local = "use_bayes 1\nbayes_auto_learn 0\nbayes_path " + filepath.Join(e.BayesPath(), "bayes") + "\nbayes_file_mode 0755\nskip_rbl_checks 1\ndns_available no\n"
		args = append(args, "--allow-tell")
	}
	if err := os.WriteFile(filepath.Join(site, "local.cf"), []byte(local), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := harness.Chown("debian-spamd", e.Dir, tmp); err != nil {
		t.Fatal(err)
	}
	os.Chmod(tmp, 0o700)
	e.LogFile = filepath.Join(e.Dir, "spamd.log")
	e.start(t, "spamd", args, []string{"TMPDIR=" + tmp})
	e.waitReady(t, 3*time.Minute, func() error { return spamdPing(e.Addr) })
	return e
}

// spamdPing sends PING and expects PONG.
func spamdPing(addr string) error {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return err
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := io.WriteString(c, "PING SPAMC/1.5\r\n\r\n"); err != nil {
		return err
	}
	line, err := bufio.NewReader(c).ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.Contains(line, "PONG") {
		return fmt.Errorf("PING: %q", line)
	}
	return nil
}
