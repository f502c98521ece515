package maillog

import (
	"fmt"
	"io"
	"regexp"
	"slices"
	"sort"
	"strings"
	"time"
)

// Why gathers what the mail log says about messages, to tell the story of
// one (a queue id) or of every message from or to an address
// (`mailnode why`). It reads three kinds of lines:
//
//   - Postfix's own, in syslog form ("Dec  6 03:55:52 mx1 postfix/lmtp[20228]: 4jhrxN2Ffbz1SKkF: to=<...>, status=sent (...)"),
//     or with an RFC 3339 time stamp (rsyslog's high precision format);
//   - policyd's decision lines (one per recipient, RCPT time);
//   - milterd's decision lines (one per message, end of DATA).
//
// How lines are tied to one message:
//
//   - Postfix's lines and milterd's carry the queue id.
//   - policyd's carry queue_id only when Postfix had one at RCPT (it has
//     none for the first recipient of a message: the queue file is made
//     after it is accepted). A policyd line without one is tied to the
//     Postfix rejection of the same client address, sender and recipient
//     within a few seconds (a refused RCPT: policyd's, or Postfix's own
//     after policyd's DUNNO), or else to the message of the same client
//     address and sender whose session was open at that time.
//   - When milterd rewrote the envelope sender (SRS, mail an alias
//     forwards off the node), qmgr's from= is the new one; policyd's lines
//     and Postfix's refusals carry the one the message arrived with, which
//     milterd's line names: both are the message's sender.
//   - A RCPT refused before any recipient was accepted (NOQUEUE) is a
//     story of its own. A message's story also shows the earlier 4xx
//     refusals (greylisting, rate limits) of the same sender and one of
//     its recipients.
type Why struct {
	Since time.Time
	Now   time.Time // for the year of syslog time stamps; time.Now when zero
	// Location is the time zone of syslog time stamps; time.Local when nil.
	Location *time.Location
	Lines    int

	msgs    map[string]*Story // by queue id
	order   []*Story
	rejects []*Story // NOQUEUE refusals, one story each
	policy  []policyLine
}

// A Story is what the log says about one message (or one refused RCPT).
type Story struct {
	QueueID    string // "" for a refusal before a queue id (NOQUEUE)
	Client     string // name[address] as Postfix logged it
	ClientAddr string
	Sender     string // the queue file's envelope sender (qmgr's from=)
	// ArrivedFrom is the envelope sender the message arrived with when
	// milterd rewrote it (SRS, for mail an alias forwards off the node):
	// policyd's lines and Postfix's refusals carry this one.
	ArrivedFrom string
	Rcpts       []string
	// OrigRcpts are the recipients as given at RCPT where Postfix's
	// delivery lines name them (orig_to=: an alias or list expanded).
	OrigRcpts  []string
	Start, End time.Time
	Events     []Event
	// Earlier holds the stories of earlier temporary refusals of the same
	// sender and recipient (greylisting, rate limits): filled in by Stories.
	Earlier []*Story

	reply    string         // NOQUEUE: the reply Postfix sent
	qmgrFrom bool           // Sender came from qmgr's from= line
	loc      *time.Location // for printing times
}

// An Event is one line of a story.
type Event struct {
	Time    time.Time
	Precise bool   // the time has milliseconds (the daemons' lines)
	Source  string // policyd, milterd, or Postfix's program (smtpd, cleanup, qmgr, lmtp, ...)
	Text    string
	rank    int       // order within one second: RCPT, queue, DATA, milter, queue manager, delivery
	sec     time.Time // the second it is ordered in (sortEvents)
}

type policyLine struct {
	t                   time.Time
	qid, addr, from, to string
	action              string
	text                string
	attached            bool
	refused             bool
}

// NewWhy starts gathering lines of messages at or after since.
func NewWhy(since time.Time) *Why {
	return &Why{Since: since, msgs: map[string]*Story{}}
}

// postfixLine: "TIME HOST SYSLOG_NAME/PROGRAM[PID]: TEXT"; TIME is
// "Mmm dd hh:mm:ss" or RFC 3339.
var postfixLine = regexp.MustCompile(`^(?:([A-Z][a-z]{2} [ 0-9]?[0-9] [0-9:]{8})|(\d{4}-\d\d-\d\dT\S+)) \S+ \S*?([a-z0-9_-]+)\[\d+\]: (.*)$`)

// queueText: "QUEUEID: rest" (short or long queue ids) or NOQUEUE.
var queueText = regexp.MustCompile(`^([0-9A-Za-z]{6,20}|NOQUEUE): (.*)$`)

// rcptReject: "reject: RCPT from CLIENT: REPLY; from=<S> to=<R> proto=..."
var rcptReject = regexp.MustCompile(`^reject: RCPT from (\S+): (.*); from=<([^>]*)> to=<([^>]*)>`)

// milterReject: "milter-reject: END-OF-MESSAGE from CLIENT: TEXT; from=<S> to=<R> ..."
var milterReject = regexp.MustCompile(`^milter-(reject|hold|discard): (\S+) from (\S+): (.*?); from=<([^>]*)> to=<([^>]*)>`)

// Read adds every line of r it understands; a name ending in .gz is read
// through gzip.
func (w *Why) Read(name string, r io.Reader) error {
	return eachLine(name, r, func(line string) {
		w.Lines++
		w.Add(line)
	})
}

// ReadFile reads a log file, plain or .gz.
func (w *Why) ReadFile(path string) error { return eachLineOfFile(path, w.Read) }

// Add takes one line of the log; lines it does not know are ignored.
func (w *Why) Add(line string) {
	if m := postfixLine.FindStringSubmatch(line); m != nil {
		if w.addPostfix(m) {
			return
		}
	}
	switch {
	case strings.Contains(line, " policyd ") && strings.Contains(line, " state="):
		w.addPolicyd(line)
	case strings.Contains(line, `msg="milterd decision"`):
		w.addMilterd(line)
	}
}

func (w *Why) now() time.Time {
	if w.Now.IsZero() {
		return time.Now()
	}
	return w.Now
}

// syslogTime reads "Dec  6 03:55:52" in local time, in the year that puts
// it no later than a day after now.
func (w *Why) syslogTime(s string) (time.Time, bool) {
	now := w.now()
	loc := w.Location
	if loc == nil {
		loc = time.Local
	}
	t, err := time.ParseInLocation("Jan 2 15:04:05 2006", strings.Join(strings.Fields(s), " ")+fmt.Sprintf(" %d", now.Year()), loc)
	if err != nil {
		return t, false
	}
	if t.After(now.Add(24 * time.Hour)) {
		t = t.AddDate(-1, 0, 0)
	}
	return t, true
}

func (w *Why) addPostfix(m []string) bool {
	var t time.Time
	var ok bool
	if m[1] != "" {
		t, ok = w.syslogTime(m[1])
	} else {
		var err error
		t, err = time.Parse(time.RFC3339Nano, m[2])
		ok = err == nil
	}
	prog, text := m[3], m[4]
	q := queueText.FindStringSubmatch(text)
	if !ok || q == nil {
		return false // not Postfix's queue line: maybe a daemon's under syslog
	}
	if t.Before(w.Since) {
		return true
	}
	qid, rest := q[1], q[2]
	if r := rcptReject.FindStringSubmatch(rest); r != nil {
		ev := Event{Time: t, Precise: m[2] != "", Source: prog, Text: "RCPT to=<" + r[4] + "> refused: " + r[2], rank: 1}
		if qid == "NOQUEUE" {
			s := &Story{Client: r[1], ClientAddr: clientAddr(r[1]), Sender: r[3], Rcpts: []string{r[4]}, Start: t, End: t, reply: r[2]}
			s.Events = append(s.Events, ev)
			w.rejects = append(w.rejects, s)
			return true
		}
		s := w.msg(qid, t)
		s.addRcpt(r[4])
		if s.Sender == "" {
			s.Sender = r[3]
		}
		s.Events = append(s.Events, ev)
		return true
	}
	if qid == "NOQUEUE" {
		return true
	}
	s := w.msg(qid, t)
	ev := Event{Time: t, Precise: m[2] != "", Source: prog, Text: rest}
	switch {
	case strings.HasPrefix(rest, "client="):
		c := strings.TrimPrefix(rest, "client=")
		c, _, _ = strings.Cut(c, ",")
		s.Client, s.ClientAddr = c, clientAddr(c)
		ev.rank = 2
	case strings.HasPrefix(rest, "uid=") && prog == "pickup":
		ev.rank = 2
	case strings.HasPrefix(rest, "message-id="):
		ev.rank = 3
	case milterReject.MatchString(rest):
		r := milterReject.FindStringSubmatch(rest)
		if s.Sender == "" {
			s.Sender = r[5]
		}
		s.addRcpt(r[6])
		ev.Text = "milter-" + r[1] + " at " + r[2] + ": " + r[4]
		ev.rank = 5
	case strings.HasPrefix(rest, "from=<") && strings.Contains(rest, ">"):
		// qmgr logs a queue file's sender once; a second from= under the
		// same queue id (an id reused later, a copied line) does not
		// rewrite the story's sender, the null sender included.
		from, _, _ := strings.Cut(strings.TrimPrefix(rest, "from=<"), ">")
		if !s.qmgrFrom {
			s.Sender, s.qmgrFrom = from, true
		}
		ev.rank = 6
	case strings.HasPrefix(rest, "to=<") && strings.Contains(rest, ">"):
		to, _, _ := strings.Cut(strings.TrimPrefix(rest, "to=<"), ">")
		s.addRcpt(to)
		if _, o, ok := strings.Cut(rest, ", orig_to=<"); ok {
			o, _, _ = strings.Cut(o, ">")
			s.OrigRcpts = addAddr(s.OrigRcpts, o)
		}
		ev.Text = dropDelays(rest)
		ev.rank = 7
	case rest == "removed":
		ev.rank = 9
	default:
		ev.rank = 8
	}
	s.Events = append(s.Events, ev)
	return true
}

// dropDelays removes the delay=, delays= and dsn= parts of a delivery line:
// the story is about what happened, not how long each step took.
func dropDelays(s string) string {
	parts := strings.Split(s, ", ")
	out := parts[:0]
	for _, p := range parts {
		if strings.HasPrefix(p, "delay=") || strings.HasPrefix(p, "delays=") || strings.HasPrefix(p, "dsn=") {
			continue
		}
		out = append(out, p)
	}
	return strings.Join(out, ", ")
}

func (w *Why) msg(qid string, t time.Time) *Story {
	s := w.msgs[qid]
	if s == nil {
		s = &Story{QueueID: qid, Start: t}
		w.msgs[qid] = s
		w.order = append(w.order, s)
	}
	if t.After(s.End) {
		s.End = t
	}
	return s
}

func (s *Story) addRcpt(r string) { s.Rcpts = addAddr(s.Rcpts, r) }

// addAddr adds a to list unless it is there.
func addAddr(list []string, a string) []string {
	if hasAddr(list, a) {
		return list
	}
	return append(list, a)
}

// hasAddr tells whether a is in list (in any case).
func hasAddr(list []string, a string) bool {
	for _, x := range list {
		if strings.EqualFold(x, a) {
			return true
		}
	}
	return false
}

// senderIs tells whether addr is the message's envelope sender, as it
// arrived or as it left.
func (s *Story) senderIs(addr string) bool {
	return strings.EqualFold(s.Sender, addr) || (s.ArrivedFrom != "" && strings.EqualFold(s.ArrivedFrom, addr))
}

// clientAddr returns the address of "name[address]".
func clientAddr(c string) string {
	i := strings.LastIndexByte(c, '[')
	if i < 0 || !strings.HasSuffix(c, "]") {
		return c
	}
	return c[i+1 : len(c)-1]
}

func (w *Why) addPolicyd(line string) {
	head, f, ok := splitFields(line)
	if !ok || len(head) < 2 || head[len(head)-1] != "policyd" {
		return
	}
	t, err := time.Parse(time.RFC3339Nano, head[len(head)-2])
	if err != nil || t.Before(w.Since) {
		return
	}
	p := policyLine{t: t, qid: f["queue_id"], addr: clientAddr(f["client"]), from: f["from"], to: f["to"], action: f["action"]}
	var b strings.Builder
	fmt.Fprintf(&b, "%s to=<%s>", f["state"], f["to"])
	if f["sasl_user"] != "" {
		fmt.Fprintf(&b, " sasl_user=%s", f["sasl_user"])
	}
	if c := f["cell"]; c != "" {
		fmt.Fprintf(&b, " cell=%s", c)
	}
	fmt.Fprintf(&b, " reason=%s: %s", f["reason"], p.action)
	for _, k := range []string{"spam_check", "greylist", "ratelimit", "would_reject"} {
		if v := f[k]; v != "" {
			fmt.Fprintf(&b, "; %s=%s", k, quoteIfSpace(v))
			if k == "greylist" {
				if why := greylistWhy[v]; why != "" {
					fmt.Fprintf(&b, " (%s)", why)
				}
			}
		}
	}
	p.text = b.String()
	p.refused = p.action != "DUNNO" && p.action != "OK" && p.action != ""
	w.policy = append(w.policy, p)
}

// greylistWhy explains policyd's greylist= values.
var greylistWhy = map[string]string{
	"new":              "first time seen: deferred",
	"early-retry":      "retried before the delay: deferred",
	"triplet-passed":   "retried after the delay: passed",
	"client-awl":       "client auto-whitelisted",
	"null-sender":      "exempt",
	"postmaster":       "exempt",
	"client-whitelist": "exempt",
	"sender-whitelist": "exempt",
}

func quoteIfSpace(v string) string {
	if strings.ContainsAny(v, " \t") {
		return fmt.Sprintf("%q", v)
	}
	return v
}

func (w *Why) addMilterd(line string) {
	_, f, ok := splitFields(line)
	if !ok || f["msg"] != "milterd decision" {
		return
	}
	t, err := time.Parse(time.RFC3339Nano, f["time"])
	if err != nil || t.Before(w.Since) || f["queue_id"] == "" {
		return
	}
	s := w.msg(f["queue_id"], t)
	if s.Sender == "" {
		s.Sender = f["sender"]
	}
	add := func(text string) {
		s.Events = append(s.Events, Event{Time: t, Precise: true, Source: "milterd", Text: text, rank: 4})
	}
	head := f["action"] + " (" + f["reason"] + ")"
	if f["from"] != "" {
		head += ", header From: " + f["from"]
	}
	if f["user"] != "" {
		head += ", login " + f["user"]
	}
	add(head)
	if v := f["signed"]; v != "" {
		add("DKIM-signed: " + strings.ReplaceAll(v, ",", ", "))
	}
	if v := f["results"]; v != "" {
		add("Authentication-Results: " + v)
	}
	if v := f["srs"]; v != "" {
		s.ArrivedFrom = f["sender"]
		add("envelope sender rewritten (SRS) to <" + v + ">")
	}
	if v := f["removed_forged_ar"]; v != "" {
		add("removed forged Authentication-Results: " + v)
	}
	if v := f["spam_score"]; v != "" {
		text := "spam score " + v
		if b := f["spam_builtin"]; b != "" {
			parts := "builtin " + b
			if e := f["spam_engine_score"]; e != "" {
				parts += " + " + f["spam_engine"] + " " + e
			}
			text += " (" + parts + ")"
		} else if e := f["spam_engine"]; e != "" {
			text += " (" + e + ")"
		}
		text += " -> " + f["disposition"]
		if r := f["disposition_reason"]; r != "" {
			text += " (" + r + ")"
		}
		add(text)
		if e := f["engine_error"]; e != "" {
			add("engine error: " + e)
		}
		if sy := f["spam_symbols"]; sy != "" {
			add("symbols: " + strings.ReplaceAll(sy, ",", ", "))
		}
	}
	if v := f["antivirus"]; v != "" {
		text := "virus scan: " + v
		if n := f["virus"]; n != "" {
			text += " (" + n + ")"
		}
		if e := f["antivirus_error"]; e != "" {
			text += " (" + e + ")"
		}
		if f["antivirus_truncated"] == "true" {
			text += ", only the first part scanned"
		}
		add(text)
	}
	if v := f["reply"]; v != "" {
		add("refused: " + v)
	}
	if v := f["would_reject"]; v != "" {
		add("shadow mode, would have answered: " + v)
	}
	if v := f["would_hold"]; v != "" {
		add("shadow mode, would have held: " + v)
	}
	if v := f["error"]; v != "" {
		add("error: " + v)
	}
}

// rejectSlack is how far apart policyd's refusal and Postfix's log line of
// it may be (Postfix's syslog time has whole seconds).
const rejectSlack = 3 * time.Second

// correlate ties every policyd line to a story (see Why).
func (w *Why) correlate() {
	// In time order, whatever order the files were read in (findSession
	// gives each line the earliest message still open for it).
	sort.SliceStable(w.policy, func(i, j int) bool { return w.policy[i].t.Before(w.policy[j].t) })
	for i := range w.policy {
		p := &w.policy[i]
		if p.attached {
			continue
		}
		ev := Event{Time: p.t, Precise: true, Source: "policyd", Text: p.text, rank: 0}
		if p.qid != "" {
			if s := w.msgs[p.qid]; s != nil {
				s.Events = append(s.Events, ev)
				s.addRcpt(p.to)
				p.attached = true
				continue
			}
		}
		// A refused RCPT: Postfix's line of the same client, sender and recipient.
		if s := w.findReject(p); s != nil {
			s.Events = append(s.Events, ev)
			p.attached = true
			continue
		}
		if p.refused {
			continue
		}
		if s := w.findSession(p); s != nil {
			s.Events = append(s.Events, ev)
			s.addRcpt(p.to)
			p.attached = true
		}
	}
}

func near(a, b time.Time, d time.Duration) bool {
	x := a.Sub(b)
	return x < d && x > -d
}

func (w *Why) findReject(p *policyLine) *Story {
	match := func(s *Story, ev Event) bool {
		return strings.HasPrefix(ev.Text, "RCPT to=<"+p.to+"> refused: ") && s.ClientAddr == p.addr &&
			s.senderIs(p.from) && near(ev.Time, p.t, rejectSlack)
	}
	for _, s := range w.rejects {
		if len(s.Events) > 0 && match(s, s.Events[0]) && !s.hasPolicy() {
			return s
		}
	}
	for _, s := range w.order {
		for _, ev := range s.Events {
			if ev.rank == 1 && match(s, ev) {
				return s
			}
		}
	}
	return nil
}

// hasPolicyFor tells whether a policyd line for recipient rcpt is in the
// story already: each recipient of a message is decided once, so a second
// line belongs to another message of the same client and sender.
func (s *Story) hasPolicyFor(rcpt string) bool {
	for _, ev := range s.Events {
		if ev.Source == "policyd" && strings.HasPrefix(ev.Text, "RCPT to=<"+rcpt+">") {
			return true
		}
	}
	return false
}

func (s *Story) hasPolicy() bool {
	for _, ev := range s.Events {
		if ev.Source == "policyd" {
			return true
		}
	}
	return false
}

// findSession returns the message of p's client address and sender whose
// session was open at p's time: from a little before its queue file (the
// first recipient is decided before it exists) to its last line, and not
// after milterd's end-of-data line, which has milliseconds and comes after
// every RCPT of the message. Of those, the session that ends first wins:
// with policyd's lines taken in time order, each goes to the earliest
// message still open for it, so two messages of one client and sender a
// second apart (Postfix's time has whole seconds) get one line each.
func (w *Why) findSession(p *policyLine) *Story {
	var best *Story
	var bestEnd time.Time
	for _, s := range w.order {
		if s.ClientAddr != p.addr || !s.senderIs(p.from) || s.hasPolicyFor(p.to) {
			continue
		}
		if p.t.Before(s.Start.Add(-rejectSlack)) || p.t.After(s.End.Add(rejectSlack)) {
			continue
		}
		end, precise := s.dataEnd()
		if precise && p.t.After(end) {
			continue
		}
		if !precise {
			end = s.End.Add(rejectSlack)
		}
		if best == nil || end.Before(bestEnd) {
			best, bestEnd = s, end
		}
	}
	return best
}

// dataEnd is the time of milterd's first line of the message, the end of
// its DATA, when there is one.
func (s *Story) dataEnd() (time.Time, bool) {
	for _, ev := range s.Events {
		if ev.Source == "milterd" && ev.Precise {
			return ev.Time, true
		}
	}
	return time.Time{}, false
}

// Stories returns the stories of query, oldest first: the message with
// that queue id (with its earlier temporary refusals), or, for an address
// (it holds "@", or is "<>" for the null sender), every message and
// refused RCPT whose envelope sender or a recipient is that address.
func (w *Why) Stories(query string) []*Story {
	w.correlate()
	all := append(append([]*Story(nil), w.order...), w.rejects...)
	for _, s := range all {
		s.sortEvents()
		s.loc = w.Location
	}
	var out []*Story
	if strings.Contains(query, "@") || query == "<>" {
		addr := strings.Trim(query, "<>")
		for _, s := range all {
			if s.involves(addr) {
				out = append(out, s)
			}
		}
	} else if s := w.msgs[query]; s != nil {
		s.Earlier = nil
		rcpts := slices.Concat(s.Rcpts, s.OrigRcpts)
		for _, r := range w.rejects {
			if !r.Start.After(s.Start) && s.senderIs(r.Sender) && r.involvesRcpt(rcpts) && strings.HasPrefix(r.reply, "4") {
				s.Earlier = append(s.Earlier, r)
			}
		}
		out = append(out, s)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].first().Before(out[j].first()) })
	return out
}

// first is the time of the story's first event (events sorted): a
// daemon's time in milliseconds orders stories within Postfix's seconds.
func (s *Story) first() time.Time {
	if len(s.Events) > 0 {
		return s.Events[0].Time
	}
	return s.Start
}

func (s *Story) involves(addr string) bool {
	return s.senderIs(addr) || hasAddr(s.OrigRcpts, addr) || s.involvesRcpt([]string{addr})
}

func (s *Story) involvesRcpt(rcpts []string) bool {
	for _, r := range s.Rcpts {
		if hasAddr(rcpts, r) {
			return true
		}
	}
	return false
}

// postfixLag is how far Postfix's whole-second time stamps may lag the
// daemons' precise ones. Postfix takes its second from time(), which reads
// a clock the kernel moves on once per scheduler tick (4 ms at 250 Hz, 10
// at 100 Hz): a line Postfix writes a moment after milterd's decision at
// 04:09:49.002 can still say 04:09:48.
const postfixLag = 10 * time.Millisecond

// sortEvents orders the events by time; within one second of Postfix's
// whole-second time stamps, by the step of the transaction.
//
// A daemon's precise line within postfixLag of a second's start is ordered
// in the second before when a Postfix line of that second belongs to a
// later step: that line was written after it, under a lagging stamp.
// Otherwise it stays in its own second, where Postfix's lines of the same
// moment may be stamped too.
func (s *Story) sortEvents() {
	last := map[int64]int{} // the latest step among Postfix's lines, by their second (Unix)
	for _, e := range s.Events {
		if !e.Precise {
			sec := e.Time.Unix()
			if r, ok := last[sec]; !ok || e.rank > r {
				last[sec] = e.rank
			}
		}
	}
	for i := range s.Events {
		e := &s.Events[i]
		e.sec = e.Time.Truncate(time.Second)
		if before := e.sec.Add(-time.Second); e.Precise && e.Time.Sub(e.sec) < postfixLag {
			if r, ok := last[before.Unix()]; ok && r > e.rank {
				e.sec = before
			}
		}
	}
	sort.SliceStable(s.Events, func(i, j int) bool {
		a, b := s.Events[i], s.Events[j]
		if a.Precise && b.Precise && !a.Time.Equal(b.Time) {
			return a.Time.Before(b.Time)
		}
		as, bs := a.sec, b.sec
		if !as.Equal(bs) {
			return as.Before(bs)
		}
		if a.rank != b.rank {
			return a.rank < b.rank
		}
		return a.Time.Before(b.Time)
	})
}

// Outcome sums up the story in a few words.
func (s *Story) Outcome() string {
	if s.QueueID == "" {
		return "refused at RCPT: " + s.reply
	}
	var status []string
	for _, ev := range s.Events {
		switch {
		case strings.HasPrefix(ev.Text, "milter-"):
			return ev.Text
		case strings.Contains(ev.Text, "status="):
			_, st, _ := strings.Cut(ev.Text, "status=")
			st, _, _ = strings.Cut(st, " ")
			to := strings.TrimPrefix(ev.Text, "to=<")
			to, _, _ = strings.Cut(to, ">")
			status = append(status, "<"+to+"> "+st)
		}
	}
	if len(status) == 0 {
		return "no delivery logged (yet)"
	}
	return strings.Join(status, ", ")
}

// WriteTo prints the story:
//
//	4jhrxN2Ffbz1SKkF from=<news@sender.test> client=localhost[127.0.0.1] to=<alice@example.com>: <alice@example.com> sent
//	  2026-12-06 03:55:52.317 policyd  RCPT to=<alice@example.com> cell=outside/none->local reason=inbound: DUNNO; ...
//	  2026-12-06 03:55:52     smtpd    client=localhost[127.0.0.1]
//	  ...
func (s *Story) WriteTo(out io.Writer) (int64, error) {
	cw := &countWriter{w: out}
	id := s.QueueID
	if id == "" {
		id = "NOQUEUE"
	}
	from := "<" + s.Sender + ">"
	if s.ArrivedFrom != "" && !strings.EqualFold(s.ArrivedFrom, s.Sender) {
		from = "<" + s.ArrivedFrom + "> (sent on as <" + s.Sender + ">)"
	}
	fmt.Fprintf(cw, "%s from=%s client=%s to=<%s>: %s\n", id, from, orDash(s.Client), strings.Join(s.Rcpts, ">,<"), s.Outcome())
	for _, e := range s.Earlier {
		fmt.Fprintf(cw, "  earlier: %s from=<%s> client=%s to=<%s>: %s\n", e.Start.In(orLocal(s.loc)).Format("2006-01-02 15:04:05"), e.Sender, e.Client, strings.Join(e.Rcpts, ">,<"), e.reply)
		for _, ev := range e.Events {
			if ev.Source == "policyd" {
				fmt.Fprintf(cw, "    %s\n", ev.line(s.loc))
			}
		}
	}
	for _, ev := range s.Events {
		fmt.Fprintf(cw, "  %s\n", ev.line(s.loc))
	}
	return cw.n, cw.err
}

func (ev Event) line(loc *time.Location) string {
	if loc == nil {
		loc = time.Local
	}
	ts := ev.Time.In(loc).Format("2006-01-02 15:04:05")
	if ev.Precise {
		ts = ev.Time.In(loc).Format("2006-01-02 15:04:05.000")
	} else {
		ts += "    "
	}
	return fmt.Sprintf("%s %-8s %s", ts, ev.Source, ev.Text)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func orLocal(loc *time.Location) *time.Location {
	if loc == nil {
		return time.Local
	}
	return loc
}
