package sysmon

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"
)

// childEnv makes the test binary act as a mailnode-like main: KeepAwake for
// the command "serve", then print the GODEBUG it runs with.
const childEnv = "SYSMON_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		KeepAwake(os.Args, "serve")
		fmt.Print(os.Getenv("GODEBUG"))
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// TestKeepAwake: a long-running command runs with sysmon kept awake, keeps
// the operator's other GODEBUG settings, and runs as it is with
// MAILNODE_SYSMON=default or an explicit schedtrace; other commands are not
// re-executed at all.
func TestKeepAwake(t *testing.T) {
	cases := []struct {
		name, command, env, want string
	}{
		{"default", "serve", "", Godebug},
		{"keeps other settings", "serve", "GODEBUG=madvdontneed=1", "madvdontneed=1," + Godebug},
		{"opt out", "serve", "MAILNODE_SYSMON=default", ""},
		{"operator's schedtrace", "serve", "GODEBUG=schedtrace=60000", "schedtrace=60000"},
		{"short command", "render-config", "", ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cmd := exec.Command(os.Args[0], tc.command)
			cmd.Env = append(os.Environ(), "GODEBUG=", "MAILNODE_SYSMON=", childEnv+"=1")
			if tc.env != "" {
				cmd.Env = append(cmd.Env, tc.env)
			}
			out, err := cmd.Output()
			if err != nil {
				t.Fatal(err)
			}
			if got := strings.TrimSpace(string(out)); got != tc.want {
				t.Errorf("GODEBUG of the running command = %q, want %q", got, tc.want)
			}
		})
	}
	// In this process too: were a short command re-executed, this test
	// binary would be replaced by itself and the run would fail.
	for _, c := range []string{"config", "render-config", "dkim", "dns", "state"} {
		KeepAwake([]string{os.Args[0], c}, "policyd", "milterd")
	}
}
