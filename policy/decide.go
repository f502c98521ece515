package policy

import (
	"strings"

	"github.com/mailnode/mailnode/inventory"
	"github.com/mailnode/mailnode/state"
)

// Cell is one cell of the ACL matrix: who sends, to whom, how authorized.
type Cell struct {
	Sender    inventory.Class
	Auth      inventory.Auth
	Recipient inventory.Class
}

// String names the cell as the mail log and metrics do: "outside/none->local".
func (c Cell) String() string {
	return c.Sender.String() + "/" + c.Auth.String() + "->" + c.Recipient.String()
}

// SpamCheck tells milterd whether the matrix turns spam checking on for a
// cell: only for mail from an outside sender, neither authenticated nor
// trusted, to a local domain. Everything else that is accepted passes the
// spam engine untouched.
func SpamCheck(c Cell) bool {
	return c.Sender == inventory.Outside && c.Auth == inventory.AuthNone && c.Recipient == inventory.Local
}

// SpamCheckAny applies SpamCheck to every cell a message touches: the
// sender's class and authorization with each recipient class present
// (rcptClasses has bit 1<<class set for each inventory.Class among the
// recipients). One copy of the message goes to everyone, so milterd checks
// it when any of its cells says so.
func SpamCheckAny(sender inventory.Class, auth inventory.Auth, rcptClasses uint8) bool {
	for _, rc := range []inventory.Class{inventory.Local, inventory.Relay, inventory.Outside} {
		if rcptClasses&(1<<rc) != 0 && SpamCheck(Cell{Sender: sender, Auth: auth, Recipient: rc}) {
			return true
		}
	}
	return false
}

// IsNullSender tells whether an envelope sender is the null sender: empty
// or "<>", surrounding white space ignored.
func IsNullSender(s string) bool {
	s = strings.TrimSpace(s)
	return s == "" || s == "<>"
}

// NullSenderClass is the matrix's class of the null sender: local for an
// authorized session, outside otherwise.
func NullSenderClass(auth inventory.Auth) inventory.Class {
	if auth == inventory.AuthNone {
		return inventory.Outside
	}
	return inventory.Local
}

// Action is what policyd tells Postfix.
type Action int

// The only actions policyd ever gives: it never answers OK and never an
// empty action, so Postfix's own relay restrictions always run after it.
// Decide gives Dunno or Reject; Defer comes only from the stateful step
// (Guard: greylisting, rate limits) on a recipient the matrix accepted.
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

// Reason names why a decision came out as it did, one constant per rule.
type Reason string

// The rules of DESIGN.md's matrix, in the order Decide applies them.
const (
	// ReasonNotRcpt: a protocol state other than RCPT; the matrix is decided at RCPT only.
	ReasonNotRcpt Reason = "not-rcpt-stage"
	// ReasonInbound: an outside sender, neither authenticated nor trusted, to a local or relay domain.
	ReasonInbound Reason = "inbound"
	// ReasonRelayDenied: an outside sender, neither authenticated nor trusted, to an outside domain.
	ReasonRelayDenied Reason = "relay-denied"
	// ReasonAuthRequired: a local sender without authentication or trust.
	ReasonAuthRequired Reason = "auth-required"
	// ReasonForeignSender: a relay sender, or an authorized session using an outside or relay sender.
	ReasonForeignSender Reason = "foreign-sender"
	// ReasonSenderLogin: sender_login strict, and the login does not own the local sender address.
	ReasonSenderLogin Reason = "sender-login-mismatch"
	// ReasonInternalList: an internal list, and the sender is not an authorized local one.
	ReasonInternalList Reason = "internal-list"
	// ReasonAuthorized: a local sender, authenticated or trusted.
	ReasonAuthorized Reason = "authorized"
)

// Decision is the one record Decide returns for a request.
type Decision struct {
	Stage     string // the protocol state decided at ("RCPT" for the matrix)
	Cell      Cell   // meaningful when Reason != ReasonNotRcpt
	Action    Action
	Reason    Reason
	Reply     string // the action= value: "DUNNO" or "550 5.7.1 ..."
	SpamCheck bool   // accepted mail that milterd must spam-check

	// The stateful step (Guard.Apply), "" when it did not run: why
	// greylisting passed or deferred the recipient (state.ReasonNew,
	// ReasonPassed, ...), and the rate limit's verdict for an authorized
	// sender (state.ReasonWithinLimit, ReasonOverMessages, ...).
	Greylist  state.Reason
	RateLimit state.Reason
}

// Options are the inventory's policy settings that change decisions.
type Options struct {
	// StrictSenderLogin is policy.sender_login: strict. An authenticated user
	// then sends only as its own mailbox, its aliases and domain aliases that
	// reach only its mailbox (inventory.MayUseSender). Trusted clients have
	// no login and keep the domain-level rule; the null sender carries no
	// identity and stays allowed.
	StrictSenderLogin bool
}

// OptionsFrom reads the options from an inventory.
func OptionsFrom(inv *inventory.Inventory) Options {
	return Options{StrictSenderLogin: inv.Policy.SenderLogin == "strict"}
}

// The reply texts of DESIGN.md. Postfix turns "REJECT text" into 554, so the
// reply carries its own code: action=550 5.7.1 text.
const (
	replyDunno          = "DUNNO"
	replyAuthRequired   = "550 5.7.1 Please authenticate for send mail from domain <"
	replyForeignSender  = "550 5.7.1 Please use own mail service for send mail from <"
	replyRelayDenied    = "550 5.7.1 Sorry, relay for <"
	replyRelayDeniedEnd = "> not permitted"
	replyListPrefix     = "550 5.7.1 Sorry, <"
	replyListEnd        = "> accepts mail from internal senders only"
)

// Decide applies the ACL matrix to one request. It is a pure function of its
// arguments, answers DUNNO at every protocol state but RCPT, and never
// returns OK or an empty reply.
//
// Addresses are classified as inventory.Classify does (exact domain, any
// case, trailing dot, IDN). An address without a domain is qualified with
// node.hostname, as Postfix's append_at_myorigin does before it routes it.
// The null sender is local for an authorized session and outside otherwise.
// Addresses in reply texts are echoed as Postfix reported them (control
// characters replaced, cut at 256 bytes); the domain of "Please authenticate"
// is the normalized one the matrix matched.
func Decide(req Request, inv *inventory.Inventory, opts Options) Decision {
	stage := req.ProtocolState
	if stage == "" {
		stage = "RCPT"
	}
	if !strings.EqualFold(stage, "RCPT") {
		return Decision{Stage: stage, Action: Dunno, Reason: ReasonNotRcpt, Reply: replyDunno}
	}
	d := Decision{Stage: "RCPT"}
	auth := inv.Authorized(req.ClientAddress, req.SASLUsername)
	d.Cell.Auth = auth

	nullSender := IsNullSender(req.Sender)
	var sender inventory.Address
	if nullSender {
		d.Cell.Sender = NullSenderClass(auth)
	} else {
		sender = lookup(inv, req.Sender)
		d.Cell.Sender = sender.Class
	}
	rcpt := lookup(inv, req.Recipient)
	d.Cell.Recipient = rcpt.Class

	switch {
	case auth == inventory.AuthNone && d.Cell.Sender == inventory.Outside:
		if rcpt.Class == inventory.Outside {
			return d.reject(ReasonRelayDenied, replyRelayDenied+echo(req.Recipient)+replyRelayDeniedEnd)
		}
	case auth == inventory.AuthNone && d.Cell.Sender == inventory.Local:
		return d.reject(ReasonAuthRequired, replyAuthRequired+echo(sender.Domain)+">")
	case d.Cell.Sender != inventory.Local:
		// relay without authorization; outside or relay with it.
		return d.reject(ReasonForeignSender, replyForeignSender+echo(req.Sender)+">")
	default:
		// local sender, authenticated or trusted
		if opts.StrictSenderLogin && auth == inventory.AuthSASL && !nullSender &&
			!inv.MayUseSender(req.SASLUsername, req.Sender) {
			return d.reject(ReasonSenderLogin, replyForeignSender+echo(req.Sender)+">")
		}
	}
	// The matrix accepts. An internal list still wants an authorized local sender.
	if rcpt.List && !(d.Cell.Sender == inventory.Local && auth != inventory.AuthNone) {
		return d.reject(ReasonInternalList, replyListPrefix+echo(req.Recipient)+replyListEnd)
	}
	d.Action = Dunno
	d.Reply = replyDunno
	if auth == inventory.AuthNone {
		d.Reason = ReasonInbound
	} else {
		d.Reason = ReasonAuthorized
	}
	d.SpamCheck = SpamCheck(d.Cell)
	return d
}

func (d Decision) reject(r Reason, reply string) Decision {
	d.Action = Reject
	d.Reason = r
	d.Reply = reply
	d.SpamCheck = false
	return d
}

// lookup classifies an envelope address; one without a domain is qualified
// with the node's host name first.
func lookup(inv *inventory.Inventory, addr string) inventory.Address {
	a := inv.LookupAddress(addr)
	if a.Domain == "" && a.Local != "" {
		a = inv.LookupAddress(a.Local + "@" + inv.Node.Hostname)
	}
	return a
}

// maxEcho bounds an address echoed in a reply: RFC 5321's path limit.
const maxEcho = 256

// echo makes a client-supplied string safe inside a reply line.
func echo(s string) string {
	clean := true
	for i := 0; i < len(s); i++ {
		if s[i] < ' ' || s[i] == 0x7f {
			clean = false
			break
		}
	}
	if clean && len(s) <= maxEcho {
		return s
	}
	b := []byte(s)
	for i, c := range b {
		if c < ' ' || c == 0x7f {
			b[i] = '?'
		}
	}
	if len(b) > maxEcho {
		b = append(b[:maxEcho-3], "..."...)
	}
	return string(b)
}
