package milter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/emersion/go-msgauth/authres"
	"github.com/mailnode/mailnode/acl"
	"github.com/mailnode/mailnode/antivirus"
	"github.com/mailnode/mailnode/dkim"
	"github.com/mailnode/mailnode/inventory"
	"github.com/mailnode/mailnode/mailauth"
	"github.com/mailnode/mailnode/spam"
)

// Limits bound what one message may make milterd hold. Postfix itself caps
// a header field at header_size_limit (100 KiB by default).
const (
	MaxHeaders     = 1000    // header fields per message
	MaxHeaderBytes = 1 << 20 // sum of header field sizes per message
)

// ErrLimit is returned (wrapped) when a message exceeds a limit; the
// connection is then closed and Postfix applies milter_default_action.
var ErrLimit = errors.New("milter: limit exceeded")

// ErrProtocol is returned (wrapped) for events out of order, e.g. a body
// chunk before the end of the headers.
var ErrProtocol = errors.New("milter: protocol violation")

// Filter is milterd's configuration: the inventory, the signing keys and
// the inbound check chain. One Filter serves every connection.
type Filter struct {
	Policy  Policy
	Options acl.Options // policy.sender_login strict: From: held to the login (Decide)
	// Shadow is policy.mode: shadow: every decision is made and logged, with
	// what enforce mode would have answered (Decision.WouldReject), but no
	// message is refused, deferred or held for a decision or a verdict; it
	// is signed and gets its headers as in enforce mode.
	Shadow   bool
	Hostname string                // authserv-id of our Authentication-Results
	Keys     map[string][]dkim.Key // per local domain, in inventory order
	Checks   []Check               // the inbound chain, see checks.go
	Now      func() time.Time      // clock for t=; time.Now when nil
	Log      *slog.Logger          // one line per decision; slog.Default when nil
	// CheckTimeout bounds the wait for the checks at the end of a message.
	CheckTimeout time.Duration
	// Metrics counts every finished message (nil: none).
	Metrics *Metrics
	// Antivirus is the virus scan (spam.antivirus); nil: none.
	Antivirus *Antivirus
	// ARC seals verified mail forwarded off the node (forwarding.arc, see
	// arc.go); nil: off.
	ARC *ARCSealing
	// SRS rewrites the envelope sender of forwarded mail (forwarding.srs,
	// srs.go); nil: off.
	SRS *SRS
}

// NewFilter builds the Filter for an inventory whose keys are loaded.
func NewFilter(inv *inventory.Inventory, keys map[string][]dkim.Key, lookup LookupTXT) *Filter {
	return &Filter{
		Policy:   inv,
		Options:  acl.OptionsFrom(inv),
		Shadow:   inv.Policy.Shadow(),
		Hostname: inv.Node.Hostname,
		Keys:     keys,
		Checks:   DefaultChecks(lookup),

		Antivirus: NewAntivirus(inv.Spam.Antivirus),
		ARC:       newARCSealing(inv, lookup),
	}
}

func (f *Filter) now() time.Time {
	if f.Now != nil {
		return f.Now()
	}
	return time.Now()
}

func (f *Filter) log() *slog.Logger {
	if f.Log != nil {
		return f.Log
	}
	return slog.Default()
}

func (f *Filter) hasSelectors(domain string) bool { return len(f.Keys[domain]) > 0 }

// HeaderChange is one modification to send to the MTA at the end of the message.
type HeaderChange struct {
	Delete  bool   // delete the Index-th (1-based) field called Name
	Replace bool   // replace the value of the Index-th (1-based) field called Name
	Index   int    // Delete, Replace: occurrence of Name; insert: position (0 = top)
	Name    string // header field name
	Value   string // inserted value (folded with CRLF; the milter layer adapts it)
}

// Result is the outcome of a message: the decision record and the changes.
type Result struct {
	Decision Decision
	Changes  []HeaderChange
	// TempFail asks the MTA to refuse the message temporarily (signing failed:
	// better no mail than unsigned local mail; the spam engine is down and
	// on_engine_failure is tempfail).
	TempFail bool
	// Reply is the SMTP reply for TempFail or Reject ("451 4.7.1 ...",
	// "550 5.7.1 ..."); "" leaves a TempFail's text to the MTA.
	Reply string
	// Reject refuses the message for good with Reply (spam, DMARC).
	Reject bool
	// Quarantine, when not "", accepts the message into the MTA's hold
	// queue with this reason (after the header changes).
	Quarantine string
	// Sender, when not "", replaces the envelope sender (SRS, srs.go).
	Sender string
}

type txState int

const (
	stHeaders txState = iota
	stBody
	stDone
)

// Transaction is one message streaming through the filter. It is not safe
// for concurrent use; the MTA sends one message at a time per connection.
type Transaction struct {
	f        *Filter
	env      Envelope
	state    txState
	headers  []dkim.Header
	hdrBytes int
	from     []string
	forged   []int // occurrences (1-based) of Authentication-Results with our authserv-id
	arCount  int
	xspam    []HeaderChange // deletions of X-Spam-* fields that came with the message
	subject  string         // the first Subject: value
	hasSubj  bool
	decision Decision
	body     *dkim.BodyHasher
	runs     []CheckRun
	scan     *antivirus.Scan // the virus scan streaming, see antivirus.go
	arc      *arcRun         // ARC sealing of a forwarded message, see arc.go
}

// NewTransaction starts a message.
func (f *Filter) NewTransaction(env Envelope) *Transaction {
	return &Transaction{f: f, env: env}
}

// AddRcpt records one envelope recipient.
func (t *Transaction) AddRcpt(rcpt string) {
	t.env.Rcpts++
	c := t.f.Policy.Classify(rcpt)
	t.env.RcptClasses |= 1 << c
	if c == inventory.Local {
		t.env.LocalRcpt = true
	}
	if len(t.env.RcptList) < MaxRcptList {
		t.env.RcptList = append(t.env.RcptList, rcpt)
	}
}

// SetQueueID records the MTA's queue id once it is known.
func (t *Transaction) SetQueueID(id string) {
	if id != "" {
		t.env.QueueID = id
		t.decision.QueueID = id
	}
}

// Header records one header field: name and the raw value after the colon.
func (t *Transaction) Header(name, value string) error {
	if t.state != stHeaders {
		return fmt.Errorf("%w: header after the end of the headers", ErrProtocol)
	}
	if len(t.headers) >= MaxHeaders {
		return fmt.Errorf("%w: more than %d header fields", ErrLimit, MaxHeaders)
	}
	t.hdrBytes += len(name) + len(value) + 3
	if t.hdrBytes > MaxHeaderBytes {
		return fmt.Errorf("%w: more than %d bytes of header", ErrLimit, MaxHeaderBytes)
	}
	t.headers = append(t.headers, dkim.Header{Name: name, Value: value})
	switch {
	case strings.EqualFold(name, "From"):
		t.from = append(t.from, value)
	case strings.EqualFold(name, "Authentication-Results"):
		t.arCount++
		if authServID(value) == strings.ToLower(t.f.Hostname) {
			t.forged = append(t.forged, t.arCount)
		}
	case strings.EqualFold(name, "Subject"):
		if !t.hasSubj {
			t.subject, t.hasSubj = value, true
		}
	case isSpamHeader(name):
		n := 1
		for _, c := range t.xspam {
			if strings.EqualFold(c.Name, name) {
				n++
			}
		}
		t.xspam = append(t.xspam, HeaderChange{Delete: true, Index: n, Name: name})
	}
	return nil
}

// authServID returns the lower-cased authserv-id of an
// Authentication-Results value (RFC 8601: the first token, before ";").
func authServID(v string) string {
	v, _, _ = strings.Cut(mailauth.Unfold(v), ";")
	f := strings.Fields(v)
	if len(f) == 0 {
		return ""
	}
	return strings.ToLower(f[0])
}

// EndOfHeaders decides what happens to the message. When it returns Pass
// and NeedsBody is false, the rest of the message may be skipped.
func (t *Transaction) EndOfHeaders() Decision {
	if t.state != stHeaders {
		return t.decision
	}
	t.state = stBody
	t.decision = Decide(t.f.Policy, t.env, t.from, t.f.hasSelectors, t.f.Options)
	if t.decision.Action == Refuse && t.f.Shadow {
		// What the node did before strict sender login: the domain rule.
		would := t.decision.Reply
		opts := t.f.Options
		opts.StrictSenderLogin = false
		t.decision = Decide(t.f.Policy, t.env, t.from, t.f.hasSelectors, opts)
		t.decision.WouldReject = would
		t.decision.WouldReason = ReasonForeignFrom
	}
	switch t.decision.Action {
	case Sign:
		t.body = dkim.NewBodyHasher()
	case Verify:
		for _, c := range t.f.Checks {
			t.runs = append(t.runs, c.Start(t.env, t.headers))
		}
		t.startARC()
	}
	if t.f.Antivirus.scans(t.decision.Action) {
		t.startScan()
	}
	return t.decision
}

// NeedsBody reports whether the filter still has work for this message
// (hashing, checking, or removing forged Authentication-Results).
func (t *Transaction) NeedsBody() bool {
	return (t.decision.Action != Pass && t.decision.Action != Refuse) || len(t.forged) > 0
}

// Body takes the next chunk of the body (CRLF line ends, as Postfix sends it).
func (t *Transaction) Body(chunk []byte) error {
	if t.state != stBody {
		return fmt.Errorf("%w: body chunk before the end of the headers", ErrProtocol)
	}
	if t.body != nil {
		t.body.Write(chunk)
	}
	for _, r := range t.runs {
		if err := r.Body(chunk); err != nil {
			return err
		}
	}
	if t.scan != nil {
		t.scan.Write(chunk) // a failure is kept in the scan and counted at the end
	}
	if t.arc != nil {
		t.arc.v.Write(chunk)
	}
	return nil
}

// End finishes the message: it signs or collects the check results and
// returns the decision and the header changes.
func (t *Transaction) End(ctx context.Context) Result {
	if t.state == stHeaders {
		t.EndOfHeaders() // a message without body events
	}
	t.state = stDone
	res := Result{}
	d := &t.decision
	var scanned *finishedScan
	if t.scan != nil {
		scanned = t.finishScan()
	}
	for i := len(t.forged) - 1; i >= 0; i-- {
		// Delete from the bottom so that earlier occurrence numbers stay valid.
		res.Changes = append(res.Changes, HeaderChange{Delete: true, Index: t.forged[i], Name: "Authentication-Results"})
	}
	d.RemovedAR = len(t.forged)
	switch d.Action {
	case Refuse:
		res.Reject, res.Reply = true, d.Reply
	case Sign:
		sum := t.body.Sum()
		keys := t.f.Keys[d.FromDomain]
		now := t.f.now()
		var sigs []HeaderChange
		for _, k := range keys {
			v, err := dkim.Sign(k, t.headers, sum, now)
			if err != nil {
				d.Err = err.Error()
				res.TempFail = true
				break
			}
			d.Signed = append(d.Signed, k.Domain+"/"+k.Selector+"/"+k.Algorithm)
			sigs = append(sigs, HeaderChange{Index: 0, Name: "DKIM-Signature", Value: v})
		}
		// Each insert goes to the top: insert the last first so the first
		// selector's signature ends up on top.
		for i := len(sigs) - 1; i >= 0; i-- {
			res.Changes = append(res.Changes, sigs[i])
		}
	case Verify:
		if t.f.CheckTimeout > 0 {
			var cancel context.CancelFunc
			ctx, cancel = context.WithTimeout(ctx, t.f.CheckTimeout)
			defer cancel()
		}
		var results []authres.Result
		v := &d.Verdict
		for _, r := range t.runs {
			if dr, ok := r.(DependentRun); ok {
				results = append(results, dr.EndAfter(ctx, results, v)...)
			} else {
				results = append(results, r.End(ctx)...)
			}
		}
		t.runs = nil
		if len(results) == 0 {
			results = []authres.Result{&authres.DKIMResult{Value: authres.ResultNone}}
		}
		// One method result per line of the header, formatted once for it
		// and the decision record. (authres.Format leaves a space after a
		// result without properties; it goes.)
		for _, r := range results {
			d.Results = append(d.Results, strings.TrimSpace(authres.Format("", []authres.Result{r})[2:]))
		}
		d.Results = append(d.Results, t.arcResults(ctx)...)
		res.Changes = append(res.Changes, t.verdictChanges(v)...)
		res.Changes = append(res.Changes, HeaderChange{Index: 0, Name: "Authentication-Results", Value: " " + t.f.Hostname + ";\r\n\t" + strings.Join(d.Results, ";\r\n\t")})
		switch {
		case t.f.Shadow && (v.Disposition == Reject || v.Disposition == TempFail):
			d.WouldReject = v.Reply
		case t.f.Shadow && v.Disposition == Quarantine:
			d.WouldHold = v.Hold
		case v.Disposition == Reject:
			res.Reject, res.Reply = true, v.Reply
		case v.Disposition == TempFail:
			res.TempFail, res.Reply = true, v.Reply
		case v.Disposition == Quarantine:
			res.Quarantine = v.Hold
		}
	}
	if scanned != nil {
		t.applyScan(ctx, scanned, &res)
	}
	t.sealARC(ctx, &res)
	t.srsRewrite(&res)
	res.Decision = *d
	t.f.logDecision(res)
	t.f.Metrics.observe(t.f.Policy, res)
	return res
}

// verdictChanges are the spam gate's header changes, to be made before the
// Authentication-Results insert: forged X-Spam-* fields removed (bottom
// first, so occurrence numbers stay valid), the Subject tagged, and the
// X-Spam-* fields inserted at the top in the order Score, Status, Symbols
// (each insert goes on top, so the last field goes first).
func (t *Transaction) verdictChanges(v *Verdict) []HeaderChange {
	if !v.Scored {
		return nil
	}
	var out []HeaderChange
	for i := len(t.xspam) - 1; i >= 0; i-- {
		out = append(out, t.xspam[i])
	}
	// Shadow mode delivers what enforce mode would refuse: tagged, as
	// spam over tag_score is.
	if v.Disposition == Tag || v.Disposition == Quarantine || (t.f.Shadow && v.Disposition == Reject) {
		if c, ok := subjectChange(v.SubjectTag, t.subject, t.hasSubj); ok {
			out = append(out, c)
		}
	}
	hs := v.headers()
	for i := len(hs) - 1; i >= 0; i-- {
		out = append(out, hs[i])
	}
	return out
}

// Close releases what an unfinished message holds (running checks).
func (t *Transaction) Close() {
	for _, r := range t.runs {
		r.Abort()
	}
	t.runs = nil
	if t.scan != nil {
		t.scan.Close()
		t.scan = nil
	}
	if t.arc != nil {
		t.arc.v.Abort()
	}
	t.state = stDone
}

func (f *Filter) logDecision(res Result) {
	d := res.Decision
	// Typed attributes (LogAttrs) rather than key-value pairs: this is a
	// line per message, and boxing every value cost a third of it.
	attrs := make([]slog.Attr, 0, 20)
	attrs = append(attrs,
		slog.String("queue_id", d.QueueID), slog.String("client", d.ClientAddr), slog.String("origin", string(d.Origin)),
		slog.String("sender", d.Sender), slog.String("from", d.From), slog.Int("rcpts", d.Rcpts),
		slog.String("action", d.Action.String()), slog.String("reason", string(d.Reason)),
	)
	if d.AuthUser != "" {
		attrs = append(attrs, slog.String("user", d.AuthUser))
	}
	if d.Action == Refuse {
		attrs = append(attrs, slog.String("cell", cells(f.Policy, d)), slog.String("reply", d.Reply))
	}
	if len(d.Signed) > 0 {
		attrs = append(attrs, slog.String("signed", strings.Join(d.Signed, ",")))
	}
	if len(d.Results) > 0 {
		attrs = append(attrs, slog.String("results", strings.Join(d.Results, "; ")))
	}
	if d.RemovedAR > 0 {
		attrs = append(attrs, slog.Int("removed_forged_ar", d.RemovedAR))
	}
	attrs = srsAttrs(attrs, d)
	if v := d.Verdict; v.Scored || v.Disposition != Deliver {
		attrs = append(attrs, slog.String("spam_score", spam.FormatScore(v.Score)), slog.String("spam_engine", v.Engine),
			slog.String("disposition", v.Disposition.String()))
		if v.Reason != "" {
			attrs = append(attrs, slog.String("disposition_reason", v.Reason))
		}
		// The score's parts, for mailnode why: what the builtin checks and
		// the engine each gave, and the symbols that made them.
		if v.Scored {
			attrs = append(attrs, slog.String("spam_builtin", spam.FormatScore(v.BuiltinScore)))
			if v.Engine != "builtin" {
				attrs = append(attrs, slog.String("spam_engine_score", spam.FormatScore(v.EngineScore)))
			}
			if len(v.Symbols) > 0 {
				attrs = append(attrs, slog.String("spam_symbols", logSymbols(v.Symbols, maxLogSymbols)))
			}
		}
		if v.EngineErr != "" {
			attrs = append(attrs, slog.String("engine_error", v.EngineErr))
		}
	}
	if av := d.Antivirus; av.Result != "" {
		attrs = append(attrs, slog.String("antivirus", av.Result))
		if av.Virus != "" {
			attrs = append(attrs, slog.String("virus", av.Virus))
		}
		if av.Err != "" {
			attrs = append(attrs, slog.String("antivirus_error", av.Err))
		}
		if av.Truncated {
			attrs = append(attrs, slog.Bool("antivirus_truncated", true))
		}
		if res.Reply != "" && (strings.HasPrefix(res.Reply, ReplyVirus) || res.Reply == ReplyAntivirus) {
			attrs = append(attrs, slog.String("reply", res.Reply))
		}
	}
	if d.WouldReject != "" || d.WouldHold != "" {
		attrs = append(attrs, slog.String("mode", "shadow"), slog.String("cell", cells(f.Policy, d)))
		if d.WouldReason != "" {
			attrs = append(attrs, slog.String("would_reason", string(d.WouldReason)))
		}
		if d.WouldReject != "" {
			attrs = append(attrs, slog.String("would_reject", d.WouldReject))
		}
		if d.WouldHold != "" {
			attrs = append(attrs, slog.String("would_hold", d.WouldHold))
		}
	}
	level := slog.LevelInfo
	if d.Err != "" {
		attrs = append(attrs, slog.String("error", d.Err))
		level = slog.LevelWarn
	}
	// The record goes to the handler directly: Logger.LogAttrs would first
	// walk the stack for the caller's program counter, a third of the
	// line's cost, for a source that no milterd handler prints.
	ctx := context.Background()
	if h := f.log().Handler(); h.Enabled(ctx, level) {
		r := slog.NewRecord(time.Now(), level, "milterd decision", 0)
		r.AddAttrs(attrs...)
		_ = h.Handle(ctx, r)
	}
}

// maxLogSymbols bounds spam_symbols in the decision line.
const maxLogSymbols = 50

// logSymbols joins up to max symbols as "NAME(score)" with commas.
func logSymbols(syms []spam.Symbol, max int) string {
	var b strings.Builder
	for i, x := range syms {
		if i == max {
			b.WriteString(",...")
			break
		}
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(x.String())
	}
	return b.String()
}
