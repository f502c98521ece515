package policy

import (
	"strings"

	"github.com/mailnode/mailnode/acl"
	"github.com/mailnode/mailnode/inventory"
	"github.com/mailnode/mailnode/state"
)

// Cell, Reason and Options are the matrix's (package acl): a Decision
// carries the cell and reason acl.Decide gave, and Options change its rules.
type (
	Cell    = acl.Cell
	Reason  = acl.Reason
	Options = acl.Options
)

// OptionsFrom reads the matrix's options from an inventory (acl.OptionsFrom).
func OptionsFrom(inv *inventory.Inventory) Options { return acl.OptionsFrom(inv) }

// Action is what policyd tells Postfix.
type Action int

// The only actions policyd ever gives: it never answers OK and never an
// empty action, so Postfix's own relay restrictions always run after it.
// Decide gives Dunno (the matrix accepts) or Reject; Defer comes only from
// the stateful step (Guard: greylisting, rate limits) on a recipient the
// matrix accepted.
const (
	Dunno  Action = iota // no opinion: Postfix's restrictions decide
	Reject               // a 550 with one of the matrix's texts
	Defer                // a 450 of greylisting or a rate limit
)

func (a Action) String() string {
	switch a {
	case Reject:
		return "reject"
	case Defer:
		return "defer"
	}
	return "dunno"
}

// ReasonNotRcpt: a protocol state other than RCPT; the matrix is decided at
// RCPT only. Every other reason is one of the matrix's rules (acl.ReasonInbound, ...).
const ReasonNotRcpt Reason = "not-rcpt-stage"

// Decision is the one record Decide returns for a request.
type Decision struct {
	Stage     string // the protocol state decided at ("RCPT" for the matrix)
	Cell      Cell   // meaningful when Reason != ReasonNotRcpt
	Action    Action
	Reason    Reason
	Reply     string // the action= value: "DUNNO" or "550 5.7.1 ..."
	SpamCheck bool   // accepted mail that milterd must spam-check
	// RecipientBase: the recipient without its extension
	// (acl.Verdict.RecipientBase), "" when it has none.
	RecipientBase string

	// The stateful step (Guard.Apply), "" when it did not run: why
	// greylisting passed or deferred the recipient (state.ReasonNew,
	// ReasonPassed, ...), and the rate limit's verdict for an authorized
	// sender (state.ReasonWithinLimit, ReasonOverMessages, ...).
	Greylist  state.Reason
	RateLimit state.Reason

	// WouldReject is, in shadow mode (policy.mode: shadow), the reply
	// enforce mode would have given: a 550 of the matrix or a 450 of
	// greylisting or a rate limit. The decision then answers DUNNO.
	WouldReject string
}

// Shadow turns a refusal into DUNNO, keeping the refusal's reply in
// WouldReject; Cell, Reason, Greylist and RateLimit stay as decided.
// Postfix's own restrictions run after DUNNO as always, so shadow mode
// loosens nothing Postfix enforces itself (reject_unauth_destination).
func (d *Decision) Shadow() {
	if d.Action == Dunno {
		return
	}
	d.WouldReject = d.Reply
	d.Action = Dunno
	d.Reply = replyDunno
}

// WouldReason names what would have refused a shadowed decision: the
// matrix's reason for its 550s, "greylist-<why>" or "ratelimit-<why>" for
// a 450 of the stateful step.
func (d *Decision) WouldReason() string {
	switch {
	case d.WouldReject == "":
		return ""
	case strings.HasPrefix(d.WouldReject, "450 ") && d.RateLimit != "":
		return "ratelimit-" + string(d.RateLimit)
	case strings.HasPrefix(d.WouldReject, "450 ") && d.Greylist != "":
		return "greylist-" + string(d.Greylist)
	}
	return string(d.Reason)
}

const replyDunno = "DUNNO"

// Decide applies the ACL matrix (acl.Decide) to one request. It is a pure
// function of its arguments, answers DUNNO at every protocol state but RCPT
// and where the matrix accepts, the matrix's 550 where it rejects, and never
// returns OK or an empty reply.
func Decide(req Request, inv *inventory.Inventory, opts Options) (d Decision) {
	stage := req.ProtocolState
	if stage == "" {
		stage = "RCPT"
	}
	d.Reply = replyDunno
	if !strings.EqualFold(stage, "RCPT") {
		d.Stage = stage
		d.Reason = ReasonNotRcpt
		return d
	}
	// Field by field and in place (acl.Verdict.Decide): a composite
	// literal or a returned Verdict is built in a temporary and block-copied,
	// which measurably slows the hot path (BenchmarkDecide).
	var env acl.Envelope
	env.ClientAddress = req.ClientAddress
	env.SASLUsername = req.SASLUsername
	env.Sender = req.Sender
	env.Recipient = req.Recipient
	var v acl.Verdict
	v.Decide(&env, inv, opts)
	d.Stage = "RCPT"
	d.Cell = v.Cell
	d.Reason = v.Reason
	d.SpamCheck = v.SpamCheck
	d.RecipientBase = v.RecipientBase
	if v.Action == acl.Reject {
		d.Action = Reject
		d.Reply = v.Reply
	}
	return d
}
