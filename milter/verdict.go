package milter

import (
	"strings"

	"github.com/mailnode/mailnode/mailauth"
	"github.com/mailnode/mailnode/spam"
)

// Disposition is what becomes of a spam-checked message.
type Disposition int

// The dispositions, mildest first; a later check may only make the
// disposition stricter (raise), except that a confident verdict (reject,
// quarantine) wins over a temporary failure.
const (
	Deliver    Disposition = iota // accepted with the X-Spam headers
	Tag                           // accepted, Subject tagged, X-Spam-Status: Yes
	TempFail                      // refused for now: 451 4.7.1 (engine down with on_engine_failure tempfail)
	Quarantine                    // accepted into Postfix's hold queue
	Reject                        // refused: 550 5.7.1
)

func (d Disposition) String() string {
	return [...]string{"deliver", "tag", "tempfail", "quarantine", "reject"}[d]
}

// The SMTP replies of the spam gate.
const (
	ReplySpam      = "550 5.7.1 Message rejected as spam"
	ReplyDMARC     = "550 5.7.1 Message rejected by the DMARC policy of "
	ReplyEngine    = "451 4.7.1 Spam check temporarily unavailable, try again later"
	ReplySoftSpam  = "451 4.7.1 Message deferred by the spam engine, try again later"
	QuarantineSpam = "mailnode: spam score at or above reject_score"
	QuarantineDMRC = "mailnode: DMARC policy reject"
)

// Verdict is what the inbound chain concluded beyond
// Authentication-Results: DMARC's disposition and the spam score. It is
// part of the Decision record.
type Verdict struct {
	DMARC mailauth.DMARC // result, policy and disposition (Result "" when DMARC did not run)

	Scored       bool          // the spam checks ran: the X-Spam headers are added
	Score        float64       // builtin + engine
	BuiltinScore float64       // the builtin checks' part
	Engine       string        // builtin, rspamd or spamd
	EngineScore  float64       // the engine's part
	EngineAction string        // rspamd's action
	EngineErr    string        // the engine failed (unreachable, slow, bad answer)
	Symbols      []spam.Symbol // builtin checks, then the engine's rules
	TagScore     float64
	RejectScore  float64
	SubjectTag   string

	Disposition Disposition
	Reason      string // why the disposition, for the mail log
	Reply       string // Reject and TempFail: the SMTP reply
	Hold        string // Quarantine: the reason given to Postfix
}

// raise makes the disposition d if that is stricter.
func (v *Verdict) raise(d Disposition, reason, reply, hold string) {
	if d <= v.Disposition {
		return
	}
	v.Disposition, v.Reason, v.Reply, v.Hold = d, reason, reply, hold
}

// maxHeaderSymbols bounds X-Spam-Symbols (the builtin ones come first).
const maxHeaderSymbols = 200

// spamHeaderNames are the fields milterd writes; copies that came with a
// checked message are removed first, so a sender cannot vouch for itself.
var spamHeaderNames = []string{"X-Spam-Score", "X-Spam-Status", "X-Spam-Symbols", "X-Spam-Flag"}

func isSpamHeader(name string) bool {
	for _, n := range spamHeaderNames {
		if strings.EqualFold(n, name) {
			return true
		}
	}
	return false
}

// headers returns the X-Spam fields, values with their leading space:
//
//	X-Spam-Score: 3.5
//	X-Spam-Status: No, score=3.5 tag=5 reject=15 engine=rspamd action="no action"
//	X-Spam-Symbols: MN_MISSING_DATE(1), DATE_IN_PAST(1), ...
//
// An engine failure shows in X-Spam-Status as engine_error="..." (the score
// is then the builtin part alone).
func (v *Verdict) headers() []HeaderChange {
	flag := "No"
	if v.Disposition == Tag || v.Disposition >= Quarantine || v.Score >= v.TagScore {
		flag = "Yes"
	}
	status := flag + ", score=" + spam.FormatScore(v.Score) + " tag=" + spam.FormatScore(v.TagScore) +
		" reject=" + spam.FormatScore(v.RejectScore) + " engine=" + v.Engine
	if v.EngineAction != "" {
		status += " action=" + quote(v.EngineAction)
	}
	if v.EngineErr != "" {
		status += " engine_error=" + quote(v.EngineErr)
	}
	out := []HeaderChange{
		{Name: "X-Spam-Score", Value: " " + spam.FormatScore(v.Score)},
		{Name: "X-Spam-Status", Value: " " + fold(strings.Fields(status), " ")},
	}
	if len(v.Symbols) > 0 {
		syms := v.Symbols
		if len(syms) > maxHeaderSymbols {
			syms = syms[:maxHeaderSymbols]
		}
		s := make([]string, len(syms))
		for i, x := range syms {
			s[i] = x.String()
			if i < len(syms)-1 {
				s[i] += ","
			}
		}
		out = append(out, HeaderChange{Name: "X-Spam-Symbols", Value: " " + fold(s, " ")})
	}
	return out
}

// quote makes s a safe quoted string inside a header: printable ASCII
// only, no quotes or backslashes, at most 200 bytes.
func quote(s string) string {
	b := make([]byte, 0, len(s)+2)
	b = append(b, '"')
	for i := 0; i < len(s) && i < 200; i++ {
		c := s[i]
		if c < ' ' || c > '~' || c == '"' || c == '\\' {
			c = '?'
		}
		b = append(b, c)
	}
	return string(append(b, '"'))
}

// fold joins words with sep, breaking lines (CRLF TAB) before 78 columns.
func fold(words []string, sep string) string {
	var b strings.Builder
	line := 16 // room for the field name
	for i, w := range words {
		if i > 0 {
			if line+len(sep)+len(w) > 78 {
				b.WriteString("\r\n\t")
				line = 8
			} else {
				b.WriteString(sep)
				line += len(sep)
			}
		}
		b.WriteString(w)
		line += len(w)
	}
	return b.String()
}

// subject returns the change that puts tag in front of the Subject (value
// as received, leading space included; ok false when there was none).
func subjectChange(tag, value string, ok bool) (HeaderChange, bool) {
	if tag == "" {
		return HeaderChange{}, false
	}
	if !ok {
		return HeaderChange{Index: 0, Name: "Subject", Value: " " + tag}, true
	}
	rest := strings.TrimLeft(value, " \t")
	if strings.HasPrefix(rest, tag) {
		return HeaderChange{}, false
	}
	return HeaderChange{Replace: true, Index: 1, Name: "Subject", Value: " " + tag + " " + rest}, true
}
