package test

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	mdns "github.com/miekg/dns"

	"github.com/mailnode/mailnode/dkim"
	"github.com/mailnode/mailnode/dns/dnstest"
	"github.com/mailnode/mailnode/test/harness"
)

// TestPublishBeforeSignEndToEnd: node.resolver is the test's DNS server.
// With example.com's zone published but for mx2026e's record, mail from a
// trust host through Postfix leaves signed with mx2026r only and milterd
// says why; once the record is published, milterd's next check (no
// reload) adds the mx2026e signature.
func TestPublishBeforeSignEndToEnd(t *testing.T) {
	t.Setenv("MAILNODE_DKIM_CHECK_INTERVAL", "200ms")
	auth := dnstest.Start(t, "")
	n := harness.StartNode(t, harness.Options{Policy: true, Milter: true, DKIMKeys: true, Edit: func(doc map[string]any) {
		harness.Set(doc, "policy.greylist.enabled", false)
		harness.Set(doc, "node.resolver", auth.Addr)
	}})
	zone, err := os.ReadFile(filepath.Join(n.Dir, "dns", "example.com.zone"))
	if err != nil {
		t.Fatal(err)
	}
	newRecord := dkim.RecordName("mx2026e", "example.com")
	if err := auth.Add(string(zone)); err != nil {
		t.Fatal(err)
	}
	auth.Remove(newRecord, mdns.TypeTXT)

	const relayRcpt = "dave@partner.org"
	selectors := func(subject string) []string {
		t.Helper()
		msg, id := dkimTestMessage("alice@example.com", relayRcpt, subject, testBody)
		wantFinal(t, send(t, n.SMTP, harness.Envelope{LocalAddr: harness.TrustedClient, From: "alice@example.com", To: []string{relayRcpt}, Data: msg}))
		m := waitSinkID(t, n, id, harness.DeliveryTimeout)
		var sels []string
		for _, sig := range headerValues(t, m.Data, "DKIM-Signature") {
			if s := regexp.MustCompile(`\bs=([a-z0-9-]+)`).FindStringSubmatch(sig); s != nil {
				sels = append(sels, s[1])
			}
		}
		slices.Sort(sels)
		return sels
	}

	if log, ok := n.DaemonLogWith("milterd", `msg="milterd: dkim selector held back until DNS publishes its key" domain=example.com selector=mx2026e dns=not-published signing=no`); !ok {
		t.Fatalf("milterd does not hold mx2026e back:\n%s", log)
	}
	if got := selectors("before publication"); strings.Join(got, ",") != "mx2026r" {
		t.Errorf("before publication: signed with %q, want mx2026r only", got)
	}

	if err := auth.ReplaceZones(string(zone)); err != nil {
		t.Fatal(err)
	}
	if log, ok := n.DaemonLogWith("milterd", "domain=example.com selector=mx2026e dns=published signing=yes"); !ok {
		t.Fatalf("milterd does not sign with mx2026e once published:\n%s", log)
	}
	if got := selectors("after publication"); strings.Join(got, ",") != "mx2026e,mx2026r" {
		t.Errorf("after publication: signed with %q, want mx2026e and mx2026r", got)
	}

	// mailnode dkim status agrees.
	out, err := execCombined(n.Bin, "dkim", "status", "--inventory", n.InventoryPath, "--domain", "example.com")
	if err != nil || !regexp.MustCompile(`example\.com\s+mx2026e\s+ed25519\s+present\s+published\s+yes`).Match(out) {
		t.Errorf("dkim status: %v\n%s", err, out)
	}
}
