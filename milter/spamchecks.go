package milter

import (
	"context"
	"net/netip"
	"strings"
	"time"

	"blitiri.com.ar/go/spf"
	"github.com/emersion/go-msgauth/authres"
	"github.com/emersion/go-msgauth/dmarc"
	"github.com/mailnode/mailnode/dkim"
	"github.com/mailnode/mailnode/inventory"
	"github.com/mailnode/mailnode/mailauth"
	"github.com/mailnode/mailnode/resolver"
	"github.com/mailnode/mailnode/spam"
)

// InboundChecks is the whole inbound chain for mail the ACL matrix
// spam-checks, in this order (each step sees the results of those before it):
//
//  1. spf   — RFC 7208 for MAIL FROM (HELO for the null sender). Its DNS
//     lookups start at the end of the headers, while the body streams.
//  2. dkim  — every DKIM-Signature, verified as the body streams.
//  3. dmarc — the From: domain's policy (fetched while the body streams)
//     against the aligned SPF and DKIM results. A failing p=reject (after
//     pct=) rejects with 550 5.7.1, or holds the message when
//     spam.quarantine is set; p=quarantine weighs in as MN_DMARC_QUARANTINE.
//  4. spam  — the builtin checks (GTUBE, header sanity, the SPF/DKIM/DMARC
//     results, DNSBL lookups of the client started at the end of the
//     headers), then the engine (rspamd or spamd) when configured, with the
//     header and the first spam.MaxEngineBytes of the message. The builtin
//     score is added to the engine's. X-Spam-* headers on every checked
//     message; tag, hold or reject by score; see SpamCheck.
//
// Every DNS question goes to r (node.resolver) with its timeout; DKIM keys
// through lookup.
func InboundChecks(inv *inventory.Inventory, r resolver.Resolver, lookup LookupTXT) []Check {
	s := inv.Spam
	sc := &SpamCheck{
		TagScore:    s.TagScore,
		RejectScore: s.RejectScore,
		SubjectTag:  s.SubjectTag,
		Tempfail:    s.OnEngineFailure == "tempfail",
		Quarantine:  s.Quarantine,
		DNSBL:       s.DNSBL,
		Resolver:    r,
		Hostname:    inv.Node.Hostname,
		IsLocal:     func(d string) bool { return inv.ClassifyDomain(d) == inventory.Local },
	}
	switch s.Engine {
	case "rspamd":
		sc.Engine = &spam.Rspamd{URL: s.RspamdURL, Timeout: EngineTimeout}
	case "spamd":
		sc.Engine = &spam.Spamd{Address: s.SpamdAddress, Timeout: EngineTimeout}
	}
	// With the node's resolver (or a Mock), a check tries the resolver's
	// cache first and starts no goroutine for a sender seen before; lookup
	// is r's LookupTXT, or one that honours resolver.CacheOnly the same way.
	first := resolver.HonoursCacheOnly(r)
	sc.CacheFirst = first
	return []Check{
		&SPFCheck{Resolver: r, CacheFirst: first},
		&DKIMCheck{LookupTXT: lookup, MaxSignatures: 8, CacheFirst: first},
		&DMARCCheck{LookupTXT: r.LookupTXT, Quarantine: s.Quarantine, CacheFirst: first},
		sc,
	}
}

// EngineTimeout bounds one engine check; Filter.CheckTimeout should be
// longer, since it bounds the whole chain at the end of a message.
const EngineTimeout = 15 * time.Second

// DependentRun is a CheckRun whose results depend on the checks before it
// in the chain (DMARC on SPF and DKIM, the spam score on all three). The
// Transaction calls EndAfter instead of End, with the results so far and
// the verdict to add to.
type DependentRun interface {
	CheckRun
	EndAfter(ctx context.Context, prior []authres.Result, v *Verdict) []authres.Result
}

// SPFCheck evaluates SPF through the node's resolver.
type SPFCheck struct {
	Resolver spf.DNSResolver
	// CacheFirst: Resolver honours resolver.CacheOnly, and the check is
	// tried from its cache first (resolver.Start).
	CacheFirst bool
}

// Name implements Check.
func (c *SPFCheck) Name() string { return "spf" }

// Start implements Check: the evaluation runs at once when the resolver's
// cache answers all of it, in the background otherwise (resolver.Start).
func (c *SPFCheck) Start(env Envelope, _ []dkim.Header) CheckRun {
	ctx, cancel := checkContext(c.CacheFirst)
	r := &spfRun{cancel: cancel, done: make(chan struct{})}
	ip, _ := netip.ParseAddr(strings.TrimPrefix(env.ClientAddr, "IPv6:"))
	resolver.Start(ctx, r.done, func(ctx context.Context) {
		r.res = mailauth.CheckSPF(ctx, c.Resolver, ip, env.Helo, env.Sender)
	})
	return r
}

// checkContext is the context of one check's lookups, until its End or
// Abort; cacheFirst: its resolver honours resolver.CacheOnly.
func checkContext(cacheFirst bool) (context.Context, context.CancelFunc) {
	return context.WithCancel(lookupContext(cacheFirst))
}

// lookupContext is the context a check's lookups start from, marked
// resolver.CacheFirst when cacheFirst (the resolver honours CacheOnly).
func lookupContext(cacheFirst bool) context.Context {
	if cacheFirst {
		return resolver.CacheFirst(context.Background())
	}
	return context.Background()
}

type spfRun struct {
	cancel context.CancelFunc
	done   chan struct{}
	res    mailauth.SPF
}

func (r *spfRun) Body([]byte) error { return nil }
func (r *spfRun) Abort()            { r.cancel() }

func (r *spfRun) End(ctx context.Context) []authres.Result {
	defer r.cancel()
	select {
	case <-r.done:
	case <-ctx.Done():
		return []authres.Result{&authres.SPFResult{Value: authres.ResultTempError, Reason: "SPF check timed out"}}
	}
	out := &authres.SPFResult{Value: authres.ResultValue(r.res.Result)}
	if r.res.Identity == "helo" {
		out.Helo = strings.TrimPrefix(r.res.Sender, "postmaster@")
	} else {
		out.From = r.res.Sender
	}
	if r.res.Result != spf.Pass && r.res.Result != spf.Fail {
		out.Reason = r.res.Reason
	}
	return []authres.Result{out}
}

// DMARCCheck evaluates the From: domain's DMARC policy.
type DMARCCheck struct {
	LookupTXT  mailauth.TXTLookup
	Quarantine bool // hold failing p=reject mail instead of rejecting it
	CacheFirst bool // LookupTXT honours resolver.CacheOnly (SPFCheck)
}

// Name implements Check.
func (c *DMARCCheck) Name() string { return "dmarc" }

// Start implements Check: the record is fetched from the resolver's cache
// at once, or in the background (resolver.Start).
func (c *DMARCCheck) Start(_ Envelope, headers []dkim.Header) CheckRun {
	ctx, cancel := checkContext(c.CacheFirst)
	r := &dmarcRun{c: c, cancel: cancel, done: make(chan struct{})}
	var from []string
	for _, h := range headers {
		if strings.EqualFold(h.Name, "From") {
			from = append(from, h.Value)
		}
	}
	if len(from) == 1 {
		if l, err := mailauth.ParseFrom(from[0]); err == nil && len(l) == 1 {
			_, r.domain = inventory.SplitAddress(l[0].Address)
		}
	}
	if r.domain == "" || strings.HasPrefix(r.domain, "invalid:") {
		r.domain = ""
		close(r.done)
		return r
	}
	resolver.Start(ctx, r.done, func(ctx context.Context) {
		r.rec, r.sub, r.err = mailauth.LookupDMARC(ctx, c.LookupTXT, r.domain)
	})
	return r
}

type dmarcRun struct {
	c      *DMARCCheck
	cancel context.CancelFunc
	done   chan struct{}
	domain string
	rec    *dmarc.Record
	sub    bool
	err    error
}

func (r *dmarcRun) Body([]byte) error { return nil }
func (r *dmarcRun) Abort()            { r.cancel() }

// End is used only when DMARC runs without the verdict.
func (r *dmarcRun) End(ctx context.Context) []authres.Result {
	return r.EndAfter(ctx, nil, &Verdict{})
}

func (r *dmarcRun) EndAfter(ctx context.Context, prior []authres.Result, v *Verdict) []authres.Result {
	defer r.cancel()
	in := mailauth.DMARCInput{FromDomain: r.domain}
	for _, p := range prior {
		switch x := p.(type) {
		case *authres.SPFResult:
			in.SPF.Result = spf.Result(x.Value)
			if x.From != "" {
				_, in.SPF.Domain = inventory.SplitAddress(x.From)
			} else {
				in.SPF.Domain = strings.ToLower(x.Helo)
			}
		case *authres.DKIMResult:
			switch x.Value {
			case authres.ResultPass:
				in.DKIMPass = append(in.DKIMPass, x.Domain)
			case authres.ResultTempError:
				in.DKIMTemp = append(in.DKIMTemp, x.Domain)
			}
		}
	}
	var d mailauth.DMARC
	select {
	case <-r.done:
		d = mailauth.EvaluateDMARC(r.rec, r.sub, r.err, in)
	case <-ctx.Done():
		d = mailauth.DMARC{Result: "temperror", Domain: r.domain, Disposition: dmarc.PolicyNone, Reason: "DMARC lookup timed out"}
	}
	v.DMARC = d
	res := &authres.DMARCResult{Value: authres.ResultValue(d.Result), From: d.Domain}
	switch {
	case d.Result == "fail":
		res.Reason = "p=" + string(d.Policy) + " dis=" + string(d.Disposition)
	case d.Reason != "" && d.Result != "pass":
		res.Reason = d.Reason
	}
	if d.Result == "fail" && d.Disposition == dmarc.PolicyReject {
		if r.c.Quarantine {
			v.raise(Quarantine, "DMARC policy reject", "", QuarantineDMRC)
		} else {
			v.raise(Reject, "DMARC policy reject", ReplyDMARC+"<"+d.Domain+">", "")
		}
	}
	return []authres.Result{res}
}

// SpamCheck scores the message: builtin checks plus the engine, and turns
// the score into a disposition against spam.tag_score and reject_score.
//
//   - score >= RejectScore, or rspamd's action "reject": 550 5.7.1, or the
//     hold queue with Quarantine.
//   - score >= TagScore, or rspamd's "add header" / "rewrite subject":
//     Subject prefixed with SubjectTag, X-Spam-Status: Yes.
//   - rspamd's "soft reject": 451 4.7.1. Its "greylist" is ignored
//     (greylisting is policyd's job).
//   - engine unreachable, slow (EngineTimeout) or unreadable: with Tempfail
//     451 4.7.1, otherwise the message goes on with the builtin score and
//     engine_error="..." in X-Spam-Status. Never a silent pass.
type SpamCheck struct {
	Engine      spam.Engine // nil: builtin only
	TagScore    float64
	RejectScore float64
	SubjectTag  string
	Tempfail    bool // on_engine_failure: tempfail
	Quarantine  bool // hold instead of rejecting
	DNSBL       []string
	Resolver    spam.ALookup
	Hostname    string
	IsLocal     func(domain string) bool // From: in a local domain from outside is suspicious
	Now         func() time.Time
	// MaxEngineBytes caps what is sent to the engine; spam.MaxEngineBytes when 0.
	MaxEngineBytes int
	// CacheFirst: Resolver honours resolver.CacheOnly (SPFCheck).
	CacheFirst bool
	// ObserveEngine, when set, is told how long each engine check took.
	ObserveEngine func(engine string, took time.Duration, err error)
}

// Name implements Check.
func (c *SpamCheck) Name() string { return "spam" }

// Start implements Check: header checks now, DNSBL lookups from the
// resolver's cache at once or in the background (resolver.Start).
func (c *SpamCheck) Start(env Envelope, headers []dkim.Header) CheckRun {
	ctx, cancel := checkContext(c.CacheFirst)
	now := time.Now
	if c.Now != nil {
		now = c.Now
	}
	r := &spamRun{c: c, env: env, cancel: cancel, dnsblDone: make(chan struct{})}
	r.symbols = spam.HeaderSymbols(headers, now(), c.IsLocal)
	if len(c.DNSBL) > 0 && c.Resolver != nil {
		ip, _ := netip.ParseAddr(strings.TrimPrefix(env.ClientAddr, "IPv6:"))
		resolver.Start(ctx, r.dnsblDone, func(ctx context.Context) { r.listed = spam.CheckDNSBL(ctx, c.Resolver, ip, c.DNSBL) })
	} else {
		close(r.dnsblDone)
	}
	if c.Engine != nil {
		r.max = c.MaxEngineBytes
		if r.max <= 0 {
			r.max = spam.MaxEngineBytes
		}
		for _, h := range headers {
			r.data = append(r.data, h.Name...)
			r.data = append(r.data, ':')
			r.data = dkim.AppendCRLF(r.data, h.Value)
			r.data = append(r.data, '\r', '\n')
		}
		r.data = append(r.data, '\r', '\n')
		if len(r.data) > r.max {
			r.data, r.truncated = r.data[:r.max], true
		}
	}
	return r
}

type spamRun struct {
	c         *SpamCheck
	env       Envelope
	cancel    context.CancelFunc
	symbols   []spam.Symbol
	dnsblDone chan struct{}  // closed once listed is final
	listed    []spam.Listing // the DNSBL answers
	gtube     spam.GTUBEScanner
	data      []byte // for the engine: header and the first body bytes
	max       int
	truncated bool
}

func (r *spamRun) Body(chunk []byte) error {
	r.gtube.Write(chunk)
	if r.c.Engine != nil && !r.truncated {
		room := r.max - len(r.data)
		if len(chunk) > room {
			chunk, r.truncated = chunk[:room], true
		}
		r.data = append(r.data, chunk...)
	}
	return nil
}

func (r *spamRun) Abort() { r.cancel() }

func (r *spamRun) End(ctx context.Context) []authres.Result {
	return r.EndAfter(ctx, nil, &Verdict{})
}

func (r *spamRun) EndAfter(ctx context.Context, prior []authres.Result, v *Verdict) []authres.Result {
	defer r.cancel()
	c := r.c
	v.TagScore, v.RejectScore, v.SubjectTag = c.TagScore, c.RejectScore, c.SubjectTag
	if v.Disposition == Reject {
		return nil // refused already (DMARC): no engine call for nothing
	}
	v.Scored = true
	v.Engine = "builtin"
	syms := r.symbols
	if r.gtube.Found() {
		syms = append([]spam.Symbol{{Name: "MN_GTUBE", Score: spam.Weights["MN_GTUBE"], HasScore: true}}, syms...)
	}
	a := spam.AuthResults{DMARC: v.DMARC.Result, DMARCDisp: string(v.DMARC.Disposition)}
	for _, p := range prior {
		switch x := p.(type) {
		case *authres.SPFResult:
			a.SPF = spf.Result(x.Value)
		case *authres.DKIMResult:
			switch x.Value {
			case authres.ResultPass:
				a.DKIMPass++
			case authres.ResultFail, authres.ResultPermError:
				a.DKIMFail++
			}
		}
	}
	syms = append(syms, spam.AuthSymbols(a)...)
	select {
	case <-r.dnsblDone:
		syms = append(syms, spam.DNSBLSymbols(r.listed)...)
	case <-ctx.Done():
	}
	v.BuiltinScore = spam.Sum(syms)
	v.Symbols = syms
	var softReject bool
	if c.Engine != nil {
		v.Engine = c.Engine.Name()
		start := time.Now()
		rep, err := c.Engine.Check(ctx, &spam.Message{
			ClientAddr: r.env.ClientAddr, ClientName: r.env.ClientHost, Helo: r.env.Helo,
			Sender: r.env.Sender, Rcpts: r.env.RcptList, QueueID: r.env.QueueID,
			Hostname: c.Hostname, Data: r.data, Truncated: r.truncated,
		})
		r.data = nil
		if c.ObserveEngine != nil {
			c.ObserveEngine(v.Engine, time.Since(start), err)
		}
		if err != nil {
			v.EngineErr = err.Error()
		} else {
			v.EngineScore, v.EngineAction = rep.Score, rep.Action
			v.Symbols = append(v.Symbols, rep.Symbols...)
			softReject = rep.Action == "soft reject"
		}
	}
	v.Score = v.BuiltinScore + v.EngineScore
	switch {
	case v.Score >= c.RejectScore || v.EngineAction == "reject":
		if c.Quarantine {
			v.raise(Quarantine, "spam", "", QuarantineSpam)
		} else {
			v.raise(Reject, "spam", ReplySpam, "")
		}
	case v.EngineErr != "" && c.Tempfail:
		v.raise(TempFail, "engine failed", ReplyEngine, "")
	case softReject:
		v.raise(TempFail, "engine soft reject", ReplySoftSpam, "")
	case v.Score >= c.TagScore || v.EngineAction == "add header" || v.EngineAction == "rewrite subject":
		v.raise(Tag, "spam score above tag_score", "", "")
	}
	return nil
}
