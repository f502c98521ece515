package spam

import (
	"bytes"
	"io"
	"net/mail"
	"strings"
	"time"

	"blitiri.com.ar/go/spf"
	"github.com/mailnode/mailnode/dkim"
	"github.com/mailnode/mailnode/mailauth"
)

// The builtin checks and their weights. Each adds its weight to the score
// when it hits; the sum is added to the engine's score (or is the score
// with engine builtin). Positive weights are suspicious, negative ones
// vouch for the message. With the default tag_score 5 and reject_score 15:
// GTUBE alone rejects; a DNSBL listing (even with SPF and DMARC passing) or
// a failed DMARC quarantine policy alone tags; a missing Date or Message-ID alone does nothing visible.
var Weights = map[string]float64{
	"MN_GTUBE":            1000, // the body holds GTUBE, the anti-UBE test string
	"MN_DNSBL":            7,    // per zone of spam.dnsbl that lists the client (MN_DNSBL_<ZONE>)
	"MN_SPF_FAIL":         3,    // SPF -all for the client
	"MN_SPF_SOFTFAIL":     1,    // SPF ~all
	"MN_SPF_PERMERROR":    0.5,  // broken SPF record
	"MN_SPF_PASS":         -0.5, // the client may send for the MAIL FROM domain
	"MN_DKIM_FAIL":        2,    // signed, and no signature verifies
	"MN_DKIM_PASS":        -0.5, // a signature verifies
	"MN_DMARC_FAIL":       3,    // DMARC fails, policy none
	"MN_DMARC_QUARANTINE": 6,    // DMARC fails, the domain asks for quarantine (or reject)
	"MN_DMARC_PASS":       -1,   // DMARC passes
	"MN_MISSING_FROM":     3,    // no From: (RFC 5322 requires one)
	"MN_MULTI_FROM":       3,    // more than one From: field
	"MN_BAD_FROM":         2,    // From: that is not one valid address list
	"MN_FROM_OWN_DOMAIN":  2,    // From: in one of our local domains, from an outside unauthenticated sender
	"MN_MISSING_DATE":     1,    // no Date:
	"MN_BAD_DATE":         1,    // Date: that does not parse
	"MN_FUTURE_DATE":      1.5,  // Date: more than a day ahead
	"MN_MISSING_MID":      1,    // no Message-ID:
	"MN_MISSING_SUBJECT":  0.5,  // no Subject:
}

func sym(name string) Symbol {
	return Symbol{Name: name, Score: Weights[name], HasScore: true}
}

// GTUBE is the Generic Test for Unsolicited Bulk Email: a message whose
// body holds it is spam by definition (SpamAssassin's and rspamd's test).
const GTUBE = "XJS*C4JDBQADN1.NSBN3*2IDNEN*GTUBE-STANDARD-ANTI-UBE-TEST-EMAIL*C.34X"

var gtube = []byte(GTUBE)

// GTUBEScanner finds GTUBE in a body given chunk by chunk, also across
// chunk boundaries, keeping only the last len(GTUBE)-1 bytes.
type GTUBEScanner struct {
	tail  []byte
	found bool
}

// Write implements io.Writer; it never fails.
func (s *GTUBEScanner) Write(p []byte) (int, error) {
	n := len(p)
	if s.found || n == 0 {
		return n, nil
	}
	keep := len(gtube) - 1
	if len(s.tail) > 0 {
		// Only a match that starts in the tail and ends in p is new here.
		head := p
		if len(head) > keep {
			head = head[:keep]
		}
		joined := append(s.tail[:len(s.tail):len(s.tail)], head...)
		if bytes.Contains(joined, gtube) {
			s.found = true
			return n, nil
		}
	}
	if bytes.Contains(p, gtube) {
		s.found = true
		return n, nil
	}
	if len(p) >= keep {
		s.tail = append(s.tail[:0], p[len(p)-keep:]...)
	} else {
		s.tail = append(s.tail, p...)
		if len(s.tail) > keep {
			s.tail = append(s.tail[:0], s.tail[len(s.tail)-keep:]...)
		}
	}
	return n, nil
}

// Found reports whether GTUBE was seen.
func (s *GTUBEScanner) Found() bool { return s.found }

var _ io.Writer = (*GTUBEScanner)(nil)

// HeaderSymbols runs the header sanity checks. isLocal tells whether a
// domain is one of the node's local domains (nil: never); the message is
// inbound from an outside, unauthenticated sender, so a local From: domain
// is suspicious.
func HeaderSymbols(headers []dkim.Header, now time.Time, isLocal func(domain string) bool) []Symbol {
	var from, date, mid, subject []string
	for _, h := range headers {
		switch strings.ToLower(h.Name) {
		case "from":
			from = append(from, h.Value)
		case "date":
			date = append(date, h.Value)
		case "message-id":
			mid = append(mid, h.Value)
		case "subject":
			subject = append(subject, h.Value)
		}
	}
	var out []Symbol
	switch len(from) {
	case 0:
		out = append(out, sym("MN_MISSING_FROM"))
	case 1:
		l, err := mailauth.ParseFrom(from[0])
		if err != nil || len(l) == 0 {
			out = append(out, sym("MN_BAD_FROM"))
			break
		}
		if isLocal != nil {
			for _, a := range l {
				if i := strings.LastIndexByte(a.Address, '@'); i >= 0 && isLocal(a.Address[i+1:]) {
					out = append(out, sym("MN_FROM_OWN_DOMAIN"))
					break
				}
			}
		}
	default:
		out = append(out, sym("MN_MULTI_FROM"))
	}
	if len(date) == 0 {
		out = append(out, sym("MN_MISSING_DATE"))
	} else if t, err := parseDate(strings.TrimSpace(mailauth.Unfold(date[0]))); err != nil {
		out = append(out, sym("MN_BAD_DATE"))
	} else if t.After(now.Add(24 * time.Hour)) {
		out = append(out, sym("MN_FUTURE_DATE"))
	}
	if len(mid) == 0 {
		out = append(out, sym("MN_MISSING_MID"))
	}
	if len(subject) == 0 {
		out = append(out, sym("MN_MISSING_SUBJECT"))
	}
	return out
}

// AuthResults is what the builtin checks take from SPF, DKIM and DMARC.
type AuthResults struct {
	SPF       spf.Result
	DKIMPass  int // signatures that verified
	DKIMFail  int // signatures that failed (fail or permerror)
	DMARC     string
	DMARCDisp string // disposition: none, quarantine, reject
}

// AuthSymbols scores the authentication results.
func AuthSymbols(a AuthResults) []Symbol {
	var out []Symbol
	switch a.SPF {
	case spf.Pass:
		out = append(out, sym("MN_SPF_PASS"))
	case spf.Fail:
		out = append(out, sym("MN_SPF_FAIL"))
	case spf.SoftFail:
		out = append(out, sym("MN_SPF_SOFTFAIL"))
	case spf.PermError:
		out = append(out, sym("MN_SPF_PERMERROR"))
	}
	switch {
	case a.DKIMPass > 0:
		out = append(out, sym("MN_DKIM_PASS"))
	case a.DKIMFail > 0:
		out = append(out, sym("MN_DKIM_FAIL"))
	}
	switch a.DMARC {
	case "pass":
		out = append(out, sym("MN_DMARC_PASS"))
	case "fail":
		if a.DMARCDisp == "quarantine" || a.DMARCDisp == "reject" {
			out = append(out, sym("MN_DMARC_QUARANTINE"))
		} else {
			out = append(out, sym("MN_DMARC_FAIL"))
		}
	}
	return out
}

// DNSBLSymbols scores the listings: MN_DNSBL_<ZONE> per listing zone.
func DNSBLSymbols(ls []Listing) []Symbol {
	var out []Symbol
	for _, l := range ls {
		if l.Listed {
			s := sym("MN_DNSBL")
			s.Name = "MN_DNSBL_" + strings.ToUpper(strings.NewReplacer(".", "_", "-", "_").Replace(strings.TrimSuffix(l.Zone, ".")))
			out = append(out, s)
		}
	}
	return out
}

// Sum adds up the weights of symbols.
func Sum(s []Symbol) float64 {
	var t float64
	for _, x := range s {
		t += x.Score
	}
	return t
}

// parseDate is mail.ParseDate, which tries its layouts in turn: the usual
// RFC 5322 form ("Sun, 1 Mar 2026 11:59:00 +0000") is its thirteenth, and
// each failure costs an error value. That form is tried first; whatever it
// parses, mail.ParseDate parses the same way.
func parseDate(s string) (time.Time, error) {
	if t, err := time.Parse("Mon, 2 Jan 2006 15:04:05 -0700", s); err == nil {
		return t, nil
	}
	return mail.ParseDate(s)
}
