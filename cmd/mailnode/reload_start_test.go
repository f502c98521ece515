package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestReloadRightAfterStart sends SIGHUP the moment each daemon's socket
// answers, as systemd's reload or an admin may right after a start: the
// daemon reloads and goes on serving. policyd used to take SIGHUP only
// once it was serving, and died of one that came in that moment (Go's
// default for SIGHUP): this test ended it at its first start, in each of
// two runs, and TestPolicydProcess once in four under load.
func TestReloadRightAfterStart(t *testing.T) {
	good, err := os.ReadFile("../../policy/testdata/inventory.yaml")
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		dir := t.TempDir()
		inv := filepath.Join(dir, "inventory.yaml")
		if err := os.WriteFile(inv, good, 0o644); err != nil {
			t.Fatal(err)
		}
		reloadAtOnce(t, startPolicyd(t, inv, filepath.Join(dir, "p.sock")), "policyd: inventory reloaded")

		mdir, minv := testNode(t, "127.0.0.1:1")
		sock := filepath.Join(mdir, "milter.sock")
		reloadAtOnce(t, startDaemon(t, sock, "milterd", "-i", minv, "--listen", "unix:"+sock), "milterd: inventory reloaded")
	}
}

// reloadAtOnce signals p, whose socket has just answered, and waits for
// logged, with p still running.
func reloadAtOnce(t *testing.T, p *daemonProc, logged string) {
	t.Helper()
	if err := p.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for !strings.Contains(p.stderr.String(), logged) {
		select {
		case err := <-p.exited:
			t.Fatalf("%s ended on a SIGHUP right after start (%v); it should have reloaded", p.name, err)
		case <-time.After(10 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: no %q within 10 s", p.name, logged)
		}
	}
	select {
	case err := <-p.exited:
		t.Fatalf("%s ended after its reload: %v", p.name, err)
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.exited:
	case <-time.After(10 * time.Second):
		t.Fatalf("%s did not stop on SIGTERM", p.name)
	}
}
