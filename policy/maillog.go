package policy

import (
	"time"

	"github.com/mailnode/mailnode/maillog"
)

// logDecision writes the mail log's record of one decision (package
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
// The fields live in an array on the stack (indexed, not appended: the
// compiler moves whatever append takes to the heap), so a line costs no
// allocation beyond what the log itself buffers.
func logDecision(l *maillog.Log, at time.Time, req *Request, d Decision, rcpt int) {
	var fs [13]maillog.Field
	fs[0] = maillog.String("queue_id", req.QueueID)
	fs[1] = maillog.String("client", req.ClientName+"["+req.ClientAddress+"]")
	fs[2] = maillog.String("sasl_user", req.SASLUsername)
	fs[3] = maillog.Addr("from", req.Sender)
	fs[4] = maillog.Addr("to", req.Recipient)
	fs[5] = maillog.String("state", d.Stage)
	n := 6
	add := func(f maillog.Field) { fs[n] = f; n++ }
	if d.Reason != ReasonNotRcpt {
		add(maillog.String("cell", d.Cell.String()))
		add(maillog.Int("rcpt", rcpt))
	}
	add(maillog.String("action", d.Reply))
	add(maillog.String("reason", string(d.Reason)))
	if d.SpamCheck {
		add(maillog.String("spam_check", "on"))
	}
	if d.Greylist != "" {
		add(maillog.String("greylist", string(d.Greylist)))
	}
	if d.RateLimit != "" {
		add(maillog.String("ratelimit", string(d.RateLimit)))
	}
	l.Add(maillog.Record{Time: at, Program: "policyd", Fields: fs[:n]})
}
