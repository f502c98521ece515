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

func newTestWhy() *Why {
	w := NewWhy(time.Date(2026, 12, 6, 0, 0, 0, 0, time.UTC))
	w.Now = time.Date(2026, 12, 6, 4, 0, 0, 0, time.UTC)
	w.Location = time.UTC
	return w
}

// readWhy is a test Why that has read file.
func readWhy(t *testing.T, file string) *Why {
	t.Helper()
	w := newTestWhy()
	if err := w.ReadFile(file); err != nil {
		t.Fatal(err)
	}
	return w
}

func stories(t *testing.T, w *Why, query string) string {
	t.Helper()
	var b bytes.Buffer
	for _, s := range w.Stories(query) {
		s.WriteTo(&b)
	}
	return b.String()
}

// wantLines checks that got holds every line of want, in that order.
func wantLines(t *testing.T, got string, want ...string) {
	t.Helper()
	rest := got
	for _, w := range want {
		i := strings.Index(rest, w)
		if i < 0 {
			t.Errorf("story lacks (or has out of order) %q:\n%s", w, got)
			return
		}
		rest = rest[i+len(w):]
	}
}

// testdata/why.log is what the end-to-end test's node wrote (Postfix's
// maillog file, policyd's and milterd's logs, concatenated; the instance's
// syslog name shortened to "postfix", and the GTUBE line given the
// spam_builtin and spam_symbols fields milterd writes since): a trusted
// client's message signed and delivered, an outside message greylisted and
// then delivered, a relay attempt refused by the matrix, GTUBE refused.
// The ham line keeps the older form without them, which why still reads.
func TestWhyStories(t *testing.T) {
	read := func() *Why { return readWhy(t, "testdata/why.log") }
	t.Run("signed and delivered", func(t *testing.T) {
		got := stories(t, read(), "4jhrxL1QGSz1SM6W")
		wantLines(t, got,
			"4jhrxL1QGSz1SM6W from=<bob@example.com> client=unknown[127.0.0.2] to=<alice@example.com>: <alice@example.com> sent\n",
			"03:55:50.196 policyd  RCPT to=<alice@example.com> cell=local/trust->local reason=authorized: DUNNO; ratelimit=within-limit\n",
			"smtpd    client=unknown[127.0.0.2]\n",
			"milterd  sign (trusted client, From domain local), header From: bob@example.com\n",
			"milterd  DKIM-signed: example.com/mx2026r/rsa, example.com/mx2026e/ed25519\n",
			"lmtp     to=<alice@example.com>, relay=mx1.example.com[private/dovecot-lmtp], status=sent (250 2.0.0",
			"qmgr     removed\n")
	})
	t.Run("greylisted then delivered", func(t *testing.T) {
		got := stories(t, read(), "4jhrxN2Ffbz1SKkF")
		wantLines(t, got,
			"4jhrxN2Ffbz1SKkF from=<news@sender.test> client=localhost[127.0.0.1] to=<alice@example.com>: <alice@example.com> sent\n",
			"  earlier: 2026-12-06 03:55:50 from=<news@sender.test> client=localhost[127.0.0.1] to=<alice@example.com>: 450 4.7.1 <alice@example.com>: Recipient address rejected: Greylisted, please try again in 2 seconds\n",
			"policyd  RCPT to=<alice@example.com> cell=outside/none->local reason=inbound: 450 4.7.1 Greylisted, please try again in 2 seconds; greylist=new (first time seen: deferred)\n",
			"03:55:52.317 policyd  RCPT to=<alice@example.com> cell=outside/none->local reason=inbound: DUNNO; spam_check=on; greylist=triplet-passed (retried after the delay: passed)\n",
			"milterd  Authentication-Results: spf=pass smtp.mailfrom=news@sender.test; dkim=none; dmarc=pass header.from=sender.test\n",
			"milterd  spam score -1.5 (builtin) -> deliver\n",
			"status=sent")
		if strings.Count(got, "policyd") != 2 {
			t.Errorf("want the earlier refusal's and this message's policyd lines only:\n%s", got)
		}
	})
	t.Run("spam", func(t *testing.T) {
		got := stories(t, read(), "4jhrxN2Hywz1SKqt")
		wantLines(t, got,
			"4jhrxN2Hywz1SKqt from=<news@sender.test> client=localhost[127.0.0.1] to=<alice@example.com>: milter-reject at END-OF-MESSAGE: 5.7.1 Message rejected as spam\n",
			"03:55:52.324 policyd  RCPT to=<alice@example.com>",
			"milterd  spam score 998.5 (builtin 998.5) -> reject (spam)\n",
			"milterd  symbols: MN_GTUBE(1000), MN_SPF_PASS(-0.5), MN_DMARC_PASS(-1)\n",
			"cleanup  milter-reject at END-OF-MESSAGE: 5.7.1 Message rejected as spam\n")
	})
	t.Run("address", func(t *testing.T) {
		got := stories(t, read(), "<NEWS@sender.test>")
		wantLines(t, got,
			"NOQUEUE from=<news@sender.test> client=localhost[127.0.0.1] to=<alice@example.com>: refused at RCPT: 450 4.7.1",
			"4jhrxN2Ffbz1SKkF from=<news@sender.test>",
			"NOQUEUE from=<news@sender.test> client=localhost[127.0.0.1] to=<x@elsewhere.test>: refused at RCPT: 550 5.7.1 <x@elsewhere.test>: Recipient address rejected: Sorry, relay for <x@elsewhere.test> not permitted\n",
			"policyd  RCPT to=<x@elsewhere.test> cell=outside/none->outside reason=relay-denied: 550 5.7.1 Sorry, relay for <x@elsewhere.test> not permitted\n",
			"4jhrxN2Hywz1SKqt from=<news@sender.test>")
		if strings.Contains(got, "bob@example.com") {
			t.Errorf("another sender's message in news@'s stories:\n%s", got)
		}
		if got := stories(t, read(), "alice@example.com"); strings.Count(got, "\n4jhr")+strings.Count(got, "\nNOQUEUE")+1 != 4 {
			t.Errorf("alice@: want 4 stories (3 messages, the greylisted attempt):\n%s", got)
		}
	})
	t.Run("unknown", func(t *testing.T) {
		if got := read().Stories("4NOSUCHQUEUEID"); len(got) != 0 {
			t.Errorf("%d stories for an unknown queue id", len(got))
		}
	})
}

// journalLog: Postfix with RFC 3339 stamps, the daemons' lines with a
// syslog prefix (as journalctl or rsyslog write them), a message of an
// authenticated user to two outside recipients, one deferred then bounced;
// policyd's second line carries the queue id.
const journalLog = `2026-12-06T10:00:01.100000+00:00 mx1 postfix/submission/smtpd[300]: connect from c.example.org[198.51.100.9]
2026-12-06T10:00:01.200000+00:00 mx1 mailnode-policyd[10]: 2026-12-06T10:00:01.210Z policyd queue_id="" client=c.example.org[198.51.100.9] sasl_user=alice@example.com from=<alice@example.com> to=<a@far.test> state=RCPT cell=local/auth->outside rcpt=1 action=DUNNO reason=authorized ratelimit=within-limit
2026-12-06T10:00:01.300000+00:00 mx1 postfix/submission/smtpd[300]: 4QID2xyz: client=c.example.org[198.51.100.9], sasl_method=PLAIN, sasl_username=alice@example.com
2026-12-06T10:00:01.300000+00:00 mx1 mailnode-policyd[10]: 2026-12-06T10:00:01.310Z policyd queue_id=4QID2xyz client=c.example.org[198.51.100.9] sasl_user=alice@example.com from=<alice@example.com> to=<b@gone.test> state=RCPT cell=local/auth->outside rcpt=2 action=DUNNO reason=authorized ratelimit=within-limit
2026-12-06T10:00:01.500000+00:00 mx1 mailnode-milterd[11]: time=2026-12-06T10:00:01.500Z level=INFO msg="milterd decision" queue_id=4QID2xyz client=198.51.100.9 origin=sasl sender=alice@example.com from=alice@example.com rcpts=2 action=sign reason="authenticated sender, From domain local" user=alice@example.com signed=example.com/s1/ed25519
2026-12-06T10:00:01.600000+00:00 mx1 postfix/qmgr[200]: 4QID2xyz: from=<alice@example.com>, size=900, nrcpt=2 (queue active)
2026-12-06T10:00:02.000000+00:00 mx1 postfix/smtp[400]: 4QID2xyz: to=<a@far.test>, relay=mx.far.test[203.0.113.5]:25, delay=0.9, delays=0.1/0/0.3/0.5, dsn=4.4.2, status=deferred (conversation with mx.far.test[203.0.113.5] timed out while receiving the initial server greeting)
2026-12-06T10:00:02.100000+00:00 mx1 postfix/smtp[401]: 4QID2xyz: to=<b@gone.test>, relay=mx.gone.test[203.0.113.6]:25, delay=1, delays=0.1/0/0.3/0.6, dsn=5.1.1, status=bounced (host mx.gone.test[203.0.113.6] said: 550 5.1.1 <b@gone.test>: User unknown (in reply to RCPT TO command))
2026-12-06T10:00:02.200000+00:00 mx1 postfix/bounce[402]: 4QID2xyz: sender non-delivery notification: 4QID3abc
`

func TestWhyJournalAndGzip(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "mail.log.2.gz")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	zw := gzip.NewWriter(f)
	zw.Write([]byte(journalLog))
	zw.Close()
	f.Close()
	w := newTestWhy()
	if err := w.ReadFile(path); err != nil {
		t.Fatal(err)
	}
	got := stories(t, w, "4QID2xyz")
	wantLines(t, got,
		"4QID2xyz from=<alice@example.com> client=c.example.org[198.51.100.9] to=<a@far.test>,<b@gone.test>: <a@far.test> deferred, <b@gone.test> bounced\n",
		"10:00:01.210 policyd  RCPT to=<a@far.test> sasl_user=alice@example.com cell=local/auth->outside reason=authorized: DUNNO; ratelimit=within-limit\n",
		"smtpd    client=c.example.org[198.51.100.9], sasl_method=PLAIN, sasl_username=alice@example.com\n",
		"10:00:01.310 policyd  RCPT to=<b@gone.test>",
		"milterd  sign (authenticated sender, From domain local), header From: alice@example.com, login alice@example.com\n",
		"milterd  DKIM-signed: example.com/s1/ed25519\n",
		"smtp     to=<a@far.test>, relay=mx.far.test[203.0.113.5]:25, status=deferred (conversation with",
		"smtp     to=<b@gone.test>, relay=mx.gone.test[203.0.113.6]:25, status=bounced (host mx.gone.test[203.0.113.6] said: 550 5.1.1",
		"bounce   sender non-delivery notification: 4QID3abc\n")

	// Lines before --since are left out.
	w = NewWhy(time.Date(2026, 12, 6, 10, 0, 2, 0, time.UTC))
	w.Location = time.UTC
	w.Read("journal", strings.NewReader(journalLog))
	if got := stories(t, w, "4QID2xyz"); strings.Contains(got, "policyd") || !strings.Contains(got, "status=bounced") {
		t.Errorf("--since: %s", got)
	}
}

// FuzzWhy: no line, however broken, makes Why panic or lose its stories.
func FuzzWhy(f *testing.F) {
	for _, l := range strings.Split(journalLog, "\n") {
		f.Add(l)
	}
	f.Add(`Dec  6 03:55:52 mx1 postfix/smtpd[1]: NOQUEUE: reject: RCPT from x[1.2.3.4]: 550 5.7.1 <a@b>: no; from=<> to=<a@b> proto=ESMTP`)
	f.Add(`2026-12-06T03:55:52.322Z policyd queue_id="" client=x[1.2.3.4] from=<a@b to=<c> state=RCPT action="550`)
	f.Add(`time=2026-12-06T03:55:52.326Z level=INFO msg="milterd decision" queue_id=Q spam_score=1 spam_symbols="A(1),`)
	f.Fuzz(func(t *testing.T, line string) {
		w := newTestWhy()
		w.Read("journal", strings.NewReader(journalLog))
		w.Add(line)
		var b bytes.Buffer
		for _, s := range w.Stories("alice@example.com") {
			s.WriteTo(&b)
		}
		if !strings.Contains(b.String(), "4QID2xyz from=<alice@example.com>") {
			t.Fatalf("the message's story went missing after %q:\n%s", line, b.String())
		}
	})
}

// TestWhyTwoMessagesASecondApart: the same client, sender and recipient in
// two sessions a second apart, as Postfix's whole-second time shows them.
// The first decision belongs to the first message, whose DATA ended before
// the second decision was made; the nearer start (the second message's)
// must not take it.
func TestWhyTwoMessagesASecondApart(t *testing.T) {
	log := `Dec 06 04:09:48 mx1 postfix/smtpd[8167]: connect from localhost[127.0.0.1]
2026-12-06T04:09:48.980Z policyd queue_id="" client=localhost[127.0.0.1] sasl_user="" from=<news@sender.test> to=<alice@example.com> state=RCPT cell=outside/none->local rcpt=1 action=DUNNO reason=inbound spam_check=on greylist=triplet-passed
Dec 06 04:09:48 mx1 postfix/smtpd[8167]: 4jhsFS74rhz1SHDN: client=localhost[127.0.0.1]
Dec 06 04:09:48 mx1 postfix/cleanup[8172]: 4jhsFS74rhz1SHDN: message-id=<a@client.test>
Dec 06 04:09:48 mx1 postfix/qmgr[8165]: 4jhsFS74rhz1SHDN: from=<news@sender.test>, size=458, nrcpt=1 (queue active)
time=2026-12-06T04:09:49.001Z level=INFO msg="milterd decision" queue_id=4jhsFS74rhz1SHDN client=127.0.0.1 origin=none sender=news@sender.test from=news@sender.test rcpts=1 action=verify reason="outside sender to a local recipient: spam check on" results="spf=pass smtp.mailfrom=news@sender.test; dkim=none; dmarc=pass header.from=sender.test" spam_score=-1.5 spam_engine=builtin disposition=deliver
Dec 06 04:09:48 mx1 postfix/smtpd[8167]: disconnect from localhost[127.0.0.1] ehlo=1 mail=1 rcpt=1 data=1 quit=1 commands=5
Dec 06 04:09:48 mx1 postfix/smtpd[8173]: connect from localhost[127.0.0.1]
2026-12-06T04:09:49.006Z policyd queue_id="" client=localhost[127.0.0.1] sasl_user="" from=<news@sender.test> to=<alice@example.com> state=RCPT cell=outside/none->local rcpt=1 action=DUNNO reason=inbound spam_check=on greylist=triplet-passed
Dec 06 04:09:49 mx1 postfix/smtpd[8173]: 4jhsFT02YVz1SHLY: client=localhost[127.0.0.1]
Dec 06 04:09:49 mx1 postfix/cleanup[8172]: 4jhsFT02YVz1SHLY: message-id=<b@client.test>
time=2026-12-06T04:09:49.020Z level=INFO msg="milterd decision" queue_id=4jhsFT02YVz1SHLY client=127.0.0.1 origin=none sender=news@sender.test from=news@sender.test rcpts=1 action=verify reason="outside sender to a local recipient: spam check on" results="spf=pass smtp.mailfrom=news@sender.test; dkim=none; dmarc=pass header.from=sender.test" spam_score=998.5 spam_engine=builtin disposition=reject disposition_reason=spam
Dec 06 04:09:49 mx1 postfix/cleanup[8172]: 4jhsFT02YVz1SHLY: milter-reject: END-OF-MESSAGE from localhost[127.0.0.1]: 5.7.1 Message rejected as spam; from=<news@sender.test> to=<alice@example.com> proto=ESMTP helo=<mx.sender.test>
Dec 06 04:09:49 mx1 postfix/lmtp[8174]: 4jhsFS74rhz1SHDN: to=<alice@example.com>, relay=mx1.example.com[private/dovecot-lmtp], delay=0.01, delays=0.01/0/0/0.01, dsn=2.0.0, status=sent (250 2.0.0 <alice@example.com> iEA3AA3gFGugHwAAg+zDdQ Saved)
Dec 06 04:09:49 mx1 postfix/qmgr[8165]: 4jhsFS74rhz1SHDN: removed
`
	w := newTestWhy()
	if err := w.Read("mail.log", strings.NewReader(log)); err != nil {
		t.Fatal(err)
	}
	first := stories(t, w, "4jhsFS74rhz1SHDN")
	if !strings.Contains(first, "04:09:48.980 policyd") || strings.Contains(first, "04:09:49.006 policyd") {
		t.Errorf("the first message's story has the wrong policyd line:\n%s", first)
	}
	second := stories(t, w, "4jhsFT02YVz1SHLY")
	if !strings.Contains(second, "04:09:49.006 policyd") || strings.Contains(second, "04:09:48.980 policyd") {
		t.Errorf("the second message's story has the wrong policyd line:\n%s", second)
	}
}

// TestWhyVirus: milterd's virus verdict and its reply in the story.
func TestWhyVirus(t *testing.T) {
	log := `Dec 06 04:10:00 mx1 postfix/smtpd[8167]: 4jhsVIRUS1z1SHDN: client=localhost[127.0.0.1]
time=2026-12-06T04:10:00.100Z level=INFO msg="milterd decision" queue_id=4jhsVIRUS1z1SHDN client=127.0.0.1 origin=none sender=x@sender.test from=x@sender.test rcpts=1 action=verify reason="outside sender to a local recipient: spam check on" results="spf=pass smtp.mailfrom=x@sender.test; dkim=none; dmarc=pass header.from=sender.test" spam_score=-1.5 spam_engine=builtin disposition=deliver spam_builtin=-1.5 antivirus=virus virus=Mailnode.Test.EICAR.UNOFFICIAL reply="550 5.7.1 Virus found: Mailnode.Test.EICAR.UNOFFICIAL"
Dec 06 04:10:00 mx1 postfix/cleanup[8172]: 4jhsVIRUS1z1SHDN: milter-reject: END-OF-MESSAGE from localhost[127.0.0.1]: 5.7.1 Virus found: Mailnode.Test.EICAR.UNOFFICIAL; from=<x@sender.test> to=<alice@example.com> proto=ESMTP helo=<mx.sender.test>
Dec 06 04:10:01 mx1 postfix/smtpd[8167]: 4jhsCLAMD1z1SHDN: client=localhost[127.0.0.1]
time=2026-12-06T04:10:01.100Z level=INFO msg="milterd decision" queue_id=4jhsCLAMD1z1SHDN client=127.0.0.1 origin=none sender=x@sender.test from=x@sender.test rcpts=1 action=verify reason="outside sender to a local recipient: spam check on" spam_score=-1.5 spam_engine=builtin disposition=deliver antivirus=error antivirus_error="clamd: dial unix /run/clamav/clamd.ctl: connect: no such file or directory" reply="451 4.7.1 Virus scan temporarily unavailable, try again later"
`
	w := newTestWhy()
	if err := w.Read("mail.log", strings.NewReader(log)); err != nil {
		t.Fatal(err)
	}
	wantLines(t, stories(t, w, "4jhsVIRUS1z1SHDN"),
		"milterd  virus scan: virus (Mailnode.Test.EICAR.UNOFFICIAL)\n",
		"milterd  refused: 550 5.7.1 Virus found: Mailnode.Test.EICAR.UNOFFICIAL\n")
	wantLines(t, stories(t, w, "4jhsCLAMD1z1SHDN"),
		"milterd  virus scan: error (clamd: dial unix /run/clamav/clamd.ctl: connect: no such file or directory)\n",
		"milterd  refused: 451 4.7.1 Virus scan temporarily unavailable, try again later\n")
}

// TestWhyPostfixSecondLagsTheClock: Postfix's whole-second stamp comes from
// a clock moved on once per tick, so cleanup's milter-reject line, written
// after milterd's decision at 01:05:19.000, said 01:05:18 in a CI
// run of the e2e test (TestWhyEndToEnd). The story still tells milterd's decision before
// cleanup's refusal; a decision later in the second stays after the lines
// of the second before.
func TestWhyPostfixSecondLagsTheClock(t *testing.T) {
	log := `Dec 06 04:05:18 mx1 postfix/smtpd[14802]: connect from localhost[127.0.0.1]
2026-12-06T04:05:18.999Z policyd queue_id="" client=localhost[127.0.0.1] sasl_user="" from=<news@sender.test> to=<alice@example.com> state=RCPT cell=outside/none->local rcpt=1 action=DUNNO reason=inbound spam_check=on greylist=triplet-passed
Dec 06 04:05:18 mx1 postfix/smtpd[14802]: 4jk13g0040z1SCKx: client=localhost[127.0.0.1]
Dec 06 04:05:18 mx1 postfix/cleanup[14800]: 4jk13g0040z1SCKx: message-id=<e2e-81@client.test>
time=2026-12-06T04:05:19.000Z level=INFO msg="milterd decision" queue_id=4jk13g0040z1SCKx client=127.0.0.1 origin=none sender=news@sender.test from=news@sender.test rcpts=1 action=verify reason="outside sender to a local recipient: spam check on" results="spf=pass smtp.mailfrom=news@sender.test; dkim=none; dmarc=pass header.from=sender.test" spam_score=998.5 spam_engine=builtin disposition=reject disposition_reason=spam
Dec 06 04:05:18 mx1 postfix/cleanup[14800]: 4jk13g0040z1SCKx: milter-reject: END-OF-MESSAGE from localhost[127.0.0.1]: 5.7.1 Message rejected as spam; from=<news@sender.test> to=<alice@example.com> proto=ESMTP helo=<mx.sender.test>
Dec 06 04:05:18 mx1 postfix/smtpd[14802]: disconnect from localhost[127.0.0.1] ehlo=1 mail=1 rcpt=1 data=0/1 quit=1 commands=4/5
`
	w := newTestWhy()
	if err := w.Read("mail.log", strings.NewReader(log)); err != nil {
		t.Fatal(err)
	}
	out := stories(t, w, "4jk13g0040z1SCKx")
	wantLines(t, out, " policyd ", " smtpd    client=", " cleanup  message-id=", " milterd  verify", " cleanup  milter-reject")

	// The same decision 20 ms into the second is not Postfix's lag: it
	// comes after everything stamped with the second before.
	late := strings.Replace(log, "04:05:19.000Z", "04:05:19.020Z", 1)
	w = newTestWhy()
	if err := w.Read("mail.log", strings.NewReader(late)); err != nil {
		t.Fatal(err)
	}
	out = stories(t, w, "4jk13g0040z1SCKx")
	wantLines(t, out, " cleanup  milter-reject", " milterd  verify")

	// Early in a second with no later step stamped the second before, the
	// decision stays in its own second, after the steps stamped with it
	// (a later CI run: the decision at 01:26:09.009, Postfix's client= and
	// message-id lines of the same moment stamped 01:26:09).
	early := `Dec 06 04:26:08 mx1 postfix/smtpd[6762]: connect from unknown[127.0.0.2]
2026-12-06T04:26:09.003Z policyd queue_id="" client=unknown[127.0.0.2] sasl_user="" from=<bob@example.com> to=<alice@example.com> state=RCPT cell=local/trust->local rcpt=1 action=DUNNO reason=authorized ratelimit=within-limit
Dec 06 04:26:09 mx1 postfix/smtpd[6762]: 4jk1Wj034Bz1SGZw: client=unknown[127.0.0.2]
Dec 06 04:26:09 mx1 postfix/cleanup[6768]: 4jk1Wj034Bz1SGZw: message-id=<e2e-79@client.test>
time=2026-12-06T04:26:09.009Z level=INFO msg="milterd decision" queue_id=4jk1Wj034Bz1SGZw client=127.0.0.2 origin=trust sender=bob@example.com from=bob@example.com rcpts=1 action=sign reason="trusted client, From domain local" signed=example.com/mx2026r/rsa
Dec 06 04:26:09 mx1 postfix/qmgr[6760]: 4jk1Wj034Bz1SGZw: from=<bob@example.com>, size=445, nrcpt=1 (queue active)
Dec 06 04:26:09 mx1 postfix/lmtp[6770]: 4jk1Wj034Bz1SGZw: to=<alice@example.com>, relay=mx1.example.com[private/dovecot-lmtp], delay=0.02, delays=0.01/0.01/0/0, dsn=2.0.0, status=sent (250 2.0.0 <alice@example.com> IPIyAbFcF2sjGgAAg+zDdQ Saved)
Dec 06 04:26:09 mx1 postfix/qmgr[6760]: 4jk1Wj034Bz1SGZw: removed
`
	w = newTestWhy()
	if err := w.Read("mail.log", strings.NewReader(early)); err != nil {
		t.Fatal(err)
	}
	out = stories(t, w, "4jk1Wj034Bz1SGZw")
	wantLines(t, out, " policyd ", " smtpd    client=", " cleanup  message-id=", " milterd  sign", " qmgr     from=", " lmtp ", " qmgr     removed")
}

// testdata/why-srs.log is what `make demo` logged (Postfix's maillog,
// policyd's and milterd's logs, the instance's syslog name shortened): an
// outside sender's message to sales@example.com, an alias with a member
// off the node, greylisted, then accepted with its envelope sender
// rewritten by SRS (qmgr's from= is the SRS address), and a bounce to that
// address reversed to the sender. The message is found by the sender it
// arrived with and by the alias, and keeps its first recipient's policyd
// line, which has no queue id and names the sender before the rewrite.
func TestWhyForwardedWithSRS(t *testing.T) {
	read := func() *Why { return readWhy(t, "testdata/why-srs.log") }
	const srs = "SRS0=qQZO=J3=outside.test=eve@example.com"
	message := []string{
		"4jk3pk5sTQzm4wJ from=<eve@outside.test> (sent on as <" + srs + ">) client=localhost[127.0.0.1] to=<carol@partner.org>,<alice@example.com>,<sales@example.com>: <carol@partner.org> sent, <alice@example.com> sent\n",
		"03:09:18.825 policyd  RCPT to=<sales@example.com> cell=outside/none->local reason=inbound: DUNNO; spam_check=on; greylist=triplet-passed (retried after the delay: passed)\n",
		"smtpd    client=localhost[127.0.0.1]\n",
		"milterd  envelope sender rewritten (SRS) to <" + srs + ">\n",
		"qmgr     from=<" + srs + ">",
		"smtp     to=<carol@partner.org>, orig_to=<sales@example.com>",
	}
	t.Run("by queue id", func(t *testing.T) {
		got := stories(t, read(), "4jk3pk5sTQzm4wJ")
		wantLines(t, got, message[0],
			"  earlier: 2026-12-06 03:08:57 from=<eve@outside.test> client=localhost[127.0.0.1] to=<sales@example.com>: 450 4.7.1")
		wantLines(t, got, message[1:]...)
	})
	for _, who := range []string{"eve@outside.test", "sales@example.com"} {
		t.Run("by "+who, func(t *testing.T) {
			got := stories(t, read(), who)
			wantLines(t, got, append([]string{"NOQUEUE from=<eve@outside.test> client=localhost[127.0.0.1] to=<sales@example.com>: refused at RCPT: 450 4.7.1"}, message...)...)
			if who == "eve@outside.test" {
				wantLines(t, got, "4jk3pn6XG6zm4wN from=<> client=localhost[127.0.0.1] to=<eve@outside.test>,<"+srs+">: <eve@outside.test> deferred\n")
			} else if strings.Contains(got, "4jk3pn6XG6zm4wN") {
				t.Errorf("the bounce to the sender is not sales@'s story:\n%s", got)
			}
		})
	}
	t.Run("by the SRS address", func(t *testing.T) {
		got := stories(t, read(), srs)
		wantLines(t, got, message[0], "4jk3pn6XG6zm4wN from=<>")
	})
}
