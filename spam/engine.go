// Package spam is mailnode's spam gate without the milter protocol: the
// builtin checks with their weights (GTUBE, header sanity, the SPF, DKIM and
// DMARC results turned into symbols), DNSBL lookups of the client through a
// resolver (package resolver), and clients for the two real engines, rspamd
// (HTTP /checkv2) and SpamAssassin's spamd (SPAMC/1.5). SPF and DMARC
// themselves are evaluated by package mailauth.
//
// milterd (package milter) runs these in its inbound chain on exactly the
// mail the ACL matrix says is spam-checked; see milter/spamchecks.go for
// the order and docs/flow.md for the whole path of a message.
package spam

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

// MaxEngineBytes caps what milterd sends to an engine: the header and the
// first bytes of the body, MaxEngineBytes in all. Rspamd and SpamAssassin
// judge a message by its header and beginning; spamc itself skips messages
// over 500 KiB. A longer message is cut (Message.Truncated) rather than
// skipped, so it is still scored, and milterd never holds more than this per
// message in flight.
const MaxEngineBytes = 512 << 10

// Message is what an engine is asked about.
type Message struct {
	ClientAddr string   // SMTP client address
	ClientName string   // its verified host name, "" or "unknown" when none
	Helo       string   // HELO/EHLO argument
	Sender     string   // MAIL FROM, "" for the null sender
	Rcpts      []string // envelope recipients
	QueueID    string
	Hostname   string // our host name (the MTA)
	Data       []byte // the message as sent: header, empty line, body (CRLF), at most MaxEngineBytes
	Truncated  bool   // Data is cut short
}

// Symbol is one rule that matched, with its weight.
type Symbol struct {
	Name     string
	Score    float64
	HasScore bool // false when the engine names rules without scores (spamd SYMBOLS)
}

// String formats the symbol as X-Spam-Symbols shows it: NAME(1.5), or
// NAME. Characters other than printable ASCII, and the separators ",", "(",
// ")", become "?", whatever an engine sent.
func (s Symbol) String() string {
	name := s.Name
	if len(name) > 100 {
		name = name[:100]
	}
	if strings.IndexFunc(name, badSymbolRune) >= 0 {
		name = strings.Map(func(r rune) rune {
			if badSymbolRune(r) {
				return '?'
			}
			return r
		}, name)
	}
	if !s.HasScore {
		return name
	}
	return name + "(" + FormatScore(s.Score) + ")"
}

func badSymbolRune(r rune) bool {
	return r <= ' ' || r > '~' || r == ',' || r == '(' || r == ')'
}

// FormatScore prints a score with at most two decimals, no exponent.
func FormatScore(f float64) string {
	s := strconv.FormatFloat(f, 'f', 2, 64)
	s = strings.TrimRight(s, "0")
	s = strings.TrimSuffix(s, ".")
	if s == "-0" {
		s = "0"
	}
	return s
}

// Report is an engine's verdict.
type Report struct {
	Score    float64  // the engine's score
	Required float64  // the engine's own threshold (informational)
	Action   string   // rspamd's action ("no action", "add header", "rewrite subject", "soft reject", "reject", "greylist"); "" for spamd
	Symbols  []Symbol // sorted by name
}

// Engine is a real spam engine.
type Engine interface {
	Name() string
	Check(ctx context.Context, m *Message) (*Report, error)
}

// ErrEngine marks an engine failure: unreachable, slow, or an answer that
// could not be read. milterd then applies spam.on_engine_failure.
var ErrEngine = errors.New("spam: engine failed")

func engineErr(name string, err error) error {
	return fmt.Errorf("%w: %s: %w", ErrEngine, name, err)
}

func sortSymbols(s []Symbol) {
	sort.Slice(s, func(i, j int) bool { return s[i].Name < s[j].Name })
}
