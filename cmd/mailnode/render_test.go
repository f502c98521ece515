package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRenderConfigWriteThenCheck(t *testing.T) {
	dir := t.TempDir()
	out, errs, code := runApp(t, "render-config", "--inventory", "../../examples/inventory.yaml", "--out", dir)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for _, f := range []string{"postfix/main.cf", "postfix/master.cf", "postfix/virtual_alias_maps", "dovecot/dovecot.conf",
		"unbound/unbound.conf", "dns/example.com.zone", "dns/example.net.zone"} {
		if !strings.Contains(out, "wrote "+filepath.Join(dir, f)+"\n") {
			t.Errorf("output does not list %s:\n%s", f, out)
		}
	}
	// Up to date: --check prints nothing, exit 0.
	out, errs, code = runApp(t, "render-config", "--inventory", "../../examples/inventory.yaml", "--out", dir, "--check")
	if code != 0 || out != "" {
		t.Fatalf("--check on a fresh tree: exit %d, stdout %q, stderr %q", code, out, errs)
	}
	// A hand edit: --check shows it as a diff and exits 1, writing nothing.
	main := filepath.Join(dir, "postfix", "main.cf")
	b, _ := os.ReadFile(main)
	os.WriteFile(main, []byte(strings.Replace(string(b), "disable_vrfy_command = yes", "disable_vrfy_command = no", 1)), 0o644)
	out, _, code = runApp(t, "render-config", "--inventory", "../../examples/inventory.yaml", "--out", dir, "--check")
	if code != 1 || !strings.Contains(out, "-disable_vrfy_command = no\n+disable_vrfy_command = yes\n") {
		t.Errorf("--check after an edit: exit %d, diff:\n%s", code, out)
	}
	if b2, _ := os.ReadFile(main); strings.Contains(string(b2), "disable_vrfy_command = yes") {
		t.Errorf("--check wrote the file")
	}
	// Rendering again repairs only that file.
	out, _, code = runApp(t, "render-config", "--inventory", "../../examples/inventory.yaml", "--out", dir)
	if code != 0 || out != "wrote "+main+"\n" {
		t.Errorf("re-render: exit %d, output %q", code, out)
	}
}

func TestRenderConfigRefusesBadInventory(t *testing.T) {
	dir := t.TempDir()
	_, errs, code := runApp(t, "render-config", "--inventory", "../../inventory/testdata/bad/05-aliases.yaml", "--out", dir)
	if code != 2 || !strings.Contains(errs, "05-aliases.yaml:") || !strings.Contains(errs, "problem(s)") {
		t.Errorf("bad inventory: exit %d, stderr:\n%s", code, errs)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("a bad inventory rendered %d entries", len(ents))
	}
}

func TestDNSZone(t *testing.T) {
	out, errs, code := runApp(t, "dns", "zone", "--inventory", "../../examples/inventory.yaml", "--domain", "Example.NET.")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errs)
	}
	for _, want := range []string{"$ORIGIN example.net.\n", "example.net.\t3600\tIN\tMX\t10 mx1.example.com.\n",
		"_submission._tcp.example.net.\t3600\tIN\tSRV\t0 1 587 mx1.example.com.\n"} {
		if !strings.Contains(out, want) {
			t.Errorf("dns zone lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "example.com.\t") && !strings.Contains(out, "mx1.example.com.") {
		t.Errorf("--domain example.net printed other zones")
	}
	_, _, code = runApp(t, "dns", "zone", "--inventory", "../../examples/inventory.yaml", "--domain", "partner.org")
	if code != 2 {
		t.Errorf("dns zone for a relay domain: exit %d, want 2", code)
	}
}

// render-config --node picks the tier node; an unknown name is refused with
// the known ones, and nothing is written.
func TestRenderConfigNode(t *testing.T) {
	const inv = "../../render/testdata/tier.yaml"
	dir := t.TempDir()
	_, errs, code := runApp(t, "render-config", "--inventory", inv, "--no-host-checks", "--node", "mx9.example.com", "--out", dir)
	if code != 2 || !strings.Contains(errs, `tier.yaml:12: tier.nodes: --node "mx9.example.com" is not a node of the tier; its nodes are: mx1.example.com, mx2.example.com`) {
		t.Errorf("unknown node: exit %d, stderr:\n%s", code, errs)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("an unknown node rendered %d entries", len(ents))
	}
	// Without --node or node.hostname the tier inventory names no node.
	_, errs, code = runApp(t, "render-config", "--inventory", inv, "--no-host-checks", "--out", dir)
	if code != 2 || !strings.Contains(errs, "node.hostname: missing: with tier.nodes, say which node this is: --node NAME (one of: mx1.example.com, mx2.example.com)") {
		t.Errorf("no node: exit %d, stderr:\n%s", code, errs)
	}
	for _, node := range []string{"mx1.example.com", "mx2.example.com"} {
		out := filepath.Join(dir, node)
		if _, errs, code := runApp(t, "render-config", "--inventory", inv, "--no-host-checks", "--node", node, "--out", out); code != 0 {
			t.Fatalf("--node %s: exit %d: %s", node, code, errs)
		}
		b, _ := os.ReadFile(filepath.Join(out, "postfix", "main.cf"))
		if !strings.Contains(string(b), "\nmyhostname = "+node+"\n") {
			t.Errorf("--node %s: main.cf has not its myhostname", node)
		}
	}
	out, errs, code := runApp(t, "config", "check", "--inventory", inv, "--no-host-checks", "--node", "mx2.example.com")
	if code != 0 || !strings.Contains(out, "ok: node mx2.example.com (one of a tier of 2), 2 local domain(s)") {
		t.Errorf("config check --node: exit %d, %s%s", code, out, errs)
	}
	zone, _, code := runApp(t, "dns", "zone", "--inventory", inv, "--node", "mx1.example.com", "--domain", "example.net")
	for _, want := range []string{"example.net.\t3600\tIN\tMX\t10 mx1.example.com.\n", "example.net.\t3600\tIN\tMX\t10 mx2.example.com.\n"} {
		if code != 0 || !strings.Contains(zone, want) {
			t.Errorf("dns zone of the tier lacks %q (exit %d):\n%s", want, code, zone)
		}
	}
}
