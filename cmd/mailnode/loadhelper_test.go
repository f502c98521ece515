package main

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/mailnode/mailnode/inventory"
	"github.com/mailnode/mailnode/test/invgen"
)

// TestMain lets this test binary be the mailnode binary its daemons run as
// their load helper (os.Executable): "load-inventory" as its first
// argument runs the command instead of the tests.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "load-inventory" {
		if err := newApp().Run(os.Args); err != nil {
			os.Stderr.WriteString("mailnode: " + err.Error() + "\n")
			os.Exit(exitCode(err))
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// The helper's inventory answers as the one loaded in process, policyd's
// tables mapped, milterd's in the heap.
func TestLoadInHelper(t *testing.T) {
	path := filepath.Join(t.TempDir(), "inv.yaml")
	if err := os.WriteFile(path, invgen.Generate(30, 300), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, keep := range []inventory.Keep{inventory.KeepDecisions, inventory.KeepDomains} {
		want, err := inventory.LoadWith(path, inventory.LoadOptions{Keep: keep})
		if err != nil {
			t.Fatal(err)
		}
		got, _, err, ok := loadInHelper(path, "", keep, nil)
		if !ok || err != nil {
			t.Fatalf("keep %d: ok %v, err %v", keep, ok, err)
		}
		if got.Mapped() != (keep == inventory.KeepDecisions) {
			t.Fatalf("keep %d: mapped %v", keep, got.Mapped())
		}
		if got.Digest != want.Digest || !reflect.DeepEqual(got.Domains, want.Domains) || !reflect.DeepEqual(got.Policy, want.Policy) {
			t.Fatalf("keep %d: the helper's inventory differs", keep)
		}
		if !reflect.DeepEqual(got.Owners(), want.Owners()) || !reflect.DeepEqual(got.VirtualAliases(), want.VirtualAliases()) {
			t.Fatalf("keep %d: the helper's tables differ", keep)
		}
		for _, e := range want.VirtualAliases() {
			if got.LookupAddress(e.Key) != want.LookupAddress(e.Key) || !reflect.DeepEqual(got.ListMembers(e.Key), want.ListMembers(e.Key)) {
				t.Fatalf("keep %d: %s answered differently", keep, e.Key)
			}
		}
		// A reload of the same domains shares the running ones.
		again, _, err, ok := loadInHelper(path, "", keep, got)
		if !ok || err != nil {
			t.Fatalf("keep %d, reload: ok %v, err %v", keep, ok, err)
		}
		if &again.Domains[0] != &got.Domains[0] || !reflect.DeepEqual(again.Domains, want.Domains) {
			t.Fatalf("keep %d: the reload did not share the running domains", keep)
		}
		<-got.Release()
		<-again.Release()
	}
}

// A broken inventory: the helper's problems are the in-process load's,
// field for field, and the daemon does not fall back.
func TestLoadInHelperProblems(t *testing.T) {
	for _, f := range []string{"../../inventory/testdata/bad/03-bad-addresses.yaml", "../../inventory/testdata/bad/01-malformed-yaml.yaml", filepath.Join(t.TempDir(), "missing.yaml")} {
		_, want := inventory.LoadWith(f, inventory.LoadOptions{Keep: inventory.KeepDecisions})
		if want == nil {
			t.Fatalf("%s loads", f)
		}
		_, _, err, ok := loadInHelper(f, "", inventory.KeepDecisions, nil)
		if !ok {
			t.Fatalf("%s: the helper gave no answer: %v", f, err)
		}
		if !reflect.DeepEqual(inventory.AsProblems(err), inventory.AsProblems(want)) {
			t.Fatalf("%s: problems differ\nhelper:\n%v\nin process:\n%v", f, err, want)
		}
	}
}

// A helper that cannot give an answer (it cannot start, or fails without
// problems) lets loadForDaemon load in process, and the log says why.
func TestLoadForDaemonFallsBack(t *testing.T) {
	defer func(v bool, f func() (string, error)) { useLoadHelper, helperExecutable = v, f }(useLoadHelper, helperExecutable)
	useLoadHelper = true
	path := filepath.Join(t.TempDir(), "inv.yaml")
	if err := os.WriteFile(path, invgen.Generate(3, 30), 0o644); err != nil {
		t.Fatal(err)
	}
	inv, rep, err := loadForDaemon(path, "", inventory.KeepDecisions, nil)
	if err != nil || !inv.Mapped() {
		t.Fatalf("through the helper: err %v, mapped %v", err, inv != nil && inv.Mapped())
	}
	if a := rep.attrs(); a[1] != "load-inventory" {
		t.Fatalf("log attributes %v", a)
	}
	<-inv.Release()
	for exe, why := range map[string]string{"/nonexistent/mailnode": "no such file", "/bin/false": "load-inventory: exit status 1"} {
		helperExecutable = func() (string, error) { return exe, nil }
		inv, rep, err = loadForDaemon(path, "", inventory.KeepDecisions, nil)
		if err != nil || inv.Mapped() || !inv.IsMailbox(inv.Owners()[0].Values[0]) {
			t.Fatalf("%s: in process: err %v", exe, err)
		}
		if a := rep.attrs(); a[1] != "in process" || !strings.Contains(a[3].(string), why) {
			t.Fatalf("%s: log attributes %v", exe, a)
		}
	}
}

// A helper that does not finish is killed after helperTimeout and the load
// fails (a reload keeps the running inventory); the daemon does not load
// in process what kept the helper.
func TestLoadInHelperTimeout(t *testing.T) {
	defer func(f func() (string, error), d time.Duration) { helperExecutable, helperTimeout = f, d }(helperExecutable, helperTimeout)
	slow := filepath.Join(t.TempDir(), "mailnode")
	if err := os.WriteFile(slow, []byte("#!/bin/sh\nexec sleep 30\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	helperExecutable = func() (string, error) { return slow, nil }
	helperTimeout = 200 * time.Millisecond
	start := time.Now()
	_, _, err, ok := loadInHelper("../../examples/inventory.yaml", "", inventory.KeepDecisions, nil)
	if !ok || err == nil || !strings.Contains(err.Error(), "did not finish") {
		t.Fatalf("ok %v, err %v", ok, err)
	}
	if took := time.Since(start); took > 10*time.Second {
		t.Fatalf("the helper was not killed: %v", took)
	}
}

// Run by hand without descriptors 3 and 4, load-inventory says what it
// needs (exit 2) and writes nothing into the files the Go runtime keeps
// open there.
func TestLoadInventoryWithoutDescriptors(t *testing.T) {
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(exe, "load-inventory", "--inventory", "../../examples/inventory.yaml").CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 2 || !strings.Contains(string(out), "descriptors 3 and 4") {
		t.Fatalf("%v: %s", err, out)
	}
}
