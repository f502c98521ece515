package maillog

import (
	"bytes"
	"compress/gzip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// shadowLog is a mail log as the daemons write it in shadow mode, with
// lines that must not count: accepted decisions, enforce-mode refusals,
// other programs, a line before --since, one with a syslog prefix.
const shadowLog = `2026-11-24T09:00:00.000Z policyd queue_id=OLD client=old[192.0.2.1] sasl_user="" from=<eve@example.org> to=<frank@example.org> state=RCPT cell=outside/none->outside rcpt=1 action=DUNNO reason=relay-denied would_reject="550 5.7.1 Sorry, relay for <frank@example.org> not permitted"
2026-11-24T16:03:05.123Z policyd queue_id=4XyZ1 client=mail.client.test[198.51.100.7] sasl_user="" from=<eve@example.org> to=<frank@example.org> state=RCPT cell=outside/none->outside rcpt=1 action=DUNNO reason=relay-denied would_reject="550 5.7.1 Sorry, relay for <frank@example.org> not permitted"
2026-11-24T16:03:06.000Z policyd queue_id=4XyZ2 client=unknown[198.51.100.8] sasl_user="" from=<eve@example.org> to=<bob@example.com> state=RCPT cell=outside/none->local rcpt=1 action=DUNNO reason=inbound spam_check=on
2026-11-24T16:03:07.000Z policyd queue_id=4XyZ3 client=unknown[198.51.100.8] sasl_user="" from=<eve@example.org> to=<x@elsewhere.test> state=RCPT cell=outside/none->outside rcpt=1 action="550 5.7.1 Sorry, relay for <x@elsewhere.test> not permitted" reason=relay-denied
Nov 24 16:03:08 mx1 mailnode[812]: 2026-11-24T16:03:08.000Z policyd queue_id=4XyZ4 client=unknown[198.51.100.9] sasl_user="" from=<a b@x.test> to=<y>z@elsewhere.test> state=RCPT cell=outside/none->outside rcpt=2 action=DUNNO reason=relay-denied would_reject="550 5.7.1 Sorry, relay for <y>z@elsewhere.test> not permitted"
2026-11-24T16:04:00.000Z policyd queue_id=4XyZ5 client=unknown[198.51.100.8] sasl_user="" from=<alice@example.com> to=<bob@example.com> state=RCPT cell=local/none->local rcpt=1 action=DUNNO reason=auth-required would_reject="550 5.7.1 Please authenticate for send mail from domain <example.com>"
2026-11-24T16:04:01.000Z policyd queue_id="" client=unknown[198.51.100.8] sasl_user="" from=<eve@example.org> to=<bob@example.com> state=RCPT cell=outside/none->local rcpt=1 action=DUNNO reason=inbound greylist=new would_reject="450 4.7.1 Greylisted, please try again in 300 seconds"
2026-11-24T16:04:02.000Z policyd queue_id="" client=unknown[10.20.1.1] sasl_user="" from=<bob@example.com> to=<x@elsewhere.test> state=RCPT cell=local/trust->outside rcpt=1 action=DUNNO reason=authorized ratelimit=over-messages would_reject="450 4.7.1 Rate limit exceeded for <10.20.1.1>, try again later"
time=2026-11-24T16:05:00.000Z level=INFO msg="milterd decision" queue_id=4M1 client=198.51.100.7 origin=none sender=eve@example.org from=eve@example.org rcpts=1 action=verify reason="outside sender to a local recipient: spam check on" results="spf=none" spam_score=1000 spam_engine=builtin disposition=reject disposition_reason="spam score at or above reject_score" mode=shadow cell=outside/none->local would_reject="550 5.7.1 Message rejected as spam"
time=2026-11-24T16:05:01.000Z level=INFO msg="milterd decision" queue_id=4M2 client=198.51.100.7 origin=sasl sender=alice@example.com from=bob@example.com rcpts=2 action=sign reason="authenticated sender, From domain local" user=alice@example.com mode=shadow cell=local/auth->local+outside would_reason="sender_login strict: a From address the login does not own" would_reject="550 5.7.1 Please use own mail service for send mail from <bob@example.com>"
time=2026-11-24T16:05:02.000Z level=INFO msg="milterd decision" queue_id=4M3 client=198.51.100.7 origin=none sender=eve@example.org from=eve@example.org rcpts=1 action=verify reason="outside sender to a local recipient: spam check on" disposition=deliver
Nov 24 16:05:03 mx1 postfix/smtpd[99]: NOQUEUE: reject: RCPT from unknown[127.0.0.1]: 554 5.7.1 <x@y>: Relay access denied; would_reject
`

func TestParseRefusal(t *testing.T) {
	lines := strings.Split(strings.TrimSpace(shadowLog), "\n")
	want := []*Refusal{
		{Daemon: "policyd", Cell: "outside/none->outside", Reason: "relay-denied", Reply: "550 5.7.1 Sorry, relay for <frank@example.org> not permitted"},
		{Daemon: "policyd", Cell: "outside/none->outside", Reason: "relay-denied", Reply: "550 5.7.1 Sorry, relay for <frank@example.org> not permitted",
			Context: "queue_id=4XyZ1 client=mail.client.test[198.51.100.7] from=<eve@example.org> to=<frank@example.org>"},
		nil, nil,
		{Daemon: "policyd", Cell: "outside/none->outside", Reason: "relay-denied", Reply: "550 5.7.1 Sorry, relay for <y>z@elsewhere.test> not permitted",
			Context: "queue_id=4XyZ4 client=unknown[198.51.100.9] from=<a b@x.test> to=<y>z@elsewhere.test>"},
		{Daemon: "policyd", Cell: "local/none->local", Reason: "auth-required", Reply: "550 5.7.1 Please authenticate for send mail from domain <example.com>"},
		{Daemon: "policyd", Cell: "outside/none->local", Reason: "greylist-new", Reply: "450 4.7.1 Greylisted, please try again in 300 seconds"},
		{Daemon: "policyd", Cell: "local/trust->outside", Reason: "ratelimit-over-messages", Reply: "450 4.7.1 Rate limit exceeded for <10.20.1.1>, try again later"},
		{Daemon: "milterd", Cell: "outside/none->local", Reason: "spam score at or above reject_score", Reply: "550 5.7.1 Message rejected as spam",
			Context: "queue_id=4M1 client=198.51.100.7 from=<eve@example.org> header_from=eve@example.org rcpts=1"},
		{Daemon: "milterd", Cell: "local/auth->local+outside", Reason: "sender_login strict: a From address the login does not own",
			Reply:   "550 5.7.1 Please use own mail service for send mail from <bob@example.com>",
			Context: "queue_id=4M2 client=198.51.100.7 user=alice@example.com from=<alice@example.com> header_from=bob@example.com rcpts=2"},
		nil, nil,
	}
	if len(lines) != len(want) {
		t.Fatalf("%d lines, %d wanted", len(lines), len(want))
	}
	for i, ln := range lines {
		got, ok := ParseRefusal(ln)
		if w := want[i]; w == nil {
			if ok {
				t.Errorf("line %d taken for a refusal: %+v", i+1, got)
			}
			continue
		}
		w := want[i]
		if !ok || got.Daemon != w.Daemon || got.Cell != w.Cell || got.Reason != w.Reason || got.Reply != w.Reply ||
			(w.Context != "" && got.Context != w.Context) || got.Time.IsZero() {
			t.Errorf("line %d:\n got %+v\nwant %+v", i+1, got, *w)
		}
	}
}

func TestReport(t *testing.T) {
	dir := t.TempDir()
	// The log split as logrotate leaves it: the oldest part compressed.
	lines := strings.SplitAfter(shadowLog, "\n")
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.Write([]byte(strings.Join(lines[:4], "")))
	zw.Close()
	os.WriteFile(filepath.Join(dir, "mail.log.2.gz"), gz.Bytes(), 0o644)
	os.WriteFile(filepath.Join(dir, "mail.log"), []byte(strings.Join(lines[4:], "")), 0o644)

	rp := NewReport(time.Date(2026, 11, 24, 10, 0, 0, 0, time.UTC))
	for _, f := range []string{"mail.log.2.gz", "mail.log"} {
		if err := rp.ReadFile(filepath.Join(dir, f)); err != nil {
			t.Fatal(err)
		}
	}
	var out bytes.Buffer
	rp.WriteTo(&out)
	want := `Shadow mode since 2026-11-24T10:00:00Z: 7 would have been refused or held, in 6 group(s); 12 log lines read.

COUNT  DAEMON   CELL                       REASON                                                      ENFORCE MODE WOULD ANSWER (first example)
    2  policyd  outside/none->outside      relay-denied                                                550 5.7.1 Sorry, relay for <frank@example.org> not permitted
    1  policyd  local/none->local          auth-required                                               550 5.7.1 Please authenticate for send mail from domain <example.com>
    1  policyd  local/trust->outside       ratelimit-over-messages                                     450 4.7.1 Rate limit exceeded for <10.20.1.1>, try again later
    1  policyd  outside/none->local        greylist-new                                                450 4.7.1 Greylisted, please try again in 300 seconds
    1  milterd  local/auth->local+outside  sender_login strict: a From address the login does not own  550 5.7.1 Please use own mail service for send mail from <bob@example.com>
    1  milterd  outside/none->local        spam score at or above reject_score                         550 5.7.1 Message rejected as spam

policyd outside/none->outside relay-denied (2):
  2026-11-24T16:03:05.123Z queue_id=4XyZ1 client=mail.client.test[198.51.100.7] from=<eve@example.org> to=<frank@example.org>
    550 5.7.1 Sorry, relay for <frank@example.org> not permitted
  2026-11-24T16:03:08.000Z queue_id=4XyZ4 client=unknown[198.51.100.9] from=<a b@x.test> to=<y>z@elsewhere.test>
    550 5.7.1 Sorry, relay for <y>z@elsewhere.test> not permitted
`
	if got := out.String(); !strings.HasPrefix(got, want) {
		t.Errorf("report:\n%s\nwant it to start with\n%s", got, want)
	}
	if n := strings.Count(out.String(), "\n    5"); n != 5 {
		t.Errorf("%d examples with a 5xx reply, want 5 (two 450s among 7):\n%s", n, out.String())
	}
}

func TestParseRefusalNullSender(t *testing.T) {
	r, ok := ParseRefusal(`2026-11-24T16:03:05.123Z policyd queue_id="" client=x[192.0.2.1] sasl_user="" from=<> to=<f@y.test> state=RCPT cell=outside/none->outside rcpt=1 action=DUNNO reason=relay-denied would_reject="550 5.7.1 Sorry, relay for <f@y.test> not permitted"`)
	if !ok || r.Context != "client=x[192.0.2.1] from=<> to=<f@y.test>" {
		t.Errorf("%v %+v", ok, r)
	}
}

func TestReportExamplesCapped(t *testing.T) {
	rp := NewReport(time.Time{})
	line := `2026-11-24T16:03:05.123Z policyd client=x[192.0.2.1] sasl_user="" from=<e@x.test> to=<f@y.test> state=RCPT cell=outside/none->outside rcpt=1 action=DUNNO reason=relay-denied would_reject="550 5.7.1 Sorry, relay for <f@y.test> not permitted"` + "\n"
	rp.Read("stdin", strings.NewReader(strings.Repeat(line, 10)))
	if len(rp.Groups) != 1 || rp.Groups[0].Count != 10 || len(rp.Groups[0].Examples) != MaxExamples {
		t.Fatalf("groups %+v", rp.Groups)
	}
}
