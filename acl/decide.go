package acl

import (
	"github.com/mailnode/mailnode/inventory"
)

// Action is the matrix's answer for one recipient.
type Action int

// The matrix accepts or rejects; nothing else. What an acceptance means on
// the wire is the caller's business: policyd answers DUNNO, so that
// Postfix's own relay restrictions still run after it.
const (
	Accept Action = iota // the recipient may be given this mail
	Reject               // a 550 with one of the matrix's texts
)

func (a Action) String() string {
	if a == Reject {
		return "reject"
	}
	return "accept"
}

// Reason names why a verdict came out as it did, one constant per rule.
type Reason string

// The rules of docs/design.md's matrix, in the order Decide applies them.
const (
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

// Envelope is what the matrix reads about one recipient: the session's
// client address and SASL login, and the envelope sender and recipient as
// the MTA reported them.
type Envelope struct {
	ClientAddress string // "" or unparsable: never trusted
	SASLUsername  string // "" when the session did not authenticate
	Sender        string // "" or "<>" for the null sender
	Recipient     string
}

// Verdict is the one record Decide returns for an envelope.
type Verdict struct {
	Cell      Cell
	Action    Action
	Reason    Reason
	Reply     string // a rejection's reply, "550 5.7.1 ..."; "" when accepted
	SpamCheck bool   // accepted mail that milterd must spam-check
	// RecipientBase is the recipient without its extension when
	// postfix.recipient_delimiter split one off (inventory.Address.Base),
	// "" otherwise: the address greylisting keys on.
	RecipientBase string
}

// Options are the inventory's policy settings that change verdicts.
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

// The reply texts of docs/design.md. Postfix turns "REJECT text" into 554,
// so a reply carries its own code: policyd answers action=550 5.7.1 text.
const (
	replyAuthRequired   = "550 5.7.1 Please authenticate for send mail from domain <"
	replyForeignSender  = "550 5.7.1 Please use own mail service for send mail from <"
	replyRelayDenied    = "550 5.7.1 Sorry, relay for <"
	replyRelayDeniedEnd = "> not permitted"
	replyListPrefix     = "550 5.7.1 Sorry, <"
	replyListEnd        = "> accepts mail from internal senders only"
)

// Decide applies the ACL matrix to one recipient. It is a pure function of
// its arguments.
//
// Addresses are classified as inventory.Classify does (exact domain, any
// case, trailing dot, IDN). An address without a domain is qualified with
// node.hostname, as Postfix's append_at_myorigin does before it routes it.
// The null sender is local for an authorized session and outside otherwise
// (NullSenderClass). Addresses in reply texts are echoed as the MTA reported
// them (control characters replaced, cut at 256 bytes); the domain of
// "Please authenticate" is the normalized one the matrix matched.
func Decide(env Envelope, inv *inventory.Inventory, opts Options) Verdict {
	var v Verdict
	v.Decide(&env, inv, opts)
	return v
}

// Decide sets v to Decide(*env, inv, opts) in place. It is policyd's hot
// path: a Verdict or Envelope passed by value is copied between registers
// and the stack, which costs policy.Decide about 5% (BenchmarkDecide).
func (v *Verdict) Decide(env *Envelope, inv *inventory.Inventory, opts Options) {
	*v = Verdict{}
	auth := inv.Authorized(env.ClientAddress, env.SASLUsername)
	v.Cell.Auth = auth

	nullSender := IsNullSender(env.Sender)
	var sender inventory.Address
	if nullSender {
		v.Cell.Sender = NullSenderClass(auth)
	} else {
		sender = lookup(inv, env.Sender)
		v.Cell.Sender = sender.Class
	}
	rcpt := lookup(inv, env.Recipient)
	v.Cell.Recipient = rcpt.Class
	v.RecipientBase = rcpt.Base

	switch {
	case auth == inventory.AuthNone && v.Cell.Sender == inventory.Outside:
		if rcpt.Class == inventory.Outside {
			v.reject(ReasonRelayDenied, replyRelayDenied+echo(env.Recipient)+replyRelayDeniedEnd)
			return
		}
	case auth == inventory.AuthNone && v.Cell.Sender == inventory.Local:
		v.reject(ReasonAuthRequired, replyAuthRequired+echo(sender.Domain)+">")
		return
	case v.Cell.Sender != inventory.Local:
		// relay without authorization; outside or relay with it.
		v.reject(ReasonForeignSender, replyForeignSender+echo(env.Sender)+">")
		return
	default:
		// local sender, authenticated or trusted
		if opts.StrictSenderLogin && auth == inventory.AuthSASL && !nullSender &&
			!inv.MayUseSender(env.SASLUsername, env.Sender) {
			v.reject(ReasonSenderLogin, replyForeignSender+echo(env.Sender)+">")
			return
		}
	}
	// The matrix accepts. An internal list still wants an authorized local sender.
	if rcpt.List && !(v.Cell.Sender == inventory.Local && auth != inventory.AuthNone) {
		v.reject(ReasonInternalList, replyListPrefix+echo(env.Recipient)+replyListEnd)
		return
	}
	v.Action = Accept
	if auth == inventory.AuthNone {
		v.Reason = ReasonInbound
	} else {
		v.Reason = ReasonAuthorized
	}
	v.SpamCheck = SpamCheck(v.Cell)
}

func (v *Verdict) reject(r Reason, reply string) {
	v.Action = Reject
	v.Reason = r
	v.Reply = reply
	v.SpamCheck = false
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
