package main

import (
	"bytes"
	"os"
	"path/filepath"
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
	if code != 2 || !strings.Contains(errs, "/nonexistent/inv.yaml: cannot read inventory") {
		t.Fatalf("exit %d: %s", code, errs)
	}
}

// TestConfigCheckBadInventories runs config check on every broken inventory
// of inventory/testdata/bad (one per rule, with the problems it must get):
// each is refused with exactly its .want lines and the README's exit status,
// and render-config refuses it too and writes nothing.
func TestConfigCheckBadInventories(t *testing.T) {
	files, _ := filepath.Glob("../../inventory/testdata/bad/*.yaml")
	if len(files) < 14 {
		t.Fatalf("%d bad inventories", len(files))
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			want, err := os.ReadFile(strings.TrimSuffix(f, ".yaml") + ".want")
			if err != nil {
				t.Fatal(err)
			}
			wantCode := 1
			if strings.Contains(f, "malformed") || strings.Contains(f, "empty") {
				wantCode = 2 // not YAML, or nothing in it
			}
			_, errs, code := runApp(t, "config", "check", "--no-host-checks", "--inventory", f)
			if code != wantCode {
				t.Errorf("exit %d, want %d", code, wantCode)
			}
			got := strings.ReplaceAll(errs, "../../inventory/", "")
			if !strings.HasPrefix(got, string(want)) {
				t.Errorf("config check printed\n%s\nwant\n%s", got, want)
			}
			out := filepath.Join(t.TempDir(), "out")
			if _, _, code := runApp(t, "render-config", "--no-host-checks", "--inventory", f, "--out", out); code != 2 {
				t.Errorf("render-config exit %d, want 2", code)
			}
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Errorf("render-config wrote %s for a refused inventory", out)
			}
		})
	}
}

// TestConfigCheckHost: a mail user that does not exist on this machine is
// refused by config check and render-config, unless --no-host-checks.
func TestConfigCheckHost(t *testing.T) {
	data, err := os.ReadFile("../../examples/inventory.yaml")
	if err != nil {
		t.Fatal(err)
	}
	inv := filepath.Join(t.TempDir(), "inv.yaml")
	os.WriteFile(inv, bytes.Replace(data, []byte("mail_user: vmail"), []byte("mail_user: no-such-user-here"), 1), 0o644)
	_, errs, code := runApp(t, "config", "check", "-i", inv)
	if code != 1 || !strings.Contains(errs, `dovecot.mail_user: system user "no-such-user-here" does not exist on this host`) {
		t.Errorf("exit %d: %s", code, errs)
	}
	if _, _, code := runApp(t, "render-config", "-i", inv, "--out", filepath.Join(t.TempDir(), "o")); code != 2 {
		t.Errorf("render-config exit %d, want 2", code)
	}
	if _, errs, code := runApp(t, "config", "check", "--no-host-checks", "-i", inv); code != 0 {
		t.Errorf("--no-host-checks: exit %d: %s", code, errs)
	}
}

func TestConfigRole(t *testing.T) {
	for _, c := range []struct {
		args []string
		out  string
		code int
	}{
		{[]string{"--inventory", "../../examples/inventory.yaml"}, "mailnode\n", 0},
		{[]string{"--inventory", "../../examples/nullclient.yaml"}, "nullclient\n", 0},
		{[]string{"--inventory", "../../examples/inventory.yaml", "--is", "mailnode"}, "", 0},
		{[]string{"--inventory", "../../examples/nullclient.yaml", "--is", "mailnode"}, "", 1},
		{[]string{"--inventory", "../../examples/nullclient.yaml", "--is", "nullclient"}, "", 0},
		// A typo or a broken inventory must fail the unit, not skip it.
		{[]string{"--inventory", "../../examples/inventory.yaml", "--is", "mailnod"}, "", 255},
		{[]string{"--inventory", "../../inventory/testdata/bad/05-aliases.yaml", "--is", "mailnode"}, "", 255},
		{[]string{"--inventory", "/nonexistent/inventory.yaml", "--is", "mailnode"}, "", 255},
	} {
		out, errs, code := runApp(t, append([]string{"config", "role"}, c.args...)...)
		if code != c.code || out != c.out {
			t.Errorf("config role %v: exit %d, out %q (stderr %q); want exit %d, out %q", c.args, code, out, errs, c.code, c.out)
		}
	}
}
