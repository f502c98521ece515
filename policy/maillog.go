package policy

import (
	"time"

	"github.com/mailnode/mailnode/maillog"
)

// logDecision writes the mail log's line for one decision (package
// maillog). rcpt is the recipient's ordinal within the message. A line
// reads, e.g.,
//
//	2026-11-24T16:03:05.123Z policyd queue_id=4XyZ1 client=mail.example.org[198.51.100.7] sasl_user="" from=<a@example.org> to=<b@example.com> state=RCPT cell=outside/none->local rcpt=1 action=DUNNO reason=inbound spam_check=on
//
// With greylisting or rate limits on, the stateful step's verdict follows
// (reason stays the matrix's rule):
//
//	... cell=outside/none->local rcpt=1 action="450 4.7.1 Greylisted, please try again in 300 seconds" reason=inbound greylist=new
//	... cell=local/auth->outside rcpt=1 action=DUNNO reason=authorized ratelimit=within-limit
//
// In shadow mode (policy.mode: shadow) a refusal is answered DUNNO and the
// reply enforce mode would have given follows; nothing else changes, and
// a line without a refusal reads as in enforce mode:
//
//	... cell=outside/none->outside rcpt=1 action=DUNNO reason=relay-denied would_reject="550 5.7.1 Sorry, relay for <x@elsewhere.test> not permitted"
//
// The line is built in an array on the stack, so it costs no allocation
// beyond what the log itself buffers.
func logDecision(l *maillog.Log, at time.Time, req *Request, d Decision, rcpt int) {
	var buf [512]byte
	ln := maillog.NewLine(buf[:0], at, "policyd")
	ln = ln.String("queue_id", req.QueueID)
	ln = ln.String("client", req.ClientName+"["+req.ClientAddress+"]")
	ln = ln.String("sasl_user", req.SASLUsername)
	ln = ln.Addr("from", req.Sender)
	ln = ln.Addr("to", req.Recipient)
	ln = ln.String("state", d.Stage)
	if d.Reason != ReasonNotRcpt {
		ln = ln.String("cell", d.Cell.String())
		ln = ln.Int("rcpt", rcpt)
	}
	ln = ln.String("action", d.Reply)
	ln = ln.String("reason", string(d.Reason))
	if d.SpamCheck {
		ln = ln.String("spam_check", "on")
	}
	if d.Greylist != "" {
		ln = ln.String("greylist", string(d.Greylist))
	}
	if d.RateLimit != "" {
		ln = ln.String("ratelimit", string(d.RateLimit))
	}
	if d.WouldReject != "" {
		ln = ln.String("would_reject", d.WouldReject)
	}
	l.Add(ln)
}
