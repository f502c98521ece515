package main

import (
	"bytes"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"
)

// runApp runs the CLI in-process and returns stdout, stderr and the exit code.
func runApp(t *testing.T, args ...string) (string, string, int) {
	t.Helper()
	app := newApp()
	var out, errb bytes.Buffer
	app.Writer, app.ErrWriter = &out, &errb
	code := 0
	app.ExitErrHandler = func(*cli.Context, error) {}
	if err := app.Run(append([]string{"mailnode"}, args...)); err != nil {
		code = exitCode(err)
		errb.WriteString(err.Error() + "\n")
	}
	return out.String(), errb.String(), code
}

func TestConfigCheckExample(t *testing.T) {
	out, errs, code := runApp(t, "config", "check", "--inventory", "../../examples/inventory.yaml")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	if !strings.Contains(out, "ok: node mx1.example.com, 2 local domain(s), 1 relay domain(s), 3 mailbox(es)") {
		t.Errorf("summary: %q", out)
	}
}

func TestConfigCheckListsEveryProblem(t *testing.T) {
	_, errs, code := runApp(t, "config", "check", "--inventory", "../../inventory/testdata/bad/05-aliases.yaml")
	if code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	lines := strings.Split(strings.TrimSpace(errs), "\n")
	// 7 problems, then the summary.
	if len(lines) != 8 {
		t.Fatalf("got %d lines:\n%s", len(lines), errs)
	}
	for _, l := range lines[:7] {
		if !strings.HasPrefix(l, "../../inventory/testdata/bad/05-aliases.yaml:") {
			t.Errorf("problem without file:line: %q", l)
		}
	}
	if !strings.Contains(lines[7], "7 problem(s)") {
		t.Errorf("summary: %q", lines[7])
	}
}

func TestConfigCheckMissingFile(t *testing.T) {
	_, errs, code := runApp(t, "config", "check", "--inventory", "/nonexistent/inv.yaml")
	if code != 1 || !strings.Contains(errs, "/nonexistent/inv.yaml: cannot read inventory") {
		t.Fatalf("exit %d: %s", code, errs)
	}
}
