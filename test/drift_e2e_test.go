package test

import (
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mailnode/mailnode/test/harness"
)

// TestDriftGuardEndToEnd: the inventory is edited and both daemons reload
// it, but the Postfix config is not rendered again. policyd and milterd say
// the installed config comes from another inventory (logs; policyd's
// /healthz and metrics too); rendering it again ends the warning without a
// reload, at the next periodic check.
func TestDriftGuardEndToEnd(t *testing.T) {
	t.Setenv("MAILNODE_DRIFT_INTERVAL", "200ms")
	port, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	metrics := fmt.Sprintf("127.0.0.1:%d", port)
	n := harness.StartNode(t, harness.Options{Policy: true, Milter: true, DKIMKeys: true, Edit: func(doc map[string]any) {
		harness.Set(doc, "policy.metrics_listen", metrics)
	}})
	get := func(path string) string {
		t.Helper()
		code, b := httpGet(t, metrics, path)
		if code != 200 {
			t.Errorf("%s: %d %s", path, code, b)
		}
		return b
	}
	// Rendered and started from the same inventory: no drift.
	if h := get("/healthz"); h != "ok\n" {
		t.Fatalf("/healthz after start: %q", h)
	}
	if m := get("/metrics"); !strings.Contains(m, "mailnode_policy_inventory_drift 0") || !strings.Contains(m, `mailnode_policy_inventory_info{digest="`+n.Inv.Digest+`"} 1`) {
		t.Errorf("metrics after start lack the digest %s or drift 0", n.Inv.Digest)
	}
	for _, d := range []string{"policyd", "milterd"} {
		if log, ok := n.DaemonLogWith(d, "inventory digest", n.Inv.Digest); !ok || strings.Contains(log, "inventory drift") {
			t.Errorf("%s at start:\n%s", d, log)
		}
	}

	// Edit the inventory (a comment is enough: the digest is of the bytes)
	// and reload, without rendering.
	old, err := os.ReadFile(n.InventoryPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(n.InventoryPath, append(old, "# edited, not rendered\n"...), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"policyd", "milterd"} {
		if err := n.SignalDaemon(d, syscall.SIGHUP); err != nil {
			t.Fatal(err)
		}
	}
	want := "inventory drift: running sha256:"
	for _, d := range []string{"policyd", "milterd"} {
		if log, ok := n.DaemonLogWith(d, want, "installed Postfix config rendered from "+n.Inv.Digest); !ok {
			t.Errorf("%s does not warn of the drift:\n%s", d, log)
		}
	}
	if h := get("/healthz"); !strings.HasPrefix(h, "ok\nwarning: "+want) {
		t.Errorf("/healthz in drift: %q", h)
	}
	if m := get("/metrics"); !strings.Contains(m, "mailnode_policy_inventory_drift 1") ||
		!strings.Contains(m, `mailnode_policy_inventory_installed_info{digest="`+n.Inv.Digest+`"} 1`) {
		t.Errorf("metrics in drift:\n%s", grepLines(m, "inventory", 10))
	}

	// Render (straight into the private Postfix's config directory): the
	// periodic check clears the warning.
	out, err := exec.Command(n.Bin, "render-config", "--inventory", n.InventoryPath, "--out", n.Dir).CombinedOutput()
	if err != nil || !strings.Contains(string(out), "mailnode-inventory.digest") {
		t.Fatalf("render-config: %v\n%s", err, out)
	}
	for _, d := range []string{"policyd", "milterd"} {
		if log, ok := n.DaemonLogWith(d, "inventory drift over"); !ok {
			t.Errorf("%s: the drift does not end after rendering:\n%s", d, log)
		}
	}
	deadline := time.Now().Add(5 * time.Second)
	for get("/healthz") != "ok\n" && time.Now().Before(deadline) {
		time.Sleep(100 * time.Millisecond)
	}
	if h := get("/healthz"); h != "ok\n" {
		t.Errorf("/healthz after rendering: %q", h)
	}
	if m := get("/metrics"); !strings.Contains(m, "mailnode_policy_inventory_drift 0") {
		t.Errorf("metrics after rendering:\n%s", grepLines(m, "inventory", 10))
	}
}
