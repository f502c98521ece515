package main

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// processGodebug is the GODEBUG the running process pid has, as the kernel
// shows it after the exec.
func processGodebug(t *testing.T, pid int) string {
	t.Helper()
	raw, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/environ")
	if err != nil {
		t.Fatal(err)
	}
	for _, kv := range bytes.Split(raw, []byte{0}) {
		if v, ok := strings.CutPrefix(string(kv), "GODEBUG="); ok {
			return v
		}
	}
	return ""
}

// TestSysmonReexec: policyd runs with sysmon kept awake (see sysmon.go),
// keeps the operator's other GODEBUG settings, and runs as it is with
// MAILNODE_SYSMON=default or an explicit schedtrace; short commands are not
// re-executed at all.
func TestSysmonReexec(t *testing.T) {
	bin, err := buildMailnode()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	inv, err := filepath.Abs("../../examples/inventory.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name, env, want string
	}{
		{"default", "", sysmonGodebug},
		{"keeps other settings", "GODEBUG=madvdontneed=1", "madvdontneed=1," + sysmonGodebug},
		{"opt out", "MAILNODE_SYSMON=default", ""},
		{"operator's schedtrace", "GODEBUG=schedtrace=60000", "schedtrace=60000"},
	}
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sock := filepath.Join(dir, strconv.Itoa(i)+".sock")
			cmd := exec.Command(bin, "policyd", "-i", inv, "--listen", "unix:"+sock, "--maillog", "off")
			cmd.Env = append(os.Environ(), "GODEBUG=", "MAILNODE_SYSMON=")
			if tc.env != "" {
				cmd.Env = append(cmd.Env, tc.env)
			}
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { cmd.Process.Kill(); cmd.Wait() }()
			// The exec happens before policyd opens its socket.
			waitUntil(t, "policyd's socket", func() bool {
				_, err := os.Stat(sock)
				return err == nil
			})
			if got := processGodebug(t, cmd.Process.Pid); got != tc.want {
				t.Errorf("GODEBUG of the running policyd = %q, want %q", got, tc.want)
			}
		})
	}
	// A short command is not re-executed: were it, this test binary would
	// be replaced by itself running "render-config" and the run would fail.
	for _, cmd := range []string{"config", "render-config", "dkim", "dns", "state"} {
		keepSysmonAwake([]string{bin, cmd})
	}
}
