package policy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mailnode/mailnode/acl"
	"github.com/mailnode/mailnode/internal/deadline"
	"github.com/mailnode/mailnode/inventory"
	"github.com/mailnode/mailnode/maillog"
	"github.com/mailnode/mailnode/state"
)

// Server serves the policy protocol. Create it with NewServer; the zero
// value is not usable.
type Server struct {
	// Limits bound one request; IdleTimeout closes a connection that sends
	// nothing between requests (Postfix's own smtpd_policy_service_max_idle
	// is 300s, so the default leaves Postfix to close first);
	// RequestTimeout bounds the time from a request's first byte to its
	// empty line (slow clients), WriteTimeout the reply.
	Limits         Limits
	IdleTimeout    time.Duration
	RequestTimeout time.Duration
	WriteTimeout   time.Duration

	Log     *slog.Logger // debug and warnings
	MailLog *maillog.Log // one line per decision; nil: none
	Metrics *Metrics     // nil: none

	state atomic.Pointer[snapshot]

	reloadMu sync.Mutex  // one SetInventory/UseState at a time
	store    state.Store // greylisting and rate state (UseState); nil: those checks are off
	clock    state.Clock

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	closing   atomic.Bool
	wg        sync.WaitGroup
}

// snapshot is the inventory and what is derived from it, swapped as one.
type snapshot struct {
	inv   *inventory.Inventory
	opts  Options
	guard *Guard // greylisting and rate limits on the server's store; nil: none
	// shadow is policy.mode: shadow: refusals are logged and answered DUNNO.
	shadow bool
}

// NewServer returns a server deciding with inv. Greylisting and rate limits
// stay off until UseState gives the server a store.
func NewServer(inv *inventory.Inventory) *Server {
	s := &Server{
		Limits:         DefaultLimits,
		IdleTimeout:    330 * time.Second,
		RequestTimeout: 10 * time.Second,
		WriteTimeout:   10 * time.Second,
		Log:            slog.New(slog.DiscardHandler),
		listeners:      map[net.Listener]struct{}{},
		conns:          map[*conn]struct{}{},
	}
	s.SetInventory(inv)
	return s
}

// SetInventory atomically replaces the inventory: requests already being
// decided finish with the old one, every later request uses the new one.
// Open connections stay open. With a store (UseState) the greylisting and
// rate limit settings change with it; the store itself stays. On an error
// (settings the state layer refuses, or checks configured without a
// store) the running inventory stays.
func (s *Server) SetInventory(inv *inventory.Inventory) error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	return s.swap(inv, true)
}

// UseState gives the server the store greylisting and rate limits keep
// their state in (one per process: a bbolt file has one owner) and the
// clock they read (nil: time.Now), and turns on the checks the inventory in
// use configures. The caller keeps ownership of the store and closes it
// after Shutdown.
func (s *Server) UseState(st state.Store, clock state.Clock) error {
	s.reloadMu.Lock()
	defer s.reloadMu.Unlock()
	oldStore, oldClock := s.store, s.clock
	s.store, s.clock = st, clock
	var inv *inventory.Inventory
	if cur := s.state.Load(); cur != nil {
		inv = cur.inv
	}
	if inv == nil {
		return nil
	}
	// Build anew: a running RateLimiter belongs to the old store.
	if err := s.swap(inv, false); err != nil {
		s.store, s.clock = oldStore, oldClock
		return err
	}
	return nil
}

// swap builds the snapshot for inv and stores it; reloadMu is held. keep:
// reuse the running RateLimiter when the limits did not change.
func (s *Server) swap(inv *inventory.Inventory, keep bool) error {
	next := &snapshot{inv: inv, opts: OptionsFrom(inv), shadow: inv.Policy.Shadow()}
	if s.store != nil {
		g, err := NewGuard(inv, s.store, s.clock)
		if err != nil {
			return err
		}
		// Same limits: keep the RateLimiter, which remembers the message
		// instances it counted, so a reload does not count a message twice.
		if cur := s.state.Load(); keep && g != nil && cur != nil && cur.guard != nil && cur.guard.RateLimit != nil && sameRatelimit(cur.inv, inv) {
			g.RateLimit = cur.guard.RateLimit
		}
		next.guard = g
	}
	s.state.Store(next)
	return nil
}

// Guard returns the stateful checks in use (nil: none).
func (s *Server) Guard() *Guard { return s.state.Load().guard }

// pinned returns the state in use with its inventory pinned
// (inventory.Pin): the reload that replaced an inventory releases it (its
// mapped tables) only once no request decides with it any more.
// nil: the inventory in use itself was released, which only a caller that
// releases an inventory before replacing it can do.
func (s *Server) pinned() *snapshot {
	for {
		st := s.state.Load()
		if st.inv.Pin() {
			return st
		}
		if s.state.Load() == st {
			return nil
		}
		// Released after a reload swapped in the next one: take that.
	}
}

// Inventory returns the inventory in use.
func (s *Server) Inventory() *inventory.Inventory { return s.state.Load().inv }

// ErrServerClosed is returned by Serve after Shutdown.
var ErrServerClosed = errors.New("policy: server closed")

// Serve accepts connections on ln until Shutdown. It always returns a
// non-nil error, ErrServerClosed after Shutdown.
func (s *Server) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closing.Load() {
		s.mu.Unlock()
		ln.Close()
		return ErrServerClosed
	}
	s.listeners[ln] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.listeners, ln)
		s.mu.Unlock()
	}()
	var backoff time.Duration
	for {
		nc, err := ln.Accept()
		if err != nil {
			if s.closing.Load() {
				return ErrServerClosed
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				// Out of descriptors or a transient error: wait, keep serving the open connections.
				backoff = min(max(2*backoff, 5*time.Millisecond), time.Second)
				s.Log.Warn("policyd: accept failed; retrying", "err", err, "in", backoff)
				time.Sleep(backoff)
				continue
			}
			return fmt.Errorf("policy: accept: %w", err)
		}
		backoff = 0
		c := &conn{s: s, nc: nc}
		s.mu.Lock()
		if s.closing.Load() {
			s.mu.Unlock()
			nc.Close()
			return ErrServerClosed
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go c.serve()
	}
}

// Shutdown drains: it stops accepting, closes every connection that waits
// for its next request, lets the requests being read or decided finish and
// their replies go out, then closes those connections too. When ctx ends
// first, the remaining connections are closed at once.
func (s *Server) Shutdown(ctx context.Context) error {
	s.closing.Store(true)
	s.mu.Lock()
	for ln := range s.listeners {
		ln.Close()
	}
	for c := range s.conns {
		c.wakeIfIdle()
	}
	s.mu.Unlock()
	done := make(chan struct{})
	go func() { s.wg.Wait(); close(done) }()
	select {
	case <-done:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		for c := range s.conns {
			c.nc.Close()
		}
		s.mu.Unlock()
		<-done
		return ctx.Err()
	}
}

// OpenConnections returns how many connections are open.
func (s *Server) OpenConnections() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.conns)
}

// conn is one Postfix connection, served by one goroutine that blocks in
// the read for the next request (the runtime's poller does the waiting).
// The read buffer comes from a pool and goes back once the input is
// answered, so an idle connection costs its goroutine's stack, one pooled
// buffer and its socket: policyd's RSS grows by 6-7 MiB with 1,000 idle
// connections and by about 50 MiB with 10,000 (test/bench-policy.sh).
// Postfix holds one policy connection per smtpd process, about a hundred
// per instance.
type conn struct {
	s  *Server
	nc net.Conn

	mu   sync.Mutex // guards busy against Shutdown's wakeIfIdle
	busy bool

	msg message // per-message state, keyed by instance

	buf *buffer // held while a request is read and answered, or bytes of the next one wait

	// The deadlines last set (the read one: the idle wait's or a request's).
	// Setting one costs a timer update, so the idle and write deadlines
	// are set again only when the one set no longer fits (deadline.Arm: a
	// timeout may end 1/16 of it late, never early).
	readDL, writeDL time.Time
}

// message is the state policyd keeps for the message a connection is on.
// Postfix's smtpd uses one policy connection per SMTP session and sends a
// new instance attribute for every MAIL FROM.
type message struct {
	instance string
	rcpts    int // RCPT requests decided for this instance
	rejected int
}

func (m *message) observe(req *Request, d Decision) {
	if req.Instance != m.instance || req.Instance == "" {
		*m = message{instance: req.Instance}
	}
	if d.Reason != ReasonNotRcpt {
		m.rcpts++
		if d.Action == Reject {
			m.rejected++
		}
	}
}

func (c *conn) wakeIfIdle() {
	c.mu.Lock()
	if !c.busy {
		c.nc.SetReadDeadline(time.Now())
	}
	c.mu.Unlock()
}

// setBusy marks the connection busy; it reports false when the server is
// shutting down and the connection should close instead.
func (c *conn) setBusy(b bool) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if b && c.s.closing.Load() {
		return false
	}
	c.busy = b
	return true
}

// buffer is the pooled working memory of a connection during one request.
type buffer struct {
	in  []byte // received, not yet answered
	out []byte // replies not yet written

	// The request being read: its attributes so far, how far in has been
	// scanned for line ends, where the current line starts, and its
	// deadline once it needed more than one read.
	req       Request
	n         int
	scan      int
	lineStart int
	deadline  time.Time
}

var bufPool = sync.Pool{New: func() any {
	return &buffer{in: make([]byte, 0, 2048), out: make([]byte, 0, 256)}
}}

func getBuffer() *buffer {
	b := bufPool.Get().(*buffer)
	b.in, b.out = b.in[:0], b.out[:0]
	b.req, b.n, b.scan, b.lineStart, b.deadline = Request{}, 0, 0, 0, time.Time{}
	return b
}

// maxPooled keeps the rare oversized buffer out of the pool.
const maxPooled = 64 << 10

func (c *conn) releaseBuffer() {
	if c.buf != nil && cap(c.buf.in) <= maxPooled {
		bufPool.Put(c.buf)
	}
	c.buf = nil
}

// serve runs a new connection until it closes.
func (c *conn) serve() {
	s := c.s
	if s.Metrics != nil {
		s.Metrics.open.Inc()
	}
	c.loop()
	if s.Metrics != nil {
		s.Metrics.open.Dec()
	}
	c.releaseBuffer()
	c.nc.Close()
	s.mu.Lock()
	delete(s.conns, c)
	s.mu.Unlock()
	s.wg.Done()
}

// Reasons the read loop stops other than the socket's own errors.
var (
	errClosing   = errors.New("policy: server shutting down")
	errAbandoned = errors.New("policy: connection abandoned") // logged already
)

// loop answers requests until the connection is to be closed.
func (c *conn) loop() {
	s := c.s
	for {
		if c.buf == nil || len(c.buf.in) == 0 {
			c.idleDeadline()
		}
		// Checked after the deadline is set: a Shutdown that woke this
		// connection before is seen here, one after cuts the read short.
		if s.closing.Load() {
			return
		}
		err := c.step()
		switch {
		case err == nil:
			continue
		case err == errClosing || err == errAbandoned:
			return
		}
		if c.buf != nil && len(c.buf.in) > 0 {
			if errors.Is(err, io.EOF) {
				s.Log.Warn("policyd: connection closed in the middle of a request", "remote", c.nc.RemoteAddr(), "bytes", len(c.buf.in))
			} else {
				s.Log.Warn("policyd: incomplete request; closing without reply", "err", err, "remote", c.nc.RemoteAddr(), "bytes", len(c.buf.in))
			}
			return
		}
		c.closed(err, "idle")
		return
	}
}

// idleDeadline gives the wait for the next request its deadline: the idle
// timeout from now (a request's deadline, shorter, is replaced).
func (c *conn) idleDeadline() {
	deadline.Arm(&c.readDL, c.s.IdleTimeout, c.nc.SetReadDeadline)
}

// step is one turn of the read loop: one blocking read, then every complete
// request in the buffer is decided, the replies are written, and the
// connection settles.
func (c *conn) step() error {
	if c.buf == nil {
		c.buf = getBuffer()
	}
	b := c.buf
	if len(b.in) == cap(b.in) {
		b.in = append(b.in, 0)[:len(b.in)]
	}
	n, err := c.nc.Read(b.in[len(b.in):cap(b.in)])
	if n == 0 {
		if err == nil {
			err = io.ErrNoProgress
		}
		if len(b.in) == 0 {
			c.releaseBuffer()
		}
		return err
	}
	b.in = b.in[:len(b.in)+n]
	err = c.received()
	if len(b.out) > 0 {
		if werr := c.writeOut(); werr != nil && err == nil {
			c.closed(werr, "writing reply")
			err = errAbandoned
		}
	}
	if err == nil {
		err = c.settle()
	}
	return err
}

// writeOut writes the held replies with the write deadline.
func (c *conn) writeOut() error {
	deadline.Arm(&c.writeDL, c.s.WriteTimeout, c.nc.SetWriteDeadline)
	_, err := c.nc.Write(c.buf.out)
	c.buf.out = c.buf.out[:0]
	return err
}

// settle follows the answers: with all of the input answered the
// connection is idle again (its buffer goes back to the pool, the loop
// gives it the idle deadline, and a shutdown closes it now); with part of
// a request left, the request's deadline applies.
func (c *conn) settle() error {
	b := c.buf
	if len(b.in) > 0 {
		if b.deadline.IsZero() {
			b.deadline = time.Now().Add(c.s.RequestTimeout)
			c.readDL = b.deadline
			c.nc.SetReadDeadline(b.deadline)
		}
		return nil
	}
	c.releaseBuffer()
	c.setBusy(false)
	if c.s.closing.Load() {
		return errClosing
	}
	return nil
}

// received parses the bytes in c.buf.in, decides every complete request
// and appends the replies to c.buf.out, leaving the start of an incomplete
// request in c.buf.in. The requests complete before a malformed one are
// answered; at the malformed one the connection closes without a reply.
func (c *conn) received() error {
	s := c.s
	lim := s.Limits
	b := c.buf
	if !c.busy && !c.setBusy(true) {
		return errClosing
	}
	maxRequest := lim.MaxAttributes*(lim.MaxLine+2) + 2
	start := 0 // of the current request in b.in
	defer func() {
		if start > 0 {
			b.in = b.in[:copy(b.in, b.in[start:])]
			b.scan -= start
			b.lineStart -= start
		}
	}()
	for {
		end := -1
		for b.scan < len(b.in) {
			i := bytes.IndexByte(b.in[b.scan:], '\n')
			if i < 0 {
				b.scan = len(b.in)
				break
			}
			nl := b.scan + i
			line := b.in[b.lineStart:nl]
			b.scan, b.lineStart = nl+1, nl+1
			if len(line) > 0 && line[len(line)-1] == '\r' {
				line = line[:len(line)-1]
			}
			if len(line) == 0 {
				end = nl + 1
				break
			}
			b.n++
			if err := b.req.setLine(line, b.n, lim); err != nil {
				return c.malformed(err)
			}
		}
		if end < 0 {
			break
		}
		if err := b.req.check(); err != nil {
			return c.malformed(err)
		}
		if err := c.answer(&b.req); err != nil {
			return errAbandoned
		}
		start = end
		b.n, b.req, b.deadline = 0, Request{}, time.Time{}
	}
	if len(b.in)-b.lineStart > lim.MaxLine+1 {
		return c.malformed(malformed("line %d longer than %d bytes", b.n+1, lim.MaxLine))
	}
	if len(b.in)-start >= maxRequest {
		return c.malformed(malformed("request longer than %d bytes", maxRequest))
	}
	return nil
}

// closed logs why a connection ends.
func (c *conn) closed(err error, when string) {
	var ne net.Error
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed), errors.Is(err, syscall.ECONNRESET):
		c.s.Log.Debug("policyd: connection closed by client", "remote", c.nc.RemoteAddr())
	case errors.As(err, &ne) && ne.Timeout():
		if c.s.closing.Load() {
			return
		}
		c.s.Log.Debug("policyd: connection timed out", "while", when, "remote", c.nc.RemoteAddr())
	default:
		c.s.Log.Warn("policyd: connection error", "while", when, "err", err, "remote", c.nc.RemoteAddr())
	}
}

func (c *conn) malformed(err error) error {
	c.s.Log.Warn("policyd: malformed request; closing without reply", "err", err, "remote", c.nc.RemoteAddr())
	if c.s.Metrics != nil {
		c.s.Metrics.malformed.Inc()
	}
	return errAbandoned
}

// answer decides req and writes the reply.
func (c *conn) answer(req *Request) error {
	s := c.s
	start := time.Now()
	st := s.pinned()
	if st == nil {
		// No reply: Postfix applies default_action (451 4.3.5).
		s.Log.Error("policyd: the inventory in use was released; closing without reply")
		return errors.New("policy: the inventory in use was released")
	}
	defer st.inv.Unpin()
	d := Decide(*req, st.inv, st.opts)
	if st.guard != nil {
		if err := st.guard.Apply(context.Background(), req, &d); err != nil {
			// The store failed (or answered nonsense): no reply, so that
			// Postfix applies default_action (451 4.3.5) — never DUNNO,
			// never a 5xx.
			s.Log.Warn("policyd: greylist/rate state unavailable; closing without reply",
				"err", err, "remote", c.nc.RemoteAddr(), "client", req.ClientAddress,
				"sender", req.Sender, "recipient", req.Recipient, "sasl_user", req.SASLUsername)
			if s.Metrics != nil {
				s.Metrics.stateFailed(err)
			}
			return err
		}
	}
	if st.shadow {
		// Decided and stated in full, answered DUNNO; the guard below
		// still sees the reply that is sent.
		d.Shadow()
	}
	if !acl.SafeReply(d.Reply) {
		// Neither Decide nor Guard makes such a reply; if one ever did,
		// Postfix must not see it: no reply, so default_action (451).
		return c.malformed(fmt.Errorf("policy: internal error: reply %q is not DUNNO, a 4xx or a matrix 550", d.Reply))
	}
	c.msg.observe(req, d)
	out := append(c.buf.out, "action="...)
	out = append(out, d.Reply...)
	out = append(out, "\n\n"...)
	c.buf.out = out
	if s.MailLog != nil {
		logDecision(s.MailLog, start, req, d, c.msg.rcpts)
	}
	if s.Metrics != nil {
		s.Metrics.observe(req, d, start)
	}
	return nil
}
