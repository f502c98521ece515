package inventory

import (
	"strings"
	"testing"
)

// TestSRSFields: forwarding.srs_secret_file's default, SRSActive over
// forwarding.srs, milter.enabled and the role, and the socket beside
// milter.listen's.
func TestSRSFields(t *testing.T) {
	parse := func(t *testing.T, extra string) *Inventory {
		t.Helper()
		inv, err := Parse([]byte("node: {hostname: mx1.example.com}\n"+extra+"domains:\n  - name: example.com\n"), "srs.yaml")
		if err != nil {
			t.Fatal(err)
		}
		return inv
	}
	inv := parse(t, "")
	if inv.Forwarding.SRSSecretFile != DefaultSRSSecretFile || !inv.SRSActive() {
		t.Errorf("defaults: %q, active %v", inv.Forwarding.SRSSecretFile, inv.SRSActive())
	}
	if got := inv.SRSSocket(); got != "/var/spool/postfix/private/mailnode-srs" {
		t.Errorf("SRSSocket %q", got)
	}
	if got := inv.SRSSocketBeside("unix:/run/x/milter.sock"); got != "/run/x/mailnode-srs" {
		t.Errorf("SRSSocketBeside %q", got)
	}
	if inv := parse(t, "forwarding: {srs: false}\n"); inv.SRSActive() {
		t.Error("active with forwarding.srs false")
	}
	if inv := parse(t, "milter: {enabled: false}\n"); inv.SRSActive() {
		t.Error("active without milterd")
	}
	if inv := parse(t, "forwarding: {srs_secret_file: /srv/mailnode/srs.secret}\nmilter: {listen: \"inet:127.0.0.1:8891\"}\n"); inv.Forwarding.SRSSecretFile != "/srv/mailnode/srs.secret" ||
		inv.SRSSocket() != "/var/spool/postfix/private/mailnode-srs" {
		t.Errorf("set: %q, %q", inv.Forwarding.SRSSecretFile, inv.SRSSocket())
	}
	for _, bad := range []string{"srs.secret", "/etc/mailnode/srs secret", "/etc/$x"} {
		_, err := Parse([]byte("node: {hostname: mx1.example.com}\nforwarding: {srs_secret_file: \""+bad+"\"}\ndomains:\n  - name: example.com\n"), "srs.yaml")
		if err == nil || !strings.Contains(err.Error(), "forwarding.srs_secret_file") {
			t.Errorf("%q: %v", bad, err)
		}
	}
}
