package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailnode/mailnode/dkim"

	"github.com/mailnode/mailnode/inventory"
)

func run(t *testing.T, args ...string) (string, error) {
	t.Helper()
	app := newApp()
	var out bytes.Buffer
	app.Writer, app.ErrWriter = &out, &out
	err := app.Run(append([]string{"mailnode-bench"}, args...))
	return out.String(), err
}

// TestHelp: every command is listed.
func TestHelp(t *testing.T) {
	out, err := run(t, "--help")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []string{"policy", "dunno-server", "null-milter", "greylist", "greylist-scale", "milter", "inventory", "memory"} {
		if !strings.Contains(out, "   "+c) {
			t.Errorf("--help lacks %s:\n%s", c, out)
		}
	}
}

// TestInventory: the generated inventory loads and has what was asked for.
func TestInventory(t *testing.T) {
	out, err := run(t, "inventory", "-domains", "20", "-mailboxes", "90")
	if err != nil {
		t.Fatal(err)
	}
	inv, err := inventory.Parse([]byte(out), "generated.yaml")
	if err != nil {
		t.Fatal(err)
	}
	mailboxes := 0
	for _, d := range inv.LocalDomains() {
		mailboxes += len(d.Mailboxes)
	}
	if len(inv.LocalDomains()) != 18 || len(inv.RelayDomains()) != 2 || mailboxes != 90 {
		t.Errorf("%d local, %d relay domains, %d mailboxes", len(inv.LocalDomains()), len(inv.RelayDomains()), mailboxes)
	}
}

// TestMemoryInventory: the inventory of mailnode-bench memory loads, and
// every selector it names has its key on disk.
func TestMemoryInventory(t *testing.T) {
	keyDir := filepath.Join(t.TempDir(), "keys")
	doc, err := memoryInventory(20, 90, keyDir)
	if err != nil {
		t.Fatal(err)
	}
	inv, err := inventory.Parse(doc, "memory.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.LocalDomains()) != 18 {
		t.Errorf("%d local domains", len(inv.LocalDomains()))
	}
	for _, d := range inv.LocalDomains() {
		if len(d.DKIM) != 1 || d.DKIM[0].Algorithm != "ed25519" {
			t.Fatalf("%s: selectors %v", d.Name, d.DKIM)
		}
		if _, err := os.Stat(dkim.KeyPath(keyDir, d.Name, d.DKIM[0].Selector)); err != nil {
			t.Error(err)
		}
	}
}
