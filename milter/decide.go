package milter

import (
	"strings"

	"github.com/mailnode/mailnode/acl"
	"github.com/mailnode/mailnode/inventory"
	"github.com/mailnode/mailnode/mailauth"
)

// Action is what milterd does with a message.
type Action int

// The three actions.
const (
	Pass   Action = iota // neither signed nor verified
	Sign                 // DKIM-signed with every selector of the From domain
	Verify               // inbound: the check chain runs, Authentication-Results added
)

func (a Action) String() string {
	switch a {
	case Sign:
		return "sign"
	case Verify:
		return "verify"
	}
	return "pass"
}

// Reason names why Decide chose its action.
type Reason string

// Every reason Decide gives.
const (
	ReasonSignAuth      Reason = "authenticated sender, From domain local"
	ReasonSignTrust     Reason = "trusted client, From domain local"
	ReasonSignLocal     Reason = "submitted on the node, From domain local"
	ReasonFromNotLocal  Reason = "authorized sender, From domain not local"
	ReasonNoSelectors   Reason = "From domain local but without DKIM selectors"
	ReasonBadFrom       Reason = "authorized sender, not exactly one From address"
	ReasonInbound       Reason = "outside sender to a local recipient: spam check on"
	ReasonNotInbound    Reason = "unauthorized sender, no local recipient or sender not outside: spam check off"
	ReasonTooManyHeader Reason = "header limit exceeded"
)

// Origin tells how the session is authorized.
type Origin string

// The origins Decide distinguishes.
const (
	OriginNone  Origin = "none"  // neither authenticated nor trusted
	OriginSASL  Origin = "sasl"  // SMTP AUTH ({auth_authen})
	OriginTrust Origin = "trust" // client address in node.trusted_networks
	OriginLocal Origin = "local" // submitted on the node (sendmail(1), cron): non_smtpd_milters
)

// Envelope is what the MTA told about one message before its headers.
type Envelope struct {
	QueueID         string
	ClientAddr      string // the connect address ("127.0.0.1", "2001:db8::1", "" for unix)
	LocalSubmission bool   // Postfix's non-SMTP pseudo connection (see LocalSubmission)
	AuthUser        string // {auth_authen}
	Sender          string // MAIL FROM without <>, "" for the null sender
	Rcpts           int    // recipients seen
	LocalRcpt       bool   // at least one recipient in a local domain
	// RcptClasses has bit 1<<class set for each inventory.Class among the
	// recipients (Decide also counts LocalRcpt as a local recipient).
	RcptClasses uint8
	Helo        string   // HELO/EHLO argument (SPF's HELO identity)
	ClientHost  string   // the client's host name as the MTA verified it ("unknown", "" when none)
	RcptList    []string // the recipients, up to MaxRcptList (for the spam engine)
}

// MaxRcptList bounds Envelope.RcptList: Postfix's default
// smtpd_recipient_limit.
const MaxRcptList = 1000

// LocalSubmission recognises the connection Postfix's cleanup(8) presents to
// non_smtpd_milters for mail submitted with sendmail(1) (cron, unix users,
// pickup): host "localhost", address 127.0.0.1 and port 0 — checked on this
// project's Postfix 3.7. smtpd(8) always reports the client's real TCP port,
// never 0, so no SMTP client can look like this.
func LocalSubmission(host, family string, port uint16, addr string) bool {
	return port == 0 && family == "tcp4" && addr == "127.0.0.1" && strings.EqualFold(host, "localhost")
}

// Decision is the one record milterd keeps per message: what it did and why.
// Transaction fills in the outcome (signatures made, check results).
type Decision struct {
	Envelope
	Origin     Origin
	From       string // the From: address ("" when not exactly one)
	FromDomain string
	Action     Action
	Reason     Reason
	Signed     []string // "domain/selector/algorithm" per signature made
	Results    []string // Authentication-Results method results, e.g. "dkim=pass header.d=example.org"
	RemovedAR  int      // forged Authentication-Results headers removed
	Err        string   // trouble at the end of the message
	// SpamCheck: the ACL matrix turns spam checking on for at least one
	// recipient (acl.SpamCheck of the message's cells); then Action is
	// Verify and Verdict holds what the inbound chain concluded.
	SpamCheck bool
	Verdict   Verdict
}

// Policy is what Decide needs from the inventory.
type Policy interface {
	Classify(address string) inventory.Class
	Trusted(clientAddr string) bool
}

// Decide chooses, once the headers are in, whether the message is signed,
// verified or passed. fromHeaders are the raw values of every From: header;
// hasSelectors tells whether a domain has signing keys.
func Decide(p Policy, env Envelope, fromHeaders []string, hasSelectors func(domain string) bool) Decision {
	d := Decision{Envelope: env, Origin: OriginNone}
	switch {
	case strings.TrimSpace(env.AuthUser) != "":
		d.Origin = OriginSASL
	case env.LocalSubmission:
		d.Origin = OriginLocal
	case p.Trusted(env.ClientAddr):
		d.Origin = OriginTrust
	}
	if len(fromHeaders) == 1 {
		if l, err := mailauth.ParseFrom(fromHeaders[0]); err == nil && len(l) == 1 {
			d.From = l[0].Address
			_, d.FromDomain = inventory.SplitAddress(d.From)
		}
	}
	if d.Origin != OriginNone {
		switch {
		case d.From == "":
			d.Reason = ReasonBadFrom
		case p.Classify(d.From) != inventory.Local:
			d.Reason = ReasonFromNotLocal
		case !hasSelectors(d.FromDomain):
			d.Reason = ReasonNoSelectors
		default:
			d.Action = Sign
			d.Reason = map[Origin]Reason{OriginSASL: ReasonSignAuth, OriginTrust: ReasonSignTrust, OriginLocal: ReasonSignLocal}[d.Origin]
		}
		return d
	}
	if d.SpamCheck = spamCheck(p, env, d.Origin); d.SpamCheck {
		d.Action = Verify
		d.Reason = ReasonInbound
		return d
	}
	d.Reason = ReasonNotInbound
	return d
}

// spamCheck applies the ACL matrix's rule to every cell the message
// touches (acl.SpamCheckAny): its sender class and authorization
// with each recipient class seen. The message is checked when any cell says
// so: one copy goes to everyone, so a message from outside with both local
// and relay (or outside) recipients is checked, and its verdict — headers,
// tag, reject — applies to all recipients alike. Only the local cell turns it
// on, so mail without a local recipient is never checked.
//
// The sender is classified as policyd (acl.Decide) does: the null sender is
// outside for an unauthorized session and local for an authorized one
// (acl.NullSenderClass); an address without a domain is qualified with
// the node's host name.
func spamCheck(p Policy, env Envelope, origin Origin) bool {
	auth := map[Origin]inventory.Auth{OriginNone: inventory.AuthNone, OriginSASL: inventory.AuthSASL,
		OriginTrust: inventory.AuthTrust, OriginLocal: inventory.AuthTrust}[origin]
	var sender inventory.Class
	switch {
	case acl.IsNullSender(env.Sender):
		sender = acl.NullSenderClass(auth)
	case !strings.Contains(env.Sender, "@"):
		// Postfix qualifies it with myorigin before routing; policyd too.
		if inv, ok := p.(*inventory.Inventory); ok && inv.Node.Hostname != "" {
			sender = p.Classify(env.Sender + "@" + inv.Node.Hostname)
		} else {
			sender = p.Classify(env.Sender)
		}
	default:
		sender = p.Classify(env.Sender)
	}
	classes := env.RcptClasses
	if env.LocalRcpt {
		classes |= 1 << inventory.Local
	}
	return acl.SpamCheckAny(sender, auth, classes)
}
