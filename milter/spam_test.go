package milter

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	gomilter "github.com/d--j/go-milter"
	"github.com/mailnode/mailnode/acl"
	"github.com/mailnode/mailnode/dkim"
	"github.com/mailnode/mailnode/inventory"
	"github.com/mailnode/mailnode/milter/miltertest"
	"github.com/mailnode/mailnode/resolver"
	"github.com/mailnode/mailnode/spam"
	"github.com/mailnode/mailnode/spam/spamtest"
)

// TestSpamCheckMatrix: milterd turns spam checking on exactly where
// the ACL matrix (package acl, as policyd applies it) does, cell by cell:
// every sender class (and the null sender) times every authorization times
// every recipient class. Where the matrix accepts, its verdict says whether
// milterd must check; the milter must agree with it, and with acl.SpamCheck
// everywhere.
func TestSpamCheckMatrix(t *testing.T) {
	inv := testInventory(t)
	senders := map[string]string{"outside": "x@sender.test", "local": "alice@example.com", "relay": "carol@partner.org", "null": ""}
	auths := []struct {
		name       string
		client     string
		user       string
		origin     Origin
		policyAuth inventory.Auth
	}{
		{"none", "198.51.100.7", "", OriginNone, inventory.AuthNone},
		{"sasl", "198.51.100.7", "alice@example.com", OriginSASL, inventory.AuthSASL},
		{"trust", "10.20.1.1", "", OriginTrust, inventory.AuthTrust},
	}
	rcpts := map[inventory.Class]string{inventory.Local: "bob@example.com", inventory.Relay: "dave@partner.org", inventory.Outside: "eve@elsewhere.test"}
	on := 0
	for sname, sender := range senders {
		for _, a := range auths {
			for rc, rcpt := range rcpts {
				f := &Filter{Policy: inv, Hostname: inv.Node.Hostname}
				tx := f.NewTransaction(Envelope{ClientAddr: a.client, AuthUser: a.user, Sender: sender})
				tx.AddRcpt(rcpt)
				tx.Header("From", " "+map[bool]string{true: "MAILER-DAEMON@sender.test", false: sender}[sender == ""])
				d := tx.EndOfHeaders()
				tx.Close()

				v := acl.Decide(acl.Envelope{ClientAddress: a.client, SASLUsername: a.user,
					Sender: sender, Recipient: rcpt}, inv, acl.Options{})
				cell := fmt.Sprintf("%s/%s->%s", sname, a.name, rc)
				if d.SpamCheck != acl.SpamCheck(v.Cell) {
					t.Errorf("%s: milter spam check %v, acl.SpamCheck(%v) %v", cell, d.SpamCheck, v.Cell, acl.SpamCheck(v.Cell))
				}
				if v.Action == acl.Accept && d.SpamCheck != v.SpamCheck {
					t.Errorf("%s: the matrix accepts with spam check %v, milter says %v", cell, v.SpamCheck, d.SpamCheck)
				}
				if d.SpamCheck != (d.Action == Verify) {
					t.Errorf("%s: spam check %v but action %v", cell, d.SpamCheck, d.Action)
				}
				want := (sname == "outside" || sname == "null") && a.name == "none" && rc == inventory.Local
				if d.SpamCheck != want {
					t.Errorf("%s: spam check %v, docs/design.md's matrix says %v", cell, d.SpamCheck, want)
				}
				if d.SpamCheck {
					on++
				}
			}
		}
	}
	if on != 2 {
		t.Errorf("%d cells checked, want 2 (outside and null sender, unauthorized, to local)", on)
	}
}

// Mixed recipients: checked when any recipient's cell is checked.
func TestSpamCheckMixedRecipients(t *testing.T) {
	inv := testInventory(t)
	cases := []struct {
		rcpts []string
		want  bool
	}{
		{[]string{"bob@example.com", "dave@partner.org"}, true},
		{[]string{"dave@partner.org", "bob@example.com"}, true},
		{[]string{"dave@partner.org", "eve@elsewhere.test"}, false},
		{[]string{"dave@partner.org"}, false},
		{[]string{"all-staff@example.com"}, true},
	}
	for _, c := range cases {
		f := &Filter{Policy: inv, Hostname: inv.Node.Hostname}
		tx := f.NewTransaction(Envelope{ClientAddr: "198.51.100.7", Sender: "x@sender.test"})
		for _, r := range c.rcpts {
			tx.AddRcpt(r)
		}
		if d := tx.EndOfHeaders(); d.SpamCheck != c.want {
			t.Errorf("%v: spam check %v, want %v", c.rcpts, d.SpamCheck, c.want)
		}
		tx.Close()
	}
}

// fakeEngine is a unit-test engine: it answers what it is told and counts
// calls. The real rspamd and spamd are tested in package spam and end to end.
type fakeEngine struct {
	mu    sync.Mutex
	calls int
	data  []byte
	trunc bool
	rep   *spam.Report
	err   error
}

func (e *fakeEngine) Name() string { return "fake" }
func (e *fakeEngine) Check(_ context.Context, m *spam.Message) (*spam.Report, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.calls++
	e.data = append([]byte(nil), m.Data...)
	e.trunc = m.Truncated
	if e.err != nil {
		return nil, e.err
	}
	return e.rep, nil
}

const spamZone = `
sender.test.          IN TXT "v=spf1 ip4:198.51.100.0/24 -all"
mx.sender.test.       IN TXT "v=spf1 ip4:198.51.100.0/24 -all"
_dmarc.sender.test.   IN TXT "v=DMARC1; p=reject"
strict.test.          IN TXT "v=spf1 ip4:203.0.113.1 -all"
_dmarc.strict.test.   IN TXT "v=DMARC1; p=reject"
lax.test.             IN TXT "v=spf1 ip4:203.0.113.1 -all"
_dmarc.lax.test.      IN TXT "v=DMARC1; p=quarantine"
66.100.51.198.bl.test. IN A 127.0.0.2
`

// spamFilter is the test Filter with the whole inbound chain, its DNS
// answered by an in-process server, and eng as the engine (nil: builtin).
func spamFilter(t *testing.T, eng spam.Engine, edit func(*inventory.Spam)) *Filter {
	t.Helper()
	d := spamtest.StartDNS(t, spamZone)
	f, _ := testFilter(t)
	inv := testInventory(t)
	inv.Spam.DNSBL = []string{"bl.test"}
	if edit != nil {
		edit(&inv.Spam)
	}
	rc := resolver.NewClient(d.Addr, time.Second)
	t.Cleanup(func() { rc.Close() }) // its sockets go with the test, not at some later test's count
	f.Checks = InboundChecks(inv, rc, testDNS(t).LookupTXT)
	sc := f.Checks[len(f.Checks)-1].(*SpamCheck)
	sc.Now = func() time.Time { return fixedNow }
	if eng != nil {
		sc.Engine = eng
	}
	return f
}

type spamMsg struct {
	client, sender, helo string
	rcpts                []string
	headers              string
	body                 string
}

func (m spamMsg) run(f *Filter) Result {
	if m.client == "" {
		m.client = "198.51.100.7"
	}
	if m.sender == "" {
		m.sender = "x@sender.test"
	}
	if m.rcpts == nil {
		m.rcpts = []string{"bob@example.com"}
	}
	if m.headers == "" {
		m.headers = "From: X <x@sender.test>\nTo: bob@example.com\nSubject: hello\nDate: Sun, 1 Mar 2026 11:00:00 +0000\nMessage-ID: <1@sender.test>"
	}
	if m.body == "" {
		m.body = "Hello Bob,\r\nsee you at noon.\r\n"
	}
	tx := f.NewTransaction(Envelope{ClientAddr: m.client, Sender: m.sender, Helo: m.helo})
	defer tx.Close()
	for _, r := range m.rcpts {
		tx.AddRcpt(r)
	}
	for _, l := range strings.Split(m.headers, "\n") {
		k, v, _ := strings.Cut(l, ":")
		tx.Header(k, v)
	}
	tx.EndOfHeaders()
	// Stream the body in small chunks, as Postfix would in larger ones.
	b := []byte(m.body)
	for len(b) > 0 {
		n := min(7, len(b))
		tx.Body(b[:n])
		b = b[n:]
	}
	return tx.End(context.Background())
}

// changes renders the header changes as lines for comparison.
func changes(r Result) []string {
	var out []string
	for _, c := range r.Changes {
		v := strings.Join(strings.Fields(c.Value), " ")
		switch {
		case c.Delete:
			out = append(out, fmt.Sprintf("delete %s#%d", c.Name, c.Index))
		case c.Replace:
			out = append(out, fmt.Sprintf("replace %s#%d: %s", c.Name, c.Index, v))
		default:
			out = append(out, fmt.Sprintf("insert@%d %s: %s", c.Index, c.Name, v))
		}
	}
	return out
}

func header(r Result, name string) string {
	for _, c := range r.Changes {
		if !c.Delete && strings.EqualFold(c.Name, name) {
			return strings.Join(strings.Fields(c.Value), " ")
		}
	}
	return ""
}

func TestChain(t *testing.T) {
	gtube := "Test:\r\n" + spam.GTUBE + "\r\n"
	cases := []struct {
		name    string
		eng     *fakeEngine
		edit    func(*inventory.Spam)
		msg     spamMsg
		disp    Disposition
		reply   string
		hold    string
		ar      string // Authentication-Results, whitespace collapsed
		status  string // X-Spam-Status prefix
		symbols string // must be in X-Spam-Symbols
		subject string // the Subject change, "" for none
		calls   int
	}{
		{
			name: "clean, builtin", msg: spamMsg{},
			disp:   Deliver,
			ar:     "mx1.example.com; spf=pass smtp.mailfrom=x@sender.test; dkim=none; dmarc=pass header.from=sender.test",
			status: "No, score=-1.5 tag=5 reject=15 engine=builtin", symbols: "MN_SPF_PASS(-0.5), MN_DMARC_PASS(-1)",
		},
		{
			name: "GTUBE, builtin", msg: spamMsg{body: gtube},
			disp: Reject, reply: ReplySpam, symbols: "MN_GTUBE(1000)",
		},
		{
			name: "GTUBE, quarantine", msg: spamMsg{body: gtube}, edit: func(s *inventory.Spam) { s.Quarantine = true },
			disp: Quarantine, hold: QuarantineSpam, status: "Yes, score=998.5", subject: "replace Subject#1: [SPAM] hello",
		},
		{
			name: "DNSBL-listed client tags", msg: spamMsg{client: "198.51.100.66"},
			disp: Tag, status: "Yes, score=5.5", symbols: "MN_DNSBL_BL_TEST(7)", subject: "replace Subject#1: [SPAM] hello",
		},
		{
			name: "DNSBL-listed client rejected with a lower reject_score", msg: spamMsg{client: "198.51.100.66"},
			edit: func(s *inventory.Spam) { s.TagScore, s.RejectScore = 2, 3 },
			disp: Reject, reply: ReplySpam,
		},
		{
			name: "DMARC p=reject fails: 550", msg: spamMsg{sender: "x@elsewhere.test", headers: "From: ceo@strict.test\nSubject: pay\nDate: Sun, 1 Mar 2026 11:00:00 +0000\nMessage-ID: <2@x>"},
			disp: Reject, reply: ReplyDMARC + "<strict.test>",
		},
		{
			name: "DMARC p=reject fails, quarantine", msg: spamMsg{sender: "x@elsewhere.test", headers: "From: ceo@strict.test\nSubject: pay\nDate: Sun, 1 Mar 2026 11:00:00 +0000\nMessage-ID: <2@x>"},
			edit: func(s *inventory.Spam) { s.Quarantine = true },
			disp: Quarantine, hold: QuarantineDMRC,
			ar:     "mx1.example.com; spf=none reason=\"no DNS record found\" smtp.mailfrom=x@elsewhere.test; dkim=none; dmarc=fail reason=\"p=reject dis=reject\" header.from=strict.test",
			status: "Yes, score=6 tag=5 reject=15 engine=builtin", symbols: "MN_DMARC_QUARANTINE(6)", subject: "replace Subject#1: [SPAM] pay",
		},
		{
			name: "DMARC p=quarantine fails: tagged", msg: spamMsg{sender: "x@elsewhere.test", headers: "From: a@lax.test\nSubject: hi\nDate: Sun, 1 Mar 2026 11:00:00 +0000\nMessage-ID: <3@x>"},
			disp: Tag, status: "Yes, score=6", symbols: "MN_DMARC_QUARANTINE(6)", subject: "replace Subject#1: [SPAM] hi",
		},
		{
			name: "SPF fail", msg: spamMsg{client: "192.0.2.9", headers: "From: a@other.test\nSubject: hi\nDate: Sun, 1 Mar 2026 11:00:00 +0000\nMessage-ID: <4@x>"},
			disp: Deliver, status: "No, score=3", symbols: "MN_SPF_FAIL(3)",
		},
		{
			name: "engine score added to builtin", eng: &fakeEngine{rep: &spam.Report{Score: 6, Action: "no action", Symbols: []spam.Symbol{{Name: "BAYES_SPAM", Score: 6, HasScore: true}}}},
			msg:  spamMsg{headers: "From: x@sender.test\nSubject: hi\nDate: Sun, 1 Mar 2026 11:00:00 +0000"}, // no Message-ID: +1
			disp: Tag, status: "Yes, score=5.5 tag=5 reject=15 engine=fake action=\"no action\"", symbols: "MN_MISSING_MID(1), MN_SPF_PASS(-0.5), MN_DMARC_PASS(-1), BAYES_SPAM(6)",
			subject: "replace Subject#1: [SPAM] hi", calls: 1,
		},
		{
			name: "engine action reject", eng: &fakeEngine{rep: &spam.Report{Score: 0, Action: "reject"}},
			disp: Reject, reply: ReplySpam, calls: 1,
		},
		{
			name: "engine action add header", eng: &fakeEngine{rep: &spam.Report{Score: 1, Action: "add header"}},
			disp: Tag, status: "Yes, score=-0.5", subject: "replace Subject#1: [SPAM] hello", calls: 1,
		},
		{
			name: "engine soft reject", eng: &fakeEngine{rep: &spam.Report{Score: 1, Action: "soft reject"}},
			disp: TempFail, reply: ReplySoftSpam, calls: 1,
		},
		{
			name: "engine greylist is ignored", eng: &fakeEngine{rep: &spam.Report{Score: 1, Action: "greylist"}},
			disp: Deliver, status: "No, score=-0.5 tag=5 reject=15 engine=fake action=\"greylist\"", calls: 1,
		},
		{
			name: "engine down, accept with header", eng: &fakeEngine{err: fmt.Errorf("%w: rspamd: connection refused", spam.ErrEngine)},
			disp: Deliver, status: "No, score=-1.5 tag=5 reject=15 engine=fake engine_error=\"spam: engine failed: rspamd: connection refused\"", calls: 1,
		},
		{
			name: "engine down, tempfail", eng: &fakeEngine{err: fmt.Errorf("%w: spamd: i/o timeout", spam.ErrEngine)},
			edit: func(s *inventory.Spam) { s.OnEngineFailure = "tempfail" },
			disp: TempFail, reply: ReplyEngine, calls: 1,
		},
		{
			name: "engine down but GTUBE: reject wins over tempfail", eng: &fakeEngine{err: spam.ErrEngine},
			edit: func(s *inventory.Spam) { s.OnEngineFailure = "tempfail" }, msg: spamMsg{body: gtube},
			disp: Reject, reply: ReplySpam, calls: 1,
		},
		{
			name: "DMARC reject: no engine call", eng: &fakeEngine{rep: &spam.Report{}},
			msg:  spamMsg{sender: "x@elsewhere.test", headers: "From: ceo@strict.test\nSubject: pay\nDate: Sun, 1 Mar 2026 11:00:00 +0000\nMessage-ID: <2@x>"},
			disp: Reject, reply: ReplyDMARC + "<strict.test>", calls: 0,
		},
		{
			name: "tag already in Subject is not doubled", msg: spamMsg{client: "198.51.100.66", headers: "From: x@sender.test\nSubject: [SPAM] hello\nDate: Sun, 1 Mar 2026 11:00:00 +0000\nMessage-ID: <5@x>"},
			disp: Tag, status: "Yes",
		},
		{
			name: "no Subject: one is added", msg: spamMsg{client: "198.51.100.66", headers: "From: x@sender.test\nDate: Sun, 1 Mar 2026 11:00:00 +0000\nMessage-ID: <5@x>"},
			disp: Tag, status: "Yes, score=6", subject: "insert@0 Subject: [SPAM]",
		},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var eng spam.Engine
			if c.eng != nil {
				eng = c.eng
			}
			f := spamFilter(t, eng, c.edit)
			r := c.msg.run(f)
			v := r.Decision.Verdict
			if v.Disposition != c.disp || r.Reply != c.reply || r.Quarantine != c.hold {
				t.Errorf("disposition %v reply %q hold %q, want %v %q %q (%s)", v.Disposition, r.Reply, r.Quarantine, c.disp, c.reply, c.hold, v.Reason)
			}
			if r.Reject != (c.disp == Reject) || r.TempFail != (c.disp == TempFail) {
				t.Errorf("Reject %v TempFail %v for %v", r.Reject, r.TempFail, c.disp)
			}
			if c.ar != "" && header(r, "Authentication-Results") != c.ar {
				t.Errorf("A-R %q\nwant %q", header(r, "Authentication-Results"), c.ar)
			}
			st := header(r, "X-Spam-Status")
			if c.status != "" && !strings.HasPrefix(st, c.status) {
				t.Errorf("X-Spam-Status %q, want prefix %q", st, c.status)
			}
			if c.disp != Reject && c.disp != TempFail {
				if st == "" || header(r, "X-Spam-Score") != spam.FormatScore(v.Score) {
					t.Errorf("accepted without X-Spam headers: %q", changes(r))
				}
			}
			if c.symbols != "" && !strings.Contains(header(r, "X-Spam-Symbols"), c.symbols) && !strings.Contains(symbolList(v), c.symbols) {
				t.Errorf("symbols %q, want %q in them", header(r, "X-Spam-Symbols"), c.symbols)
			}
			var subj string
			for _, l := range changes(r) {
				if strings.Contains(l, " Subject") {
					subj = l
				}
			}
			if subj != c.subject {
				t.Errorf("subject change %q, want %q", subj, c.subject)
			}
			if c.eng != nil && c.eng.calls != c.calls {
				t.Errorf("%d engine calls, want %d", c.eng.calls, c.calls)
			}
		})
	}
}

func symbolList(v Verdict) string {
	s := make([]string, len(v.Symbols))
	for i, x := range v.Symbols {
		s[i] = x.String()
	}
	return strings.Join(s, ", ")
}

// Off means untouched: no score, no X-Spam header, no engine call — for
// every accepted cell where the matrix says off, even GTUBE.
func TestSpamOffUntouched(t *testing.T) {
	eng := &fakeEngine{rep: &spam.Report{Score: 100, Action: "reject"}}
	f := spamFilter(t, eng, nil)
	gtube := "x\r\n" + spam.GTUBE + "\r\n"
	for _, m := range []struct {
		name string
		env  Envelope
		rcpt string
		from string
	}{
		{"authenticated local to outside", Envelope{ClientAddr: "198.51.100.7", AuthUser: "alice@example.com", Sender: "alice@example.com"}, "eve@elsewhere.test", "alice@example.com"},
		{"authenticated local to local", Envelope{ClientAddr: "198.51.100.7", AuthUser: "alice@example.com", Sender: "alice@example.com"}, "bob@example.com", "alice@example.com"},
		{"trusted local to relay", Envelope{ClientAddr: "10.20.1.1", Sender: "alice@example.com"}, "dave@partner.org", "alice@example.com"},
		{"outside to relay", Envelope{ClientAddr: "198.51.100.66", Sender: "x@sender.test"}, "dave@partner.org", "x@sender.test"},
		{"local submission", Envelope{LocalSubmission: true, ClientAddr: "127.0.0.1", Sender: "root"}, "bob@example.com", "root@example.com"},
	} {
		tx := f.NewTransaction(m.env)
		tx.AddRcpt(m.rcpt)
		tx.Header("From", " "+m.from)
		tx.Header("X-Spam-Status", " No, forged")
		tx.EndOfHeaders()
		tx.Body([]byte(gtube))
		r := tx.End(context.Background())
		tx.Close()
		for _, c := range r.Changes {
			if strings.HasPrefix(strings.ToLower(c.Name), "x-spam") || strings.EqualFold(c.Name, "Subject") || strings.EqualFold(c.Name, "Authentication-Results") {
				t.Errorf("%s: change %+v", m.name, c)
			}
		}
		if r.Reject || r.TempFail || r.Quarantine != "" || r.Decision.Verdict.Scored || r.Decision.SpamCheck {
			t.Errorf("%s: %+v", m.name, r)
		}
	}
	if eng.calls != 0 {
		t.Errorf("engine called %d times for mail the matrix does not check", eng.calls)
	}
}

// Forged X-Spam-* fields of a checked message are removed, bottom first.
func TestSpamForgedHeadersRemoved(t *testing.T) {
	f := spamFilter(t, nil, nil)
	r := spamMsg{headers: "From: x@sender.test\nX-Spam-Status: No, score=-100\nSubject: hi\nX-Spam-Flag: NO\nx-spam-status: No\nDate: Sun, 1 Mar 2026 11:00:00 +0000\nMessage-ID: <1@x>"}.run(f)
	got := strings.Join(changes(r), "\n")
	want := "delete x-spam-status#2\ndelete X-Spam-Flag#1\ndelete X-Spam-Status#1\n" +
		"insert@0 X-Spam-Symbols: MN_SPF_PASS(-0.5), MN_DMARC_PASS(-1)\n" +
		"insert@0 X-Spam-Status: No, score=-1.5 tag=5 reject=15 engine=builtin\n" +
		"insert@0 X-Spam-Score: -1.5\n" +
		"insert@0 Authentication-Results: mx1.example.com; spf=pass smtp.mailfrom=x@sender.test; dkim=none; dmarc=pass header.from=sender.test"
	if got != want {
		t.Errorf("changes:\n%s\nwant:\n%s", got, want)
	}
}

// The engine gets the header and the first MaxEngineBytes of the message,
// never more, whatever the body size.
func TestSpamEngineCap(t *testing.T) {
	eng := &fakeEngine{rep: &spam.Report{Action: "no action"}}
	f := spamFilter(t, eng, nil)
	f.Checks[len(f.Checks)-1].(*SpamCheck).MaxEngineBytes = 1000
	body := strings.Repeat("0123456789abcdefghij0123456789abcdefghij0123456789abcdefghij0123456789\r\n", 100)
	spamMsg{body: body}.run(f)
	if len(eng.data) != 1000 || !eng.trunc {
		t.Errorf("engine got %d bytes (truncated %v), want 1000", len(eng.data), eng.trunc)
	}
	if !strings.HasPrefix(string(eng.data), "From: X <x@sender.test>\r\nTo: bob@example.com\r\n") || !strings.Contains(string(eng.data), "\r\n\r\n0123456789") {
		t.Errorf("engine data %q", eng.data[:200])
	}
	spamMsg{body: "short\r\n"}.run(f)
	if eng.trunc || !strings.HasSuffix(string(eng.data), "\r\n\r\nshort\r\n") {
		t.Errorf("short message: truncated %v, data %q", eng.trunc, eng.data)
	}
}

// DNS trouble is temperror, never a verdict: SPF and DMARC with the
// resolver down, and the chain still adds its headers.
func TestSpamDNSDown(t *testing.T) {
	f, _ := testFilter(t)
	inv := testInventory(t)
	inv.Spam.DNSBL = []string{"bl.test"}
	f.Checks = InboundChecks(inv, resolver.NewClient("127.0.0.1:1", 200*time.Millisecond), testDNS(t).LookupTXT)
	r := spamMsg{}.run(f)
	ar := header(r, "Authentication-Results")
	if !strings.Contains(ar, "spf=temperror") || !strings.Contains(ar, "dmarc=temperror") {
		t.Errorf("A-R %q", ar)
	}
	if r.Reject || r.TempFail || header(r, "X-Spam-Status") == "" {
		t.Errorf("result %+v", changes(r))
	}
}

// Over a real socket: reject with the 550 text, quarantine as a milter
// action with the Subject tagged, and the HELO name reaches SPF.
func TestClientSpam(t *testing.T) {
	msg := func(body string) *miltertest.Message {
		return &miltertest.Message{Host: "unknown", Helo: "mx.sender.test", Addr: "198.51.100.7", Port: 40000, QueueID: "Q1",
			Sender: "", Rcpts: []string{"bob@example.com"},
			Headers: []dkim.Header{{Name: "From", Value: " MAILER-DAEMON@sender.test"}, {Name: "Subject", Value: " bounce"},
				{Name: "Date", Value: " Sun, 1 Mar 2026 11:00:00 +0000"}, {Name: "Message-ID", Value: " <9@x>"}},
			Body: []byte(body)}
	}
	f := spamFilter(t, nil, nil)
	path := startServer(t, f, nil)
	c := miltertest.NewClient("unix", path)
	r, err := miltertest.Submit(c, msg("x\r\n"+spam.GTUBE+"\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Action.Type != gomilter.ActionRejectWithCode || r.Action.SMTPCode != 550 || r.Action.SMTPReply != "550 5.7.1 Message rejected as spam" {
		t.Errorf("GTUBE: %+v", r.Action)
	}
	r, err = miltertest.Submit(c, msg("hello\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	out, _ := r.Apply(msg("hello\r\n"))
	if r.Action.Type != gomilter.ActionAccept || !strings.Contains(string(out), "spf=pass smtp.helo=mx.sender.test") ||
		!strings.Contains(string(out), "X-Spam-Score: ") {
		t.Errorf("null sender: %+v\n%s", r.Action, out)
	}

	f = spamFilter(t, nil, func(s *inventory.Spam) { s.Quarantine = true })
	path = startServer(t, f, nil)
	r, err = miltertest.Submit(miltertest.NewClient("unix", path), msg("x\r\n"+spam.GTUBE+"\r\n"))
	if err != nil {
		t.Fatal(err)
	}
	if r.Action.Type != gomilter.ActionAccept || r.Quarantine != QuarantineSpam {
		t.Errorf("quarantine: %+v %q", r.Action, r.Quarantine)
	}
	out, err = r.Apply(msg("x\r\n" + spam.GTUBE + "\r\n"))
	if err != nil || !strings.Contains(string(out), "\r\nSubject: [SPAM] bounce\r\n") {
		t.Errorf("quarantine, Subject not tagged: %v\n%s", err, out)
	}
}

// askedResolver is the node's resolver, recording for each question
// whether it was asked from the cache only (resolver.CacheOnly).
type askedResolver struct {
	*resolver.Client
	resolver.AskLog
}

func (r *askedResolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	r.Asked(ctx)
	return r.Client.LookupTXT(ctx, name)
}

func (r *askedResolver) LookupA(ctx context.Context, name string) ([]netip.Addr, error) {
	r.Asked(ctx)
	return r.Client.LookupA(ctx, name)
}

// A sender seen before is checked from the resolver's cache at once: SPF,
// the DKIM key, DMARC and the DNSBL answer, with no question to the server
// and the very results of the first message, whose checks asked the server
// in the background. A resolver that does not say it honours
// resolver.CacheOnly is never asked that way.
func TestInboundFromCache(t *testing.T) {
	d, key := inboundDNS(t) // bl.test lists nobody: NXDOMAIN
	r := &askedResolver{Client: resolver.NewClient(d.Addr, time.Second)}
	t.Cleanup(func() { r.Close() })
	f := inboundFilter(t, r)
	for _, c := range f.Checks {
		if sc, ok := c.(*SpamCheck); ok {
			sc.DNSBL = []string{"bl.test"}
		}
	}
	c := miltertest.NewClient("unix", startServer(t, f, nil))
	m := signedInbound(t, key, 2048)
	for i := range 3 {
		asked := d.Queries.Load()
		res, err := miltertest.Submit(c, m)
		if err != nil {
			t.Fatal(err)
		}
		if got := arValue(t, res); got != inboundAR {
			t.Errorf("message %d: A-R %q, want %q", i, got, inboundAR)
		}
		l := r.Take()
		n := d.Queries.Load() - asked
		switch {
		case i == 0 && (n != 4 || !slices.Contains(l, false)):
			t.Errorf("first message: %d questions to the server (want 4), asked %v", n, l)
		case i > 0 && (n != 0 || len(l) != 4 || slices.Contains(l, false)):
			t.Errorf("message %d: %d questions to the server, asked %v: want 4, all from the cache only", i, n, l)
		}
	}

	// Behind a wrapper that does not say it honours CacheOnly, nothing is
	// asked from the cache only.
	type plain struct{ resolver.Resolver }
	f = inboundFilter(t, plain{r})
	c = miltertest.NewClient("unix", startServer(t, f, nil))
	if _, err := miltertest.Submit(c, m); err != nil {
		t.Fatal(err)
	}
	if l := r.Take(); slices.Contains(l, true) {
		t.Errorf("a resolver that does not honour CacheOnly was asked from the cache only: %v", l)
	}
}
