package main

import (
	"strings"
	"testing"
)

// A null client's inventory passes config check, and the commands that
// have nothing to do on it say so instead of describing a mail node.
func TestNullClientCommands(t *testing.T) {
	const inv = "../../examples/nullclient.yaml"
	out, errs, code := runApp(t, "config", "check", "--inventory", inv)
	if code != 0 || !strings.Contains(out, "ok: node app1.example.com, 1 local domain(s), 0 relay domain(s), 0 mailbox(es)") {
		t.Errorf("config check: exit %d\n%s%s", code, out, errs)
	}
	for _, args := range [][]string{
		{"dns", "zone", "--inventory", inv},
		{"dns", "check", "--inventory", inv},
		{"policyd", "--inventory", inv},
	} {
		out, errs, code := runApp(t, args...)
		if code != 2 || out != "" || !strings.Contains(errs, "app1") || !strings.Contains(errs, "is a null client (node.role: nullclient)") {
			t.Errorf("%s: exit %d, want 2 with why\nstdout: %s\nstderr: %s", strings.Join(args[:2], " "), code, out, errs)
		}
	}
}
