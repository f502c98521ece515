package test

import (
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/mailnode/mailnode/spam/spamtest"
	"github.com/mailnode/mailnode/test/harness"
)

// TestMilterMetricsEndToEnd: milterd started from an inventory with
// milter.metrics_listen counts what real Postfix sent it: a signed message,
// an inbound one delivered and GTUBE refused, with its DNS lookups timed.
func TestMilterMetricsEndToEnd(t *testing.T) {
	d := spamtest.StartDNS(t, spamE2EZone)
	port, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	n := harness.StartNode(t, harness.Options{Policy: true, Milter: true, DKIMKeys: true, Edit: func(doc map[string]any) {
		harness.Set(doc, "policy.greylist.enabled", false)
		harness.Set(doc, "node.resolver", d.Addr)
		harness.Set(doc, "milter.metrics_listen", addr)
	}})
	wantFinal(t, send(t, n.SMTP, harness.Envelope{LocalAddr: harness.TrustedClient, From: "bob@example.com", To: []string{"alice@example.com"},
		Data: harness.NewMessage("bob@example.com", "alice@example.com", "signed", "hello")}))
	if r := spamSend(t, n, "", "news@sender.test", "alice@example.com", harness.NewMessage("news@sender.test", "alice@example.com", "ham", "hello")); r.Code != 250 {
		t.Fatalf("ham: %v", r)
	}
	if r := spamSend(t, n, "", "news@sender.test", "alice@example.com", gtubeMessage("news@sender.test", "alice@example.com")); r.Code != 550 {
		t.Fatalf("GTUBE: %v", r)
	}
	get := func(path string) (int, string) { t.Helper(); return httpGet(t, addr, path) }
	if code, body := get("/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("/healthz: %d %q", code, body)
	}
	// The counters are updated before milterd answers Postfix.
	_, body := get("/metrics")
	for _, want := range []string{
		`mailnode_milter_signatures_total{algorithm="rsa",domain="example.com",selector="mx2026r"} 1`,
		`mailnode_milter_signatures_total{algorithm="ed25519",domain="example.com",selector="mx2026e"} 1`,
		`mailnode_milter_messages_total{action="sign"} 1`,
		`mailnode_milter_messages_total{action="verify"} 2`,
		`mailnode_milter_auth_results_total{method="spf",result="pass"} 2`,
		`mailnode_milter_auth_results_total{method="dmarc",result="pass"} 2`,
		`mailnode_milter_spam_verdicts_total{action="deliver"} 1`,
		`mailnode_milter_spam_verdicts_total{action="reject"} 1`,
		`mailnode_milter_errors_total{kind="sign"} 0`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	// SPF and DMARC asked node.resolver (the first time; then its cache).
	m := regexp.MustCompile(`mailnode_milter_dns_seconds_count\{result="ok",type="TXT"\} (\d+)`).FindStringSubmatch(body)
	if m == nil || m[1] == "0" {
		t.Errorf("no TXT lookup timed:\n%s", grepLines(body, "mailnode_milter_dns_seconds_count", 20))
	}
	if t.Failed() {
		t.Logf("/metrics:\n%s", grepLines(body, "mailnode_milter_", 200))
	}
}
