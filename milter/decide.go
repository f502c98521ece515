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
	Refuse               // refused at the end of the message with Decision.Reply, nothing signed
)

func (a Action) String() string {
	switch a {
	case Sign:
		return "sign"
	case Verify:
		return "verify"
	case Refuse:
		return "refuse"
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
	ReasonForeignFrom   Reason = "sender_login strict: a From address the login does not own"
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
	Reply      string   // Refuse: the SMTP reply
	Signed     []string // "domain/selector/algorithm" per signature made
	Results    []string // Authentication-Results method results, e.g. "dkim=pass header.d=example.org"
	RemovedAR  int      // forged Authentication-Results headers removed
	Err        string   // trouble at the end of the message
	// SpamCheck: the ACL matrix turns spam checking on for at least one
	// recipient (acl.SpamCheck of the message's cells); then Action is
	// Verify and Verdict holds what the inbound chain concluded.
	SpamCheck bool
	Verdict   Verdict
	// Shadow mode (policy.mode: shadow): the reply enforce mode would have
	// given (a refusal of Decide or of the spam gate's verdict), or the
	// hold reason of a quarantine, while the message went on as accepted.
	WouldReject string
	WouldHold   string
	WouldReason Reason // when WouldReject is Decide's refusal or the virus scan's, not the spam gate's
	// Antivirus is the virus scan's answer (spam.antivirus).
	Antivirus AVResult
	// SRS is the envelope sender the message was rewritten to
	// (forwarding.srs, srs.go); SRSSkipped says why a forwarded message's
	// sender was left as it was.
	SRS, SRSSkipped string
}

// Policy is what Decide needs from the inventory.
type Policy interface {
	Classify(address string) inventory.Class
	Trusted(clientAddr string) bool
	// MayUseSender is policy.sender_login strict's ownership rule, the one
	// policyd applies to the envelope sender (acl.Decide).
	MayUseSender(login, sender string) bool
}

// Decide chooses, once the headers are in, whether the message is signed,
// verified, passed or refused. fromHeaders are the raw values of every
// From: header; hasSelectors tells whether a domain has signing keys.
//
// With opts.StrictSenderLogin, an authenticated session's From: is held to
// what its login may send as, like the envelope sender at RCPT: every
// address of every From: header must be one MayUseSender allows, else the
// message is refused with the matrix's "Please use own mail service" reply
// naming the first foreign address (a From: that does not parse is named
// as written). Trusted clients and local submissions have no login and
// keep the domain rule; a message without a From: is left as before.
func Decide(p Policy, env Envelope, fromHeaders []string, hasSelectors func(domain string) bool, opts acl.Options) Decision {
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
	if d.Origin == OriginSASL && opts.StrictSenderLogin {
		if foreign, ok := foreignFrom(p, env.AuthUser, fromHeaders); ok {
			d.Action = Refuse
			d.Reason = ReasonForeignFrom
			d.Reply = acl.ForeignSenderReply(foreign)
			return d
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

// foreignFrom returns the first address of the From: headers that login
// may not send as (ok true), or the unfolded value of a From: header that
// holds no address it can read.
func foreignFrom(p Policy, login string, fromHeaders []string) (string, bool) {
	login = strings.TrimSpace(login)
	for _, h := range fromHeaders {
		l, err := mailauth.ParseFrom(h)
		if err != nil || len(l) == 0 {
			return strings.TrimSpace(mailauth.Unfold(h)), true
		}
		for _, a := range l {
			if !p.MayUseSender(login, a.Address) {
				return a.Address, true
			}
		}
	}
	return "", false
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
	sender, auth := senderCell(p, env, origin)
	return acl.SpamCheckAny(sender, auth, rcptClasses(env))
}

// senderCell is the sender's row of the matrix: its class and the
// session's authorization, classified as policyd (acl.Decide) does.
func senderCell(p Policy, env Envelope, origin Origin) (inventory.Class, inventory.Auth) {
	auth := map[Origin]inventory.Auth{OriginNone: inventory.AuthNone, OriginSASL: inventory.AuthSASL,
		OriginTrust: inventory.AuthTrust, OriginLocal: inventory.AuthTrust}[origin]
	switch {
	case acl.IsNullSender(env.Sender):
		return acl.NullSenderClass(auth), auth
	case !strings.Contains(env.Sender, "@"):
		// Postfix qualifies it with myorigin before routing; policyd too.
		if inv, ok := p.(*inventory.Inventory); ok && inv.Node.Hostname != "" {
			return p.Classify(env.Sender + "@" + inv.Node.Hostname), auth
		}
	}
	return p.Classify(env.Sender), auth
}

func rcptClasses(env Envelope) uint8 {
	classes := env.RcptClasses
	if env.LocalRcpt {
		classes |= 1 << inventory.Local
	}
	return classes
}

// cells names the matrix cells of a decision for the mail log, as policyd
// names one ("local/auth->outside"); recipients of several classes are
// joined with "+" ("local/auth->local+outside"). A spam-checked message
// names the one cell that turns checking on: its verdict is that cell's.
func cells(p Policy, d Decision) string {
	sender, auth := senderCell(p, d.Envelope, d.Origin)
	if d.SpamCheck {
		return acl.Cell{Sender: sender, Auth: auth, Recipient: inventory.Local}.String()
	}
	var rc []string
	classes := rcptClasses(d.Envelope)
	for _, c := range []inventory.Class{inventory.Local, inventory.Relay, inventory.Outside} {
		if classes&(1<<c) != 0 {
			rc = append(rc, c.String())
		}
	}
	return sender.String() + "/" + auth.String() + "->" + strings.Join(rc, "+")
}
