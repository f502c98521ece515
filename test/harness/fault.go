package harness

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"
)

// Fault injection: the node's parts and the peers a test runs beside it are
// killed with SIGKILL (no chance to clean up, as in a crash or the OOM
// killer) and started again, while Postfix keeps running.

// KillDaemon kills a sidecar ("policyd", "milterd") and its process group
// with SIGKILL and waits for it to be gone.
func (n *Node) KillDaemon(name string) error { return n.endDaemon(name, syscall.SIGKILL) }

// RestartDaemon starts a sidecar that was killed or stopped again, with the
// same inventory, and waits for its socket.
func (n *Node) RestartDaemon(name string) error {
	if _, ok := n.procs[name]; ok {
		return fmt.Errorf("harness: %s is still running", name)
	}
	listen := n.Inv.Policy.Listen
	if name == "milterd" {
		listen = n.Inv.Milter.Listen
	}
	return n.startDaemon(name, listen)
}

// SignalDaemon sends sig to a sidecar's main process.
func (n *Node) SignalDaemon(name string, sig syscall.Signal) error {
	cmd, ok := n.procs[name]
	if !ok {
		return fmt.Errorf("harness: %s is not running", name)
	}
	return cmd.Process.Signal(sig)
}

// DovecotPid is the process id of Dovecot's master (0 when not running).
func (n *Node) DovecotPid() int {
	if pid := readPid(n.path("run", "master.pid")); pid > 0 && alive(pid) {
		return pid
	}
	return 0
}

// KillDovecot kills Dovecot's whole process group (the master and every
// process it started: auth, lmtp, imap, ...) with SIGKILL and waits until
// none is left.
func (n *Node) KillDovecot() error {
	pid := n.DovecotPid()
	if pid == 0 {
		return errors.New("harness: dovecot is not running")
	}
	pgid, err := syscall.Getpgid(pid)
	if err != nil {
		return fmt.Errorf("harness: dovecot: %w", err)
	}
	syscall.Kill(-pgid, syscall.SIGKILL)
	return waitGroupGone(pgid, 20*time.Second)
}

// StartDovecot starts Dovecot again and waits for its LMTP and SASL
// sockets.
func (n *Node) StartDovecot() error {
	if err := n.runDaemonizing("dovecot", "-c", n.DovecotConfig); err != nil {
		return err
	}
	q := n.Inv.Postfix.QueueDirectory
	for _, w := range []string{"unix:" + filepath.Join(q, n.Inv.Dovecot.LMTPSocket), "unix:" + filepath.Join(q, n.Inv.Dovecot.SASLSocket)} {
		if err := WaitListening(w, 20*time.Second); err != nil {
			return fmt.Errorf("dovecot: %w\n%s", err, readFile(n.path("log", "dovecot.log")))
		}
	}
	return nil
}

// waitGroupGone polls until no process is left in process group pgid.
// A zombie left for a parent that was killed too counts as gone.
func waitGroupGone(pgid int, timeout time.Duration) error {
	for deadline := time.Now().Add(timeout); ; time.Sleep(20 * time.Millisecond) {
		left := groupMembers(pgid)
		if len(left) == 0 {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("harness: process group %d: %v still alive after %s", pgid, left, timeout)
		}
	}
}

// groupMembers lists the live (not zombie) processes of a process group.
func groupMembers(pgid int) []int {
	var out []int
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		var pid int
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/proc", e.Name(), "stat"))
		if err != nil {
			continue
		}
		// pid (comm) state ppid pgrp ...: comm may hold spaces and ')'.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) < 3 || f[0] == "Z" {
			continue
		}
		var g int
		if _, err := fmt.Sscan(f[2], &g); err == nil && g == pgid {
			out = append(out, pid)
		}
	}
	return out
}

// QueueEmpty reports whether `postqueue -p` shows no message, with its
// output.
func (n *Node) QueueEmpty() (bool, string, error) {
	out, err := exec.Command("postqueue", "-c", n.PostfixConfig, "-p").CombinedOutput()
	if err != nil {
		return false, string(out), fmt.Errorf("postqueue -p: %v: %s", err, out)
	}
	return strings.Contains(string(out), "Mail queue is empty"), string(out), nil
}

// QueuedRecipient is one recipient of a queued message as `postqueue -j`
// lists it: the queue it sits in ("deferred", "active", ...) and, once a
// delivery attempt failed, why.
type QueuedRecipient struct {
	Queue, Address, DelayReason string
}

// QueueJSON lists the queued recipients (`postqueue -j`), with the
// command's output.
func (n *Node) QueueJSON() ([]QueuedRecipient, []byte, error) {
	out, err := exec.Command("postqueue", "-c", n.PostfixConfig, "-j").Output()
	if err != nil {
		return nil, out, fmt.Errorf("postqueue -j: %v", err)
	}
	var rs []QueuedRecipient
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		if line == "" {
			continue
		}
		var e struct {
			QueueName  string `json:"queue_name"`
			Recipients []struct {
				Address     string `json:"address"`
				DelayReason string `json:"delay_reason"`
			} `json:"recipients"`
		}
		if err := json.Unmarshal([]byte(line), &e); err != nil {
			return nil, out, fmt.Errorf("postqueue -j: %v: %s", err, line)
		}
		for _, r := range e.Recipients {
			rs = append(rs, QueuedRecipient{Queue: e.QueueName, Address: r.Address, DelayReason: r.DelayReason})
		}
	}
	return rs, out, nil
}

// FlushQueue asks Postfix to attempt every deferred message now
// (`postqueue -f`).
func (n *Node) FlushQueue() error {
	if out, err := exec.Command("postqueue", "-c", n.PostfixConfig, "-f").CombinedOutput(); err != nil {
		return fmt.Errorf("postqueue -f: %v: %s", err, out)
	}
	return nil
}

// DrainQueue flushes the queue and polls until it is empty, flushing again
// every few seconds (a delivery deferred during the flush waits for the
// next one rather than for the queue run). It returns the last
// `postqueue -p` output with the error when timeout passes first.
func (n *Node) DrainQueue(timeout time.Duration) (string, error) {
	deadline := time.Now().Add(timeout)
	var lastFlush time.Time
	for {
		if time.Since(lastFlush) > 3*time.Second {
			if err := n.FlushQueue(); err != nil {
				return "", err
			}
			lastFlush = time.Now()
		}
		empty, out, err := n.QueueEmpty()
		if err != nil {
			return out, err
		}
		if empty {
			return out, nil
		}
		if time.Now().After(deadline) {
			return out, fmt.Errorf("queue not empty after %s", timeout)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// Proc is a peer process a fault test kills and starts again with the
// same command line: redis-server, unbound, rspamd. It runs in a process
// group of its own, its output appended to LogFile.
type Proc struct {
	Name    string
	Args    []string     // program and arguments
	Dir     string       // working directory ("" = the test's)
	LogFile string       // stdout and stderr, appended across restarts
	Ready   func() error // polled after Start until nil

	cmd  *exec.Cmd
	done chan struct{}
}

// Start starts the process and polls Ready (up to timeout); it fails when
// the process exits first.
func (p *Proc) Start(timeout time.Duration) error {
	f, err := os.OpenFile(p.LogFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer f.Close()
	cmd := exec.Command(p.Args[0], p.Args[1:]...)
	cmd.Dir = p.Dir
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%s: %w", p.Name, err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	p.cmd, p.done = cmd, done
	if p.Ready == nil {
		return nil
	}
	deadline := time.Now().Add(timeout)
	for {
		err := p.Ready()
		if err == nil {
			return nil
		}
		select {
		case <-done:
			return fmt.Errorf("%s exited before it was ready (%v):\n%s", p.Name, err, tail(p.LogFile))
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s: %v\n%s", p.Name, timeout, err, tail(p.LogFile))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Pid is the process id of the running process, 0 when there is none.
func (p *Proc) Pid() int {
	if p.cmd == nil || !p.Running() {
		return 0
	}
	return p.cmd.Process.Pid
}

// Running reports whether the process was started and has not exited.
func (p *Proc) Running() bool {
	if p.done == nil {
		return false
	}
	select {
	case <-p.done:
		return false
	default:
		return true
	}
}

// Kill sends SIGKILL to the process group and waits until none of it is
// left.
func (p *Proc) Kill() error {
	if !p.Running() {
		return fmt.Errorf("harness: %s is not running", p.Name)
	}
	pid := p.cmd.Process.Pid
	syscall.Kill(-pid, syscall.SIGKILL)
	<-p.done
	return waitGroupGone(pid, 20*time.Second)
}

// Stop ends the process group with SIGTERM, SIGKILL after 10s.
func (p *Proc) Stop() {
	if !p.Running() {
		return
	}
	pid := p.cmd.Process.Pid
	syscall.Kill(-pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(10 * time.Second):
		syscall.Kill(-pid, syscall.SIGKILL)
		<-p.done
	}
	waitGroupGone(pid, 10*time.Second)
}

// KillGroup kills the process group of pid with SIGKILL and waits until
// none of it is left: for a process another helper started (e.g. the
// rspamd of spamtest, by the pid it wrote).
func KillGroup(pid int) error {
	pgid, err := syscall.Getpgid(pid)
	if err != nil {
		return err
	}
	syscall.Kill(-pgid, syscall.SIGKILL)
	return waitGroupGone(pgid, 20*time.Second)
}

func tail(file string) string {
	s := readFile(file)
	if len(s) > 3000 {
		s = s[len(s)-3000:]
	}
	return s
}

// ProcessIn returns the process group leader among the processes whose
// working directory is dir (e.g. an engine spamtest started there), 0 when
// there is none.
func ProcessIn(dir string) int {
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		var pid int
		if _, err := fmt.Sscan(e.Name(), &pid); err != nil {
			continue
		}
		if cwd, err := os.Readlink(filepath.Join("/proc", e.Name(), "cwd")); err != nil || cwd != dir {
			continue
		}
		if pgid, err := syscall.Getpgid(pid); err == nil && pgid == pid {
			return pid
		}
	}
	return 0
}
