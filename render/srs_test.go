package render

import (
	"strings"
	"testing"

	"github.com/mailnode/mailnode/inventory"
)

// TestSRSMap: with forwarding.srs (the default) virtual_alias_maps asks
// milterd's socketmap after the alias table, at mailnode-srs beside the
// milter socket (under private/ when milterd listens on TCP); with
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
	if got, want := line(mainCF(t, inv)), "virtual_alias_maps = hash:/etc/postfix/virtual_alias_maps, socketmap:unix:/var/spool/postfix/private/mailnode-srs:reverse"; got != want {
		t.Errorf("default:\n got %s\nwant %s", got, want)
	}
	inv.Milter.Listen = "unix:/var/spool/postfix/mailnode/milter.sock"
	if got := line(mainCF(t, inv)); !strings.HasSuffix(got, ", socketmap:unix:/var/spool/postfix/mailnode/mailnode-srs:reverse") {
		t.Errorf("milter socket in mailnode/: %s", got)
	}
	inv.Milter.Listen = "inet:127.0.0.1:8891"
	if got := line(mainCF(t, inv)); !strings.HasSuffix(got, ", socketmap:unix:/var/spool/postfix/private/mailnode-srs:reverse") {
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
