package test

import (
	"encoding/base64"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mailnode/mailnode/antivirus/clamdtest"
	"github.com/mailnode/mailnode/spam/spamtest"
	"github.com/mailnode/mailnode/test/harness"
)

// The virus scan end to end: Debian's clamd, started by the test with a
// one-signature database for the EICAR test file, and a node whose
// spam.antivirus points at its socket; real Postfix, policyd and milterd.

// startClamdE2E starts clamd in the test's directory; it is stopped with
// the test.
func startClamdE2E(t *testing.T) *clamdtest.Clamd {
	t.Helper()
	return clamdtest.StartT(t, clamdtest.Options{})
}

// eicarMessage is a message with the EICAR test file as a base64 MIME
// attachment.
func eicarMessage(from, to string) []byte {
	return []byte("From: <" + from + ">\r\nTo: <" + to + ">\r\nSubject: invoice\r\nDate: " + time.Now().Format(time.RFC1123Z) + "\r\n" +
		"Message-ID: <" + strconv.FormatInt(time.Now().UnixNano(), 36) + "@sender.test>\r\nMIME-Version: 1.0\r\n" +
		"Content-Type: multipart/mixed; boundary=\"b1\"\r\n\r\n" +
		"--b1\r\nContent-Type: text/plain\r\n\r\nThe invoice is attached.\r\n" +
		"--b1\r\nContent-Type: application/octet-stream; name=\"invoice.com\"\r\nContent-Disposition: attachment; filename=\"invoice.com\"\r\n" +
		"Content-Transfer-Encoding: base64\r\n\r\n" + base64.StdEncoding.EncodeToString([]byte(clamdtest.EICAR())) + "\r\n--b1--\r\n")
}

func TestAntivirusE2E(t *testing.T) {
	c := startClamdE2E(t)
	d := spamtest.StartDNS(t, spamE2EZone)
	port, err := harness.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	metrics := "127.0.0.1:" + strconv.Itoa(port)
	n := spamE2ENode(t, d.Addr, map[string]any{"antivirus": map[string]any{"address": c.Address}, "milter.metrics_listen": metrics})
	virus := "550 5.7.1 Virus found: " + clamdtest.VirusName

	// (a) A clean message from outside: delivered.
	clean := func(subject string) []byte {
		return harness.NewMessage("x@sender.test", "alice@example.com", subject, "Lunch on Thursday at noon?")
	}
	if r := spamSend(t, n, "", "x@sender.test", "alice@example.com", clean("clean")); r.Code != 250 {
		t.Fatalf("clean: %v", r)
	}
	n.WaitMaildir(t, "alice@example.com", 1)

	// (b) EICAR attached, from outside: refused at the end of DATA.
	if r := spamSend(t, n, "", "mal@sender.test", "alice@example.com", eicarMessage("mal@sender.test", "alice@example.com")); r.Code != 550 || r.Text() != virus {
		t.Errorf("EICAR inbound: %v, want %s", r, virus)
	}

	// (d) Outbound (scan_outbound defaults to true): an authenticated user's
	// EICAR is refused, a clean message leaves signed.
	sub := func(data []byte) harness.Reply {
		tr, err := harness.Send(n.Submission, harness.Envelope{StartTLS: true, AuthUser: "alice@example.com", AuthPass: "alicepass",
			From: "alice@example.com", To: []string{"x@outside.test"}, Data: data})
		if err != nil {
			t.Fatalf("submission: %v", err)
		}
		return tr.Final
	}
	if r := sub(eicarMessage("alice@example.com", "x@outside.test")); r.Code != 550 || r.Text() != virus {
		t.Errorf("EICAR outbound: %v, want %s", r, virus)
	}
	if r := sub(harness.NewMessage("alice@example.com", "x@outside.test", "out", "Minutes attached, no virus.")); r.Code != 250 {
		t.Fatalf("clean outbound: %v", r)
	}
	if out := n.WaitSink(t, 1); !strings.Contains(string(out[0].Data), "DKIM-Signature:") || !strings.Contains(string(out[0].Data), "Minutes attached") {
		t.Errorf("outbound message left without a signature:\n%s", out[0].Data)
	}

	// (c) clamd killed: on_failure tempfail (the default) defers; after
	// the restart the same message is accepted.
	if err := c.Proc.Kill(); err != nil {
		t.Fatal(err)
	}
	if r := spamSend(t, n, "", "x@sender.test", "alice@example.com", clean("while clamd is down")); r.Code != 451 ||
		r.Text() != "451 4.7.1 Virus scan temporarily unavailable, try again later" {
		t.Errorf("clamd down: %v", r)
	}
	if err := c.Restart(); err != nil {
		t.Fatal(err)
	}
	if r := spamSend(t, n, "", "x@sender.test", "alice@example.com", clean("clamd is back")); r.Code != 250 {
		t.Fatalf("clamd back: %v", r)
	}
	got := n.WaitMaildir(t, "alice@example.com", 2)
	time.Sleep(500 * time.Millisecond) // nothing else may arrive
	if got, _ := n.ReadMaildir("alice@example.com"); len(got) != 2 {
		t.Errorf("alice has %d messages, want the two clean ones", len(got))
	}
	for _, m := range got {
		if s := spamHeaders(t, m.Data).Get("Subject"); s != "clean" && s != "clamd is back" {
			t.Errorf("delivered: %q", s)
		}
	}
	if out := n.WaitSink(t, 1); len(out) != 1 {
		t.Errorf("%d messages left the node, want the clean outbound one", len(out))
	}

	// Metrics: three clean scans (two inbound, one outbound), two viruses,
	// one error while clamd was down.
	_, b := httpGet(t, metrics, "/metrics")
	for _, want := range []string{
		`mailnode_milter_antivirus_scans_total{result="clean"} 3`,
		`mailnode_milter_antivirus_scans_total{result="virus"} 2`,
		`mailnode_milter_antivirus_scans_total{result="error"} 1`,
		`mailnode_milter_antivirus_seconds_count{engine="clamd",result="ok"} 5`,
		`mailnode_milter_errors_total{kind="antivirus"} 1`,
	} {
		if !strings.Contains(b, want) {
			t.Errorf("/metrics lacks %s:\n%s", want, grepLines(b, "antivirus", 30))
		}
	}

	// The decision lines, as mailnode why tells them.
	want := []string{"virus scan: virus (" + clamdtest.VirusName + ")", "refused: " + virus}
	var out string
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		b, _ := exec.Command(n.Bin, "why", "--since", "1h", "--maillog", filepath.Join(n.Dir, "log", "maillog"),
			"--maillog", filepath.Join(n.Dir, "log", "milterd*.log"), "mal@sender.test").CombinedOutput()
		out = string(b)
		if inOrder(out, want) == "" || time.Now().After(deadline) {
			break
		}
	}
	if missing := inOrder(out, want); missing != "" {
		t.Errorf("why mal@sender.test lacks %q:\n%s", missing, out)
	}
	if log, ok := n.DaemonLogWith("milterd", "antivirus=error", "antivirus_error="); !ok {
		t.Errorf("milterd logged no antivirus error:\n%s", log)
	}
}

// TestAntivirusE2EAcceptInboundOnly: on_failure accept and scan_outbound
// false. clamd down: mail from outside is delivered unscanned, and says so
// in milterd's log and metrics; an authenticated user's EICAR is not
// scanned at all.
func TestAntivirusE2EAcceptInboundOnly(t *testing.T) {
	c := startClamdE2E(t)
	d := spamtest.StartDNS(t, spamE2EZone)
	n := spamE2ENode(t, d.Addr, map[string]any{"antivirus": map[string]any{"address": c.Address, "on_failure": "accept", "scan_outbound": false}})

	if r := spamSend(t, n, "", "mal@sender.test", "alice@example.com", eicarMessage("mal@sender.test", "alice@example.com")); r.Code != 550 {
		t.Errorf("EICAR inbound: %v", r)
	}
	tr, err := harness.Send(n.Submission, harness.Envelope{StartTLS: true, AuthUser: "alice@example.com", AuthPass: "alicepass",
		From: "alice@example.com", To: []string{"x@outside.test"}, Data: eicarMessage("alice@example.com", "x@outside.test")})
	if err != nil || tr.Final.Code != 250 {
		t.Fatalf("EICAR outbound, scan_outbound false: %v %v", err, tr.Final)
	}
	n.WaitSink(t, 1)

	if err := c.Proc.Kill(); err != nil {
		t.Fatal(err)
	}
	msg := harness.NewMessage("x@sender.test", "alice@example.com", "unscanned", "clamd is down")
	if r := spamSend(t, n, "", "x@sender.test", "alice@example.com", msg); r.Code != 250 {
		t.Fatalf("clamd down, on_failure accept: %v", r)
	}
	if s := spamHeaders(t, n.WaitMaildir(t, "alice@example.com", 1)[0].Data).Get("Subject"); s != "unscanned" {
		t.Errorf("delivered: %q", s)
	}
	if log, ok := n.DaemonLogWith("milterd", "antivirus=error", "antivirus_error="); !ok {
		t.Errorf("milterd logged no antivirus error:\n%s", log)
	}
	signed := grepLines(n.DaemonLog("milterd"), "action=sign", 5)
	if signed == "" || strings.Contains(signed, "antivirus=") {
		t.Errorf("scan_outbound false: want a signed message, not scanned:\n%s", signed)
	}
}
