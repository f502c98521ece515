package testpeer

import (
	"os"
	"os/exec"
	"strings"
	"testing"
)

// TestMissing runs a test that calls Missing in a child process, with and
// without -short: the full run must fail, the short one skip.
func TestMissing(t *testing.T) {
	if os.Getenv("TESTPEER_CHILD") == "1" {
		Missing(t, "frobd not installed (apt-get install frobd)")
		return
	}
	for _, c := range []struct {
		short bool
		fail  bool
		want  string
	}{
		{false, true, "--- FAIL: TestMissing"},
		{true, false, "--- SKIP: TestMissing"},
	} {
		args := []string{"-test.run=^TestMissing$", "-test.v"}
		if c.short {
			args = append(args, "-test.short")
		}
		cmd := exec.Command(os.Args[0], args...)
		cmd.Env = append(os.Environ(), "TESTPEER_CHILD=1")
		out, err := cmd.CombinedOutput()
		if (err != nil) != c.fail || !strings.Contains(string(out), c.want) || !strings.Contains(string(out), "frobd not installed") {
			t.Errorf("short=%v: err %v, output:\n%s", c.short, err, out)
		}
	}
}
