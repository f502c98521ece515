package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/mailnode/mailnode/internal/sysmon"
)

// TestSysmonWired: the running policyd has sysmon kept awake (package
// internal/sysmon tests the rules; this checks that main applies them).
func TestSysmonWired(t *testing.T) {
	bin, err := buildMailnode()
	if err != nil {
		t.Fatal(err)
	}
	// The example inventory, with the state file in the test's directory
	// instead of /var/lib/mailnode.
	dir := t.TempDir()
	data, err := os.ReadFile("../../examples/inventory.yaml")
	if err != nil {
		t.Fatal(err)
	}
	data = bytes.Replace(data, []byte("path: /var/lib/mailnode/state.db"), []byte("path: "+filepath.Join(dir, "state.db")), 1)
	inv := filepath.Join(dir, "inventory.yaml")
	if err := os.WriteFile(inv, data, 0o644); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "policy.sock")
	cmd := exec.Command(bin, "policyd", "-i", inv, "--listen", "unix:"+sock, "--maillog", "off")
	cmd.Env = append(os.Environ(), "GODEBUG=", "MAILNODE_SYSMON=")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { cmd.Process.Kill(); cmd.Wait() }()
	// The exec happens before policyd opens its socket.
	waitUntil(t, "policyd's socket", func() bool {
		_, err := os.Stat(sock)
		return err == nil
	})
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(cmd.Process.Pid) + "/environ")
	if err != nil {
		t.Fatal(err)
	}
	var got string
	for _, kv := range bytes.Split(raw, []byte{0}) {
		if v, ok := strings.CutPrefix(string(kv), "GODEBUG="); ok {
			got = v
		}
	}
	if got != sysmon.Godebug {
		t.Errorf("GODEBUG of the running policyd = %q, want %q", got, sysmon.Godebug)
	}
}
