package harness

import (
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// EnvNetns is set (to the namespace name) in a process that runs inside the
// network namespace the harness created.
const EnvNetns = "MAILNODE_NETNS"

// EnvBin names a prebuilt mailnode binary; when unset, Binary builds one.
const EnvBin = "MAILNODE_BIN"

// EnvBenchBin names a prebuilt mailnode-bench binary; when unset,
// BenchBinary builds one.
const EnvBenchBin = "MAILNODE_BENCH_BIN"

// Main is the TestMain of an end-to-end test package:
//
//	func TestMain(m *testing.M) { harness.Main(m) }
//
// Outside a namespace it checks the prerequisites (root, ip, postfix,
// dovecot, the vmail user), builds the mailnode binary once, creates a
// fresh network namespace with only loopback up and a resolv.conf pointing
// at 127.0.0.1, re-runs the test binary inside it with the same arguments,
// then kills whatever is left in the namespace and deletes it. Nothing a
// test starts can reach an address off this machine.
//
// With -short the tests run in place; StartNode then skips.
func Main(m *testing.M) {
	flag.Parse()
	if os.Getenv(EnvNetns) != "" || testing.Short() {
		os.Exit(m.Run())
	}
	if err := CheckPrerequisites(); err != nil {
		fmt.Fprintf(os.Stderr, "end-to-end tests cannot run: %v\n", err)
		os.Exit(1)
	}
	code, err := runInFreshNetns()
	if err != nil {
		fmt.Fprintf(os.Stderr, "end-to-end tests: %v\n", err)
		if code == 0 {
			code = 1
		}
	}
	os.Exit(code)
}

// Packages the end-to-end tests need, by the program they provide.
var neededPrograms = map[string]string{
	"ip":       "iproute2",
	"postfix":  "postfix",
	"postmap":  "postfix",
	"dovecot":  "dovecot-core",
	"doveconf": "dovecot-core",
}

// CheckPrerequisites reports, in one error, everything missing for the
// end-to-end tests: root, Debian packages, the mailbox system user.
func CheckPrerequisites() error {
	var problems []string
	if os.Geteuid() != 0 {
		problems = append(problems, "they must run as root (network namespaces, Postfix, Dovecot): sudo go test ./test/...")
	}
	missing := map[string]bool{}
	for prog, pkg := range neededPrograms {
		if _, err := exec.LookPath(prog); err != nil {
			if _, err := os.Stat("/usr/sbin/" + prog); err != nil {
				missing[pkg] = true
			}
		}
	}
	for _, f := range []string{"/usr/lib/dovecot/imap", "/usr/lib/dovecot/lmtp", "/usr/lib/dovecot/pop3"} {
		if _, err := os.Stat(f); err != nil {
			missing["dovecot-"+filepath.Base(f)+"d"] = true
		}
	}
	if len(missing) > 0 {
		var l []string
		for p := range missing {
			l = append(l, p)
		}
		problems = append(problems, "missing Debian packages: apt-get install -y "+strings.Join(sortStrings(l), " ")+" (or: make deps)")
	}
	if _, err := lookupUser("vmail"); err != nil {
		problems = append(problems, "missing system user vmail: useradd --system --home-dir /var/vmail --shell /usr/sbin/nologin vmail (or: make deps)")
	}
	if len(problems) > 0 {
		return fmt.Errorf("%s", strings.Join(problems, "\n  "))
	}
	return nil
}

func runInFreshNetns() (int, error) {
	bin, err := Binary()
	if err != nil {
		return 1, err
	}
	return RerunInNetns("mntest", EnvBin+"="+bin)
}

// RerunInNetns creates a fresh network namespace (CreateNetns) named
// prefix and the process id, runs this program again inside it (os.Args,
// stdin and stdout passed on) with EnvNetns and env added to the
// environment, then deletes the namespace (DeleteNetns). It returns the
// exit code of the run; an error when the namespace or the run could not
// be started.
func RerunInNetns(prefix string, env ...string) (int, error) {
	ns := prefix + strconv.Itoa(os.Getpid())
	if err := CreateNetns(ns); err != nil {
		return 1, err
	}
	defer DeleteNetns(ns)
	args := append([]string{"netns", "exec", ns, os.Args[0]}, os.Args[1:]...)
	cmd := exec.Command("ip", args...)
	cmd.Env = append(append(os.Environ(), EnvNetns+"="+ns), env...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, os.Stdout, os.Stderr
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		return ee.ExitCode(), nil
	}
	if err != nil {
		return 1, err
	}
	return 0, nil
}

// CreateNetns creates the named network namespace with loopback up and a
// private /etc/netns/NAME/resolv.conf (nameserver 127.0.0.1). An existing
// namespace of that name is reused.
func CreateNetns(name string) error {
	if !NetnsExists(name) {
		if out, err := exec.Command("ip", "netns", "add", name).CombinedOutput(); err != nil {
			return fmt.Errorf("ip netns add %s: %v: %s", name, err, out)
		}
	}
	if out, err := exec.Command("ip", "netns", "exec", name, "ip", "link", "set", "lo", "up").CombinedOutput(); err != nil {
		return fmt.Errorf("ip netns exec %s ip link set lo up: %v: %s", name, err, out)
	}
	dir := filepath.Join("/etc/netns", name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte("nameserver 127.0.0.1\n"), 0o644)
}

// NetnsExists reports whether a named network namespace exists.
func NetnsExists(name string) bool {
	_, err := os.Stat(filepath.Join("/run/netns", name))
	return err == nil
}

// DeleteNetns kills every process left in the namespace (TERM, then KILL
// after 5s) and deletes it with its /etc/netns directory.
func DeleteNetns(name string) error {
	pids := func() []int {
		out, _ := exec.Command("ip", "netns", "pids", name).Output()
		var l []int
		for _, f := range strings.Fields(string(out)) {
			if p, err := strconv.Atoi(f); err == nil {
				l = append(l, p)
			}
		}
		return l
	}
	for _, p := range pids() {
		syscall.Kill(p, syscall.SIGTERM)
	}
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && len(pids()) > 0; {
		time.Sleep(50 * time.Millisecond)
	}
	for _, p := range pids() {
		syscall.Kill(p, syscall.SIGKILL)
	}
	var err error
	if NetnsExists(name) {
		if out, e := exec.Command("ip", "netns", "del", name).CombinedOutput(); e != nil {
			err = fmt.Errorf("ip netns del %s: %v: %s", name, e, out)
		}
	}
	os.RemoveAll(filepath.Join("/etc/netns", name))
	return err
}
