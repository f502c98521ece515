package policy

import (
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"
)

// MailLog is the human mail log: one line per decision, apart from the
// daemon's debug log, e.g.
//
//	2026-11-24T16:03:05.123Z policyd queue_id=4XyZ1 client=mail.example.org[198.51.100.7] sasl_user="" from=<a@example.org> to=<b@example.com> state=RCPT cell=outside/none->local action=DUNNO reason=inbound spam_check=on
//
// With greylisting or rate limits on, the stateful step's verdict follows
// (reason stays the matrix's rule):
//
//	... cell=outside/none->local rcpt=1 action="450 4.7.1 Greylisted, please try again in 300 seconds" reason=inbound greylist=new
//	... cell=local/auth->outside rcpt=1 action=DUNNO reason=authorized ratelimit=within-limit
//
// Lines are collected in memory and written by one goroutine every
// FlushInterval, so a slow log destination never delays a reply. When the
// destination stalls and more than MaxPending bytes wait, further lines are
// dropped and counted (Dropped, and the metrics).
type MailLog struct {
	w       io.Writer
	mu      sync.Mutex
	pending []byte
	spare   []byte
	dropped atomic.Uint64
	kick    chan struct{}
	done    chan struct{}
	closed  bool

	// OnDrop, when set, is called for every dropped line.
	OnDrop func()
}

// MaxPending bounds the memory held for a stalled log destination.
const MaxPending = 4 << 20

// FlushInterval is how long a line may wait in memory.
const FlushInterval = 100 * time.Millisecond

// NewMailLog starts a mail log writing to w. Close flushes and stops it.
func NewMailLog(w io.Writer) *MailLog {
	l := &MailLog{w: w, kick: make(chan struct{}, 1), done: make(chan struct{})}
	go l.run()
	return l
}

func (l *MailLog) run() {
	defer close(l.done)
	t := time.NewTicker(FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-l.kick:
		}
		if !l.flush() {
			return
		}
	}
}

// flush writes what is pending; it returns false once the log is closed and empty.
func (l *MailLog) flush() bool {
	l.mu.Lock()
	b := l.pending
	l.pending = l.spare[:0]
	closed := l.closed
	l.mu.Unlock()
	if len(b) > 0 {
		l.w.Write(b) // a failing log destination must not stop decisions
	}
	l.mu.Lock()
	l.spare = b[:0]
	empty := len(l.pending) == 0
	l.mu.Unlock()
	return !(closed && empty)
}

// Close writes every pending line and stops the writer.
func (l *MailLog) Close() {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	l.mu.Unlock()
	select {
	case l.kick <- struct{}{}:
	default:
	}
	<-l.done
}

// Dropped returns how many lines were dropped because the destination stalled.
func (l *MailLog) Dropped() uint64 { return l.dropped.Load() }

// Decision logs one decision. rcpt is the recipient's ordinal within the message.
func (l *MailLog) Decision(at time.Time, req *Request, d Decision, rcpt int) {
	var a [512]byte
	b := at.UTC().AppendFormat(a[:0], "2006-01-02T15:04:05.000Z07:00")
	b = append(b, " policyd"...)
	b = field(b, "queue_id", req.QueueID)
	b = append(b, " client="...)
	b = appendValue(b, req.ClientName+"["+req.ClientAddress+"]")
	b = field(b, "sasl_user", req.SASLUsername)
	b = append(b, " from=<"...)
	b = appendBare(b, req.Sender)
	b = append(b, "> to=<"...)
	b = appendBare(b, req.Recipient)
	b = append(b, '>')
	b = field(b, "state", d.Stage)
	if d.Reason != ReasonNotRcpt {
		b = field(b, "cell", d.Cell.String())
		b = append(b, " rcpt="...)
		b = strconv.AppendInt(b, int64(rcpt), 10)
	}
	b = field(b, "action", d.Reply)
	b = field(b, "reason", string(d.Reason))
	if d.SpamCheck {
		b = append(b, " spam_check=on"...)
	}
	if d.Greylist != "" {
		b = field(b, "greylist", string(d.Greylist))
	}
	if d.RateLimit != "" {
		b = field(b, "ratelimit", string(d.RateLimit))
	}
	b = append(b, '\n')
	l.add(b)
}

// Write takes whole lines (as a log/slog handler writes one record) into
// the same buffer, so that a daemon's own log costs no system call per
// line either. It never fails; lines beyond MaxPending are dropped.
func (l *MailLog) Write(p []byte) (int, error) {
	l.add(p)
	return len(p), nil
}

// add appends a line to what the next flush writes.
func (l *MailLog) add(b []byte) {
	l.mu.Lock()
	if l.closed || len(l.pending)+len(b) > MaxPending {
		l.mu.Unlock()
		l.dropped.Add(1)
		if l.OnDrop != nil {
			l.OnDrop()
		}
		return
	}
	l.pending = append(l.pending, b...)
	big := len(l.pending) > 64<<10
	l.mu.Unlock()
	if big {
		select {
		case l.kick <- struct{}{}:
		default:
		}
	}
}

func field(b []byte, name, v string) []byte {
	b = append(b, ' ')
	b = append(b, name...)
	b = append(b, '=')
	return appendValue(b, v)
}

// appendValue writes v bare when it is a plain word, quoted otherwise.
func appendValue(b []byte, v string) []byte {
	if v == "" {
		return append(b, `""`...)
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c <= ' ' || c == '"' || c == '\\' || c >= 0x7f {
			return strconv.AppendQuote(b, v)
		}
	}
	return append(b, v...)
}

// appendBare writes an address inside <>: quoted only when it holds
// spaces, quotes or control characters.
func appendBare(b []byte, v string) []byte {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c <= ' ' || c == '"' || c == '\\' || c == 0x7f || c == '>' {
			q := strconv.Quote(v)
			return append(b, q[1:len(q)-1]...)
		}
	}
	return append(b, v...)
}
