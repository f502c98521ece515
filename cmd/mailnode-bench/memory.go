package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/mailnode/mailnode/dkim"
	"github.com/mailnode/mailnode/test/invgen"
	"github.com/mailnode/mailnode/test/procstat"
)

// memoryCommand is `mailnode-bench memory`.
func memoryCommand() *cli.Command {
	return &cli.Command{
		Name:  "memory",
		Usage: "policyd's and milterd's resident memory at start, during and after SIGHUP reloads, by inventory size",
		Description: `For each size in --mailboxes, writes a generated inventory (test/invgen:
one domain per 10 mailboxes, every tenth a relay domain, each local domain
with aliases, a list and an Ed25519 DKIM selector whose key is written too),
starts the real policyd and milterd (--mailnode) on unix sockets in a
temporary directory and, once both answer, prints for each daemon:

  start    RSS (VmRSS) a second after it answers
  peak     the highest RSS while a reload ran (VmHWM, reset through
           /proc/PID/clear_refs before each SIGHUP), worst of --reloads
  after N  RSS a second after the Nth reload finished (the log says so)
  helper   the highest RSS of the process each load runs in (mailnode
           load-inventory, which the daemon starts and waits for; its
           peak is in the daemon's log). While it runs, the node holds the
           daemon, the helper and the snapshot it writes (policyd's address
           tables, some 12 MiB at 100,000 mailboxes) at once.

Resident memory, unlike time, hardly depends on what else the machine does.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "mailboxes", Value: "1000,10000,100000", Usage: "inventory sizes in mailboxes, comma-separated (domains: one per 10 mailboxes)"},
			&cli.IntFlag{Name: "reloads", Value: 10, Usage: "SIGHUP reloads per size"},
			&cli.DurationFlag{Name: "settle", Value: time.Second, Usage: "wait after start and after each reload before reading RSS"},
			&cli.BoolFlag{Name: "each", Usage: "print RSS after every reload, not only the first and the last"},
			&cli.StringFlag{Name: "change", Value: "none,mailbox,domain", Usage: "what changes in the inventory before each reload, comma-separated, a run each: none (the same file), mailbox (one more mailbox in the first domain), domain (one more local domain, with a mailbox and a DKIM key)"},
			&cli.BoolFlag{Name: "keep", Usage: "keep each size's directory (inventory, keys, the daemons' logs) and print its path"},
			mailnodeFlag(),
		},
		Action: benchMemory,
	}
}

// memDaemon is one daemon under measurement.
type memDaemon struct {
	name    string
	log     string // its stderr
	cmd     *exec.Cmd
	reloads int // reload lines seen in its log so far
	start   int64
	peaks   []int64
	afters  []int64
}

func benchMemory(c *cli.Context) error {
	out := c.App.Writer
	sizes, err := intList(c.String("mailboxes"))
	if err != nil {
		return err
	}
	mailnode, err := mailnodeBinary(c)
	if err != nil {
		return err
	}
	n := c.Int("reloads")
	settle := c.Duration("settle")
	host, _ := os.Hostname()
	fmt.Fprintf(out, "mailnode-bench memory: %s, %d reloads, RSS in MiB; host %s, load average %s\n",
		mailnode, n, host, loadAvg())
	changes := strings.Split(c.String("change"), ",")
	for _, ch := range changes {
		if ch != "none" && ch != "mailbox" && ch != "domain" {
			return fmt.Errorf("--change: %q is none of none, mailbox, domain", ch)
		}
	}
	fmt.Fprintf(out, "%9s %8s %6s %8s %8s %7s %8s %8s  %-10s %s\n", "mailboxes", "change", "daemon", "YAML", "start", "peak", "after 1", fmt.Sprintf("after %d", n), "peak/start", "helper")
	for _, size := range sizes {
		for _, ch := range changes {
			if err := memoryRun(out, mailnode, size, n, settle, ch, c.Bool("each"), c.Bool("keep")); err != nil {
				return err
			}
		}
	}
	return nil
}

// changeInventory is doc with the change of the reload-th reload (1, 2,
// ...) made, cumulative: "mailbox" adds mailbox new<reload> to the first
// domain, "domain" adds local domain new<reload>.test, with a mailbox and
// an Ed25519 selector whose key is copied from the first domain's.
func changeInventory(doc []byte, change string, reload int, keyDir string) ([]byte, error) {
	switch change {
	case "mailbox":
		return invgen.AddMailbox(doc, fmt.Sprintf("new%d", reload)), nil
	case "domain":
		name := fmt.Sprintf("new%d.test", reload)
		key, err := os.ReadFile(dkim.KeyPath(keyDir, "d0.test", "s2"))
		if err != nil {
			return nil, err
		}
		path := dkim.KeyPath(keyDir, name, "s2")
		if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
			return nil, err
		}
		if err := os.WriteFile(path, key, 0o600); err != nil {
			return nil, err
		}
		return invgen.AddDomain(doc, name), nil
	}
	return doc, nil
}

func memoryRun(out io.Writer, mailnode string, mailboxes, reloads int, settle time.Duration, change string, each, keep bool) error {
	dir, err := os.MkdirTemp(benchBaseDir(), "mailnode-bench-memory-")
	if err != nil {
		return err
	}
	if keep {
		defer fmt.Fprintf(out, "%9s %8s kept: %s\n", "", "", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	domains := max(1, mailboxes/10)
	keyDir := filepath.Join(dir, "keys")
	doc, err := memoryInventory(domains, mailboxes, keyDir)
	if err != nil {
		return err
	}
	forwarding, err := srsSecret(dir)
	if err != nil {
		return err
	}
	doc = bytes.Replace(doc, []byte("\ndomains:\n"), []byte("\n"+forwarding+"domains:\n"), 1)
	inv := filepath.Join(dir, "inventory.yaml")
	if err := os.WriteFile(inv, doc, 0o644); err != nil {
		return err
	}
	ds := []*memDaemon{
		{name: "policyd", cmd: exec.Command(mailnode, "policyd", "-i", inv, "--listen", "unix:"+filepath.Join(dir, "policyd.sock"), "--maillog", "off", "--drift-interval", "1h")},
		{name: "milterd", cmd: exec.Command(mailnode, "milterd", "-i", inv, "--listen", "unix:"+filepath.Join(dir, "milterd.sock"), "--drift-interval", "1h", "--dkim-check-interval", "1h")},
	}
	for _, d := range ds {
		d.log = filepath.Join(dir, d.name+".log")
		f, err := os.Create(d.log)
		if err != nil {
			return err
		}
		d.cmd.Stdout, d.cmd.Stderr = f, f
		t := &benchTarget{name: d.name, sock: filepath.Join(dir, d.name+".sock"), cmd: d.cmd}
		stop, err := t.start(dir)
		f.Close()
		if err != nil {
			return err
		}
		defer stop()
	}
	time.Sleep(settle)
	for _, d := range ds {
		if d.start, err = procstat.RSS(d.cmd.Process.Pid); err != nil {
			return err
		}
	}
	for r := 0; r < reloads; r++ {
		if change != "none" {
			if doc, err = changeInventory(doc, change, r+1, keyDir); err != nil {
				return err
			}
			if err := os.WriteFile(inv, doc, 0o644); err != nil {
				return err
			}
		}
		for _, d := range ds {
			// 5 resets VmHWM to the current RSS (proc(5), clear_refs).
			if err := os.WriteFile(fmt.Sprintf("/proc/%d/clear_refs", d.cmd.Process.Pid), []byte("5"), 0); err != nil {
				return fmt.Errorf("bench: reset the peak of %s: %w", d.name, err)
			}
			if err := d.cmd.Process.Signal(syscall.SIGHUP); err != nil {
				return err
			}
		}
		for _, d := range ds {
			if err := d.waitReload(2 * time.Minute); err != nil {
				return err
			}
		}
		time.Sleep(settle)
		for _, d := range ds {
			pid := d.cmd.Process.Pid
			peak, err := procstat.PeakRSS(pid)
			if err != nil {
				return err
			}
			rss, err := procstat.RSS(pid)
			if err != nil {
				return err
			}
			d.peaks = append(d.peaks, peak)
			d.afters = append(d.afters, rss)
		}
	}
	for _, d := range ds {
		peak := slices.Max(d.peaks)
		steady := d.start
		fmt.Fprintf(out, "%9d %8s %8s %5.1fM %8s %7s %8s %8s  %-10.2f %s\n", mailboxes, change, d.name, float64(len(doc))/(1<<20),
			mib(d.start), mib(peak), mib(d.afters[0]), mib(d.afters[len(d.afters)-1]), float64(peak)/float64(steady), d.helperPeak())
		if each {
			l := make([]string, len(d.afters))
			for i, a := range d.afters {
				l[i] = mib(a) + "/" + mib(d.peaks[i])
			}
			fmt.Fprintf(out, "%9s %8s after/peak of each reload: %s\n", "", "", strings.Join(l, " "))
		}
	}
	return nil
}

// helperPeakRe is the peak RSS of the load helper a daemon logs for each
// load (mailnode load-inventory).
var helperPeakRe = regexp.MustCompile(`helper_peak_mib=([0-9.]+)`)

// helperPeak is the highest peak RSS of the daemon's load helper, in MiB,
// or "-" when it loaded in process.
func (d *memDaemon) helperPeak() string {
	b, _ := os.ReadFile(d.log)
	top := -1.0
	for _, m := range helperPeakRe.FindAllSubmatch(b, -1) {
		if v, err := strconv.ParseFloat(string(m[1]), 64); err == nil && v > top {
			top = v
		}
	}
	if top < 0 {
		return "-"
	}
	return fmt.Sprintf("%.1f", top)
}

// waitReload waits for the daemon's log to tell of one more reload.
func (d *memDaemon) waitReload(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		b, _ := os.ReadFile(d.log)
		ok := bytes.Count(b, []byte("inventory reloaded"))
		if bad := bytes.Count(b, []byte("reload failed")) + bytes.Count(b, []byte("reload refused")); bad > 0 {
			return fmt.Errorf("bench: %s refused the reload:\n%s", d.name, b)
		}
		if ok > d.reloads {
			d.reloads = ok
			return nil
		}
		if d.cmd.ProcessState != nil {
			return fmt.Errorf("bench: %s exited:\n%s", d.name, b)
		}
		time.Sleep(20 * time.Millisecond)
	}
	return fmt.Errorf("bench: %s: no reload in the log after %v", d.name, timeout)
}

// memoryInventory is invgen's inventory with Ed25519 selectors only (RSA
// keys for thousands of domains would take minutes to generate), its keys
// written under keyDir.
func memoryInventory(domains, mailboxes int, keyDir string) ([]byte, error) {
	doc := invgen.Generate(domains, mailboxes)
	doc = bytes.ReplaceAll(doc, []byte("{selector: s1, algorithm: rsa}, "), nil)
	doc = bytes.Replace(doc, []byte("key_dir: /nonexistent/mailnode-bench"), []byte("key_dir: "+keyDir), 1)
	key, err := dkim.Generate("ed25519") // one key, written for every domain
	if err != nil {
		return nil, err
	}
	for _, line := range bytes.Split(doc, []byte("\n")) {
		name, ok := bytes.CutPrefix(line, []byte("  - name: "))
		if !ok || !bytes.HasPrefix(name, []byte("d")) {
			continue
		}
		if err := dkim.WriteKey(dkim.KeyPath(keyDir, string(name), "s2"), key); err != nil {
			return nil, err
		}
	}
	return doc, nil
}

func mib(b int64) string { return fmt.Sprintf("%.1f", float64(b)/(1<<20)) }
