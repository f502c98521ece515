package milter

import (
	"context"
	"encoding/base64"
	"log/slog"
	"strings"
	"testing"

	"github.com/mailnode/mailnode/antivirus"
	"github.com/mailnode/mailnode/antivirus/clamdtest"
	"github.com/mailnode/mailnode/inventory"
	"github.com/mailnode/mailnode/test/harness"
)

// startClamd runs Debian's clamd with the EICAR test database.
func startClamd(t *testing.T) *clamdtest.Clamd {
	t.Helper()
	return clamdtest.StartT(t, clamdtest.Options{})
}

// eicarBody is a MIME body with the EICAR test file as a base64 attachment.
func eicarBody() (headers, body string) {
	headers = "From: X <x@sender.test>\nTo: bob@example.com\nSubject: invoice\nDate: Sun, 1 Mar 2026 11:00:00 +0000\n" +
		"Message-ID: <2@sender.test>\nMIME-Version: 1.0\nContent-Type: multipart/mixed; boundary=\"b1\""
	body = "--b1\r\nContent-Type: text/plain\r\n\r\nPlease see the attachment.\r\n--b1\r\n" +
		"Content-Type: application/octet-stream; name=invoice.com\r\nContent-Transfer-Encoding: base64\r\n\r\n" +
		base64.StdEncoding.EncodeToString([]byte(clamdtest.EICAR())) + "\r\n--b1--\r\n"
	return headers, body
}

func avFilter(t *testing.T, c *clamdtest.Clamd, onFailure string, outbound bool) (*Filter, *Metrics) {
	t.Helper()
	f, m := metricsFilter(t, nil)
	f.Antivirus = NewAntivirus(&inventory.Antivirus{Engine: "clamd", Address: c.Address, OnFailure: onFailure, ScanOutbound: &outbound})
	return f, m
}

// signedMsg runs an authenticated local user's message through f.
func signedMsg(f *Filter, body string) Result {
	tx := f.NewTransaction(Envelope{ClientAddr: "198.51.100.7", AuthUser: "alice@example.com", Sender: "alice@example.com"})
	defer tx.Close()
	tx.AddRcpt("carol@partner.org")
	h, _ := eicarBody()
	for _, l := range strings.Split(strings.ReplaceAll(h, "x@sender.test", "alice@example.com"), "\n") {
		k, v, _ := strings.Cut(l, ":")
		tx.Header(k, v)
	}
	if d := tx.EndOfHeaders(); d.Action != Sign {
		panic("not signed: " + d.Action.String())
	}
	tx.Body([]byte(body))
	return tx.End(context.Background())
}

func TestAntivirusInbound(t *testing.T) {
	c := startClamd(t)
	f, m := avFilter(t, c, "tempfail", true)
	r := (spamMsg{}).run(f)
	if r.Reject || r.TempFail || r.Decision.Antivirus.Result != AVClean {
		t.Fatalf("clean message: %+v", r)
	}
	h, b := eicarBody()
	r = spamMsg{headers: h, body: b}.run(f)
	want := ReplyVirus + clamdtest.VirusName
	if !r.Reject || r.Reply != want || r.Decision.Antivirus.Virus != clamdtest.VirusName {
		t.Fatalf("EICAR: reject %v reply %q, %+v; want %q", r.Reject, r.Reply, r.Decision.Antivirus, want)
	}
	if got := counter(t, m, "mailnode_milter_antivirus_scans_total", "result", "clean"); got != 1 {
		t.Errorf("clean scans %v", got)
	}
	if got := counter(t, m, "mailnode_milter_antivirus_scans_total", "result", "virus"); got != 1 {
		t.Errorf("virus scans %v", got)
	}
	if got := counter(t, m, "mailnode_milter_antivirus_seconds", "engine", "clamd", "result", "ok"); got != 2 {
		t.Errorf("clamd answers timed: %v", got)
	}
}

func TestAntivirusOutbound(t *testing.T) {
	c := startClamd(t)
	_, body := eicarBody()
	f, _ := avFilter(t, c, "tempfail", true)
	if r := signedMsg(f, body); !r.Reject || r.Reply != ReplyVirus+clamdtest.VirusName {
		t.Errorf("scan_outbound true, EICAR signed: %+v", r)
	}
	if r := signedMsg(f, "Hello\r\n"); r.Reject || r.TempFail || len(r.Decision.Signed) == 0 || r.Decision.Antivirus.Result != AVClean {
		t.Errorf("scan_outbound true, clean: %+v", r)
	}
	f, m := avFilter(t, c, "tempfail", false)
	if r := signedMsg(f, body); r.Reject || r.Decision.Antivirus.Result != "" || len(r.Decision.Signed) == 0 {
		t.Errorf("scan_outbound false: %+v", r)
	}
	if got := counter(t, m, "mailnode_milter_antivirus_scans_total", "result", "clean"); got != 0 {
		t.Errorf("scan_outbound false, but %v scans", got)
	}
}

// TestAntivirusFailure: clamd gone, on_failure tempfail and accept; and
// shadow mode, which refuses nothing.
func TestAntivirusFailure(t *testing.T) {
	c := startClamd(t)
	h, b := eicarBody()

	shadow, _ := avFilter(t, c, "tempfail", true)
	shadow.Shadow = true
	if r := (spamMsg{headers: h, body: b}).run(shadow); r.Reject || r.TempFail || r.Decision.WouldReject != ReplyVirus+clamdtest.VirusName || r.Decision.WouldReason != ReasonVirus {
		t.Errorf("shadow mode, EICAR: %+v", r)
	}

	// f keeps a clamd session from a first scan: after the kill it is
	// dead, and so is clamd.
	f, m := avFilter(t, c, "tempfail", true)
	if r := (spamMsg{}).run(f); r.Decision.Antivirus.Result != AVClean || f.Antivirus.Clamd.Idle() != 1 {
		t.Fatalf("before the kill: %+v, %d idle sessions", r.Decision.Antivirus, f.Antivirus.Clamd.Idle())
	}
	if err := c.Proc.Kill(); err != nil {
		t.Fatal(err)
	}
	r := (spamMsg{headers: h, body: b}).run(f)
	if !r.TempFail || r.Reject || r.Reply != ReplyAntivirus || r.Decision.Antivirus.Result != AVError || r.Decision.Antivirus.Err == "" {
		t.Errorf("clamd down, tempfail: %+v", r)
	}
	f, m2 := avFilter(t, c, "accept", true)
	r = (spamMsg{headers: h, body: b}).run(f)
	if r.TempFail || r.Reject || r.Decision.Antivirus.Result != AVError {
		t.Errorf("clamd down, accept: %+v", r)
	}
	if counter(t, m, "mailnode_milter_antivirus_scans_total", "result", "clean") != 1 {
		t.Error("the scan before the kill not counted")
	}
	for _, m := range []*Metrics{m, m2} {
		if counter(t, m, "mailnode_milter_antivirus_scans_total", "result", "error") != 1 ||
			counter(t, m, "mailnode_milter_errors_total", "kind", ErrKindAV) != 1 ||
			counter(t, m, "mailnode_milter_antivirus_seconds", "engine", "clamd", "result", "error") != 1 {
			t.Error("clamd down: error not counted")
		}
	}

	if err := c.Restart(); err != nil {
		t.Fatal(err)
	}
	f.Metrics = nil // counted above
	if r := (spamMsg{}).run(f); r.TempFail || r.Decision.Antivirus.Result != AVClean {
		t.Errorf("clamd back: %+v", r)
	}
}

// TestAntivirusLogLine: the decision line carries the verdict in fields
// maillog reads.
func TestAntivirusLogLine(t *testing.T) {
	c := startClamd(t)
	f, _ := avFilter(t, c, "tempfail", true)
	buf := &harness.SyncBuffer{}
	f.Log = slog.New(slog.NewTextHandler(buf, nil))
	h, b := eicarBody()
	(spamMsg{headers: h, body: b}).run(f)
	line := buf.String()
	for _, want := range []string{"antivirus=virus", "virus=" + clamdtest.VirusName, `reply="` + ReplyVirus + clamdtest.VirusName + `"`} {
		if !strings.Contains(line, want) {
			t.Errorf("decision line without %s:\n%s", want, line)
		}
	}
	if antivirus.ReplyName(clamdtest.VirusName) != clamdtest.VirusName {
		t.Error("the test signature's name must pass into the reply unchanged")
	}
}
