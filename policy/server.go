package policy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

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
	// ParkAfter: a connection silent this long gives back its goroutine
	// and waits in one epoll set shared by all such connections, costing
	// only its socket and a few hundred bytes until its next request
	// (Postfix keeps a policy connection per smtpd process, idle between
	// SMTP sessions). 0 keeps every connection on its goroutine.
	ParkAfter time.Duration

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
	park      *parker // created on first use; nil when parking is off or unavailable
	parkOnce  sync.Once
}

// snapshot is the inventory and what is derived from it, swapped as one.
type snapshot struct {
	inv   *inventory.Inventory
	opts  Options
	guard *Guard // greylisting and rate limits on the server's store; nil: none
}

// NewServer returns a server deciding with inv. Greylisting and rate limits
// stay off until UseState gives the server a store.
func NewServer(inv *inventory.Inventory) *Server {
	s := &Server{
		Limits:         DefaultLimits,
		IdleTimeout:    330 * time.Second,
		RequestTimeout: 10 * time.Second,
		WriteTimeout:   10 * time.Second,
		ParkAfter:      5 * time.Second,
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
	next := &snapshot{inv: inv, opts: OptionsFrom(inv)}
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
	if p := s.parkerIfStarted(); p != nil {
		p.closeAll()
	}
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

// conn is one Postfix connection. Between requests it holds no buffer: the
// read that waits for the next request takes a buffer from a pool only when
// data is there (the wait itself is the runtime's poller), and gives it back
// once the request is answered. Ten thousand idle connections cost a parked
// goroutine and a socket each, nothing more.
type conn struct {
	s   *Server
	nc  net.Conn
	raw syscall.RawConn // nil for connections that are not sockets (tests)

	mu   sync.Mutex // guards busy against Shutdown's wakeIfIdle
	busy bool

	msg message // per-message state, keyed by instance

	buf *buffer // held while a request is read and answered, or bytes of the next one wait

	// readFunc is c.onReadable bound once; rerr is why it ended c.raw.Read.
	readFunc func(fd uintptr) bool
	rerr     error

	wait  time.Duration // between requests: the idle or park time
	reqDL bool          // readDL is a request's deadline, not the idle one
	waits bool          // the client was seen to wait for its replies (onReadable)

	// The deadlines last set. Setting one costs a timer update, so the idle
	// and write deadlines are only pushed forward when they are more than
	// deadlineSlack stale: timeouts are that much longer at worst.
	readDL, writeDL time.Time

	fd         int       // the socket, for the parker's epoll set (-1: none)
	lastActive time.Time // when the last request was answered (or the connection accepted)
}

// deadlineSlack is how stale an idle or write deadline may get before it
// is pushed forward: a second, or a quarter of a short timeout.
func deadlineSlack(timeout time.Duration) time.Duration {
	return min(time.Second, timeout/4)
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

// serve runs a new connection.
func (c *conn) serve() {
	s := c.s
	if s.Metrics != nil {
		s.Metrics.open.Inc()
	}
	c.fd = -1
	if sc, ok := c.nc.(syscall.Conn); ok {
		c.raw, _ = sc.SyscallConn()
		if c.raw != nil {
			c.raw.Control(func(fd uintptr) { c.fd = int(fd) })
		}
	}
	c.lastActive = time.Now()
	c.run()
}

// run serves requests until the connection closes or parks.
func (c *conn) run() {
	if !c.loop() {
		c.close()
	}
}

// close ends a connection that is not parked.
func (c *conn) close() {
	s := c.s
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
	errPartialWrite = errors.New("policy: the socket took only part of the replies")
	errClosing      = errors.New("policy: server shutting down")
	errAbandoned    = errors.New("policy: connection abandoned") // logged already
)

// loop answers requests; it returns true when the connection was parked
// (the parker owns it now) and false when it must be closed.
func (c *conn) loop() bool {
	s := c.s
	// Between requests the read deadline is the idle timeout, or the park
	// time when that comes first and parking works here.
	c.wait = s.IdleTimeout
	park := false
	if s.ParkAfter > 0 && s.ParkAfter < s.IdleTimeout && c.fd >= 0 && s.parker() != nil {
		c.wait, park = s.ParkAfter, true
	}
	if c.raw != nil && c.readFunc == nil {
		c.readFunc = c.onReadable
	}
	for {
		if s.closing.Load() {
			return false
		}
		if c.buf == nil || len(c.buf.in) == 0 {
			c.idleDeadline(time.Now())
		}
		var err error
		if c.raw != nil {
			c.rerr = nil
			if err = c.raw.Read(c.readFunc); err == nil {
				err = c.rerr
			}
		} else {
			err = c.step()
		}
		switch {
		case err == nil:
			continue
		case err == errPartialWrite:
			// A client that sends without reading its replies: wait for
			// the socket with the write deadline, then read on.
			if err = c.writeOut(); err == nil {
				err = c.settle()
			}
			if err == nil {
				continue
			}
			if err == errClosing || err == errAbandoned {
				return false
			}
			c.closed(err, "writing reply")
			return false
		case err == errClosing || err == errAbandoned:
			return false
		}
		if c.buf != nil && len(c.buf.in) > 0 {
			if errors.Is(err, io.EOF) {
				s.Log.Warn("policyd: connection closed in the middle of a request", "remote", c.nc.RemoteAddr(), "bytes", len(c.buf.in))
			} else {
				s.Log.Warn("policyd: incomplete request; closing without reply", "err", err, "remote", c.nc.RemoteAddr(), "bytes", len(c.buf.in))
			}
			return false
		}
		var ne net.Error
		if park && errors.As(err, &ne) && ne.Timeout() && !s.closing.Load() && s.park.add(c) {
			return true
		}
		c.closed(err, "idle")
		return false
	}
}

// idleDeadline gives the wait for the next request its deadline: the idle
// (or park) time from now. Setting a deadline costs a timer update, so it
// is only pushed forward when more than deadlineSlack stale.
func (c *conn) idleDeadline(now time.Time) {
	if c.reqDL || c.readDL.Before(now.Add(c.wait-deadlineSlack(c.wait))) {
		c.readDL, c.reqDL = now.Add(c.wait), false
		c.nc.SetReadDeadline(c.readDL)
	}
}

// onReadable is the raw read callback. c.raw.Read calls it once when it
// starts and again whenever the runtime's poller reports the socket
// readable; returning false waits for that, true ends c.raw.Read with
// c.rerr. It reads, answers every complete request and writes the replies.
//
// Then, for a client seen to wait for its replies (as Postfix does), it
// waits without trying another read, which would only say EAGAIN: one
// system call per decision saved. That is safe for data: the poller is
// edge-triggered and was re-armed when c.raw.Read began, so every byte
// that arrives after this read is reported. Only a close that came before
// this read goes unseen (the read returns the data, not the end); such a
// connection is noticed when it is parked, ParkAfter later. So the first
// answers on a connection are followed by a read, and only an EAGAIN there
// shows a waiting client. A read that fills the buffer, or leaves part of a
// request, is always followed by another.
func (c *conn) onReadable(fd uintptr) bool {
	probe := false // this read follows answers: EAGAIN shows a waiting client
	for {
		if c.buf == nil {
			c.buf = getBuffer()
		}
		b := c.buf
		if len(b.in) == cap(b.in) {
			b.in = append(b.in, 0)[:len(b.in)]
		}
		free := cap(b.in) - len(b.in)
		n, err := syscall.Read(int(fd), b.in[len(b.in):cap(b.in)])
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			if len(b.in) == 0 {
				c.releaseBuffer()
			}
			if probe {
				c.waits = true
			}
			return false
		case err != nil:
			c.rerr = os.NewSyscallError("read", err)
			return true
		case n == 0:
			c.rerr = io.EOF
			return true
		}
		b.in = b.in[:len(b.in)+n]
		err = c.received()
		if len(b.out) > 0 {
			if werr := writeRaw(int(fd), b); werr != nil && err == nil {
				err = werr
			}
		}
		if err == nil {
			err = c.settle()
		}
		if err != nil {
			c.rerr = err
			return true
		}
		if c.buf == nil && n < free && c.waits {
			return false
		}
		probe = c.buf == nil
	}
}

// writeRaw writes b.out on the non-blocking socket; what it does not take
// stays in b.out and errPartialWrite says so.
func writeRaw(fd int, b *buffer) error {
	for {
		n, err := syscall.Write(fd, b.out)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return errPartialWrite
		case err != nil:
			return os.NewSyscallError("write", err)
		}
		b.out = b.out[:copy(b.out, b.out[n:])]
		if len(b.out) > 0 {
			return errPartialWrite
		}
		return nil
	}
}

// step is the read loop for connections that are not sockets: one blocking
// read, then the same as onReadable.
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
	s := c.s
	if now := time.Now(); c.writeDL.Before(now.Add(s.WriteTimeout - deadlineSlack(s.WriteTimeout))) {
		c.writeDL = now.Add(s.WriteTimeout)
		c.nc.SetWriteDeadline(c.writeDL)
	}
	_, err := c.nc.Write(c.buf.out)
	c.buf.out = c.buf.out[:0]
	return err
}

// settle follows the answers: with all of the input answered the
// connection is idle again (its buffer goes back to the pool, its deadline
// is the idle one, and a shutdown closes it now); with part of a request
// left, the request's deadline applies.
func (c *conn) settle() error {
	b := c.buf
	if len(b.in) > 0 {
		if b.deadline.IsZero() {
			b.deadline = time.Now().Add(c.s.RequestTimeout)
			c.readDL, c.reqDL = b.deadline, true
			c.nc.SetReadDeadline(b.deadline)
		}
		return nil
	}
	if len(b.out) > 0 {
		return nil
	}
	c.releaseBuffer()
	c.setBusy(false)
	if c.s.closing.Load() {
		return errClosing
	}
	c.idleDeadline(time.Now())
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
	st := s.state.Load()
	d := Decide(*req, st.inv, st.opts)
	if d.Reply == "" || d.Reply == "OK" {
		// Decide never does this; if it ever did, Postfix must not see it.
		return c.malformed(fmt.Errorf("policy: internal error: reply %q", d.Reply))
	}
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
	c.msg.observe(req, d)
	out := append(c.buf.out, "action="...)
	out = append(out, d.Reply...)
	out = append(out, "\n\n"...)
	c.buf.out = out
	c.lastActive = start
	if s.MailLog != nil {
		logDecision(s.MailLog, start, req, d, c.msg.rcpts)
	}
	if s.Metrics != nil {
		s.Metrics.observe(d, time.Since(start))
	}
	return nil
}
