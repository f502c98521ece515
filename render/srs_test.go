package render

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/mailnode/mailnode/inventory"
)

// TestSRSMap: with forwarding.srs (the default) virtual_alias_maps asks
// milterd's socketmap after the alias table, behind the SRS-shape gate, at
// mailnode-srs beside the milter socket (under private/ when milterd
// listens on TCP); with
// forwarding.srs: false, milter.enabled: false or on a null client
// nothing of SRS is rendered.
func TestSRSMap(t *testing.T) {
	mainCF := func(t *testing.T, inv *inventory.Inventory) string {
		t.Helper()
		files, err := Render(inv)
		if err != nil {
			t.Fatal(err)
		}
		return string(files["postfix/main.cf"])
	}
	line := func(cf string) string {
		for _, l := range strings.Split(cf, "\n") {
			if strings.HasPrefix(l, "virtual_alias_maps = ") {
				return l
			}
		}
		return ""
	}
	inv := load(t, "../examples/inventory.yaml")
	if got, want := line(mainCF(t, inv)), "virtual_alias_maps = hash:/etc/postfix/virtual_alias_maps, pipemap:{regexp:{{/^(srs[01][-+=].*)/ $${1}}}, socketmap:unix:/var/spool/postfix/private/mailnode-srs:reverse}"; got != want {
		t.Errorf("default:\n got %s\nwant %s", got, want)
	}
	inv.Milter.Listen = "unix:/var/spool/postfix/mailnode/milter.sock"
	if got := line(mainCF(t, inv)); !strings.HasSuffix(got, ", socketmap:unix:/var/spool/postfix/mailnode/mailnode-srs:reverse}") {
		t.Errorf("milter socket in mailnode/: %s", got)
	}
	inv.Milter.Listen = "inet:127.0.0.1:8891"
	if got := line(mainCF(t, inv)); !strings.HasSuffix(got, ", socketmap:unix:/var/spool/postfix/private/mailnode-srs:reverse}") {
		t.Errorf("milter over TCP: %s", got)
	}
	off := false
	inv.Forwarding.SRS = &off
	if cf := mainCF(t, inv); line(cf) != "virtual_alias_maps = hash:/etc/postfix/virtual_alias_maps" || strings.Contains(cf, "srs") {
		t.Errorf("forwarding.srs false: %s", line(cf))
	}
	inv.Forwarding.SRS = nil
	inv.Milter.Enabled = &off
	if cf := mainCF(t, inv); strings.Contains(cf, "srs") {
		t.Errorf("milter.enabled false: %s", line(cf))
	}
	nc := load(t, "../examples/nullclient.yaml")
	if !nc.Forwarding.SRSOn() || nc.SRSActive() {
		t.Fatalf("null client: SRSOn %v, SRSActive %v", nc.Forwarding.SRSOn(), nc.SRSActive())
	}
	if cf := mainCF(t, nc); strings.Contains(cf, "srs") || strings.Contains(cf, "socketmap") {
		t.Errorf("a null client's main.cf names SRS")
	}
}

// TestSRSGate: Postfix's own postmap, reading the rendered main.cf, passes
// an SRS-shaped address (any case, SRS0 or SRS1, "=", "+" or "-" after
// the tag) through srsGate to the table behind it unchanged, and asks that
// table nothing for an ordinary address, an "@domain" lookup or a local
// part that merely begins with "srs". The socketmap is replaced by a hash
// table that answers every address it is given, so a lookup that reaches
// it shows.
func TestSRSGate(t *testing.T) {
	if _, err := exec.LookPath("postmap"); err != nil {
		if testing.Short() {
			t.Skip("postmap not installed")
		}
		t.Fatal("this test needs postmap (Debian package postfix)")
	}
	dir := t.TempDir()
	addrs := []string{
		"SRS0=HHHH=TT=example.org=eve@example.com",
		"srs0=hhhh=tt=example.org=eve@example.com",
		"SRS1=HHHH=partner.org==HHHH=TT=example.org=eve@example.com",
		"SRS0+HHHH=TT=example.org=eve@example.com",
		"SRS0-HHHH=TT=example.org=eve@example.com",
		"alice@example.com",
		"@example.com",
		"srs@example.com",
		"srs2=x@example.com",
		"bob+SRS0=x@example.com",
	}
	var table strings.Builder
	for _, a := range addrs {
		table.WriteString(strings.ToLower(a) + "\t" + "reached\n")
	}
	hash := filepath.Join(dir, "reached")
	if err := os.WriteFile(hash, []byte(table.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	cf := "compatibility_level = 3.6\nvirtual_alias_maps = pipemap:{" + srsGate + ", hash:" + hash + "}\n"
	if err := os.WriteFile(filepath.Join(dir, "main.cf"), []byte(cf), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("postmap", "-c", dir, hash).CombinedOutput(); err != nil {
		t.Fatalf("postmap %s: %v\n%s", hash, err, out)
	}
	out, err := exec.Command("postconf", "-c", dir, "-xh", "virtual_alias_maps").Output()
	if err != nil {
		t.Fatalf("postconf -x: %v", err)
	}
	maps := strings.TrimSpace(string(out))
	for i, a := range addrs {
		got, err := exec.Command("postmap", "-c", dir, "-q", a, maps).Output()
		reached := err == nil && strings.TrimSpace(string(got)) == "reached"
		if want := i < 5; reached != want {
			t.Errorf("%s: reached the socketmap %v, want %v (%q, %v)", a, reached, want, got, err)
		}
	}
}
