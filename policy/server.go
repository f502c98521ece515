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
	MailLog *MailLog     // one line per decision; nil: none
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

	// readFunc is c.readReady bound once; rn and rerr are its results.
	readFunc func(fd uintptr) bool
	rn       int
	rerr     error

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
	in  []byte
	out []byte
}

var bufPool = sync.Pool{New: func() any {
	return &buffer{in: make([]byte, 0, 2048), out: make([]byte, 0, 256)}
}}

func getBuffer() *buffer {
	b := bufPool.Get().(*buffer)
	b.in = b.in[:0]
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

// loop answers requests; it returns true when the connection was parked
// (the parker owns it now) and false when it must be closed.
func (c *conn) loop() bool {
	s := c.s
	// Between requests the read deadline is the idle timeout, or the park
	// time when that comes first and parking works here.
	wait, park := s.IdleTimeout, false
	if s.ParkAfter > 0 && s.ParkAfter < s.IdleTimeout && c.fd >= 0 && s.parker() != nil {
		wait, park = s.ParkAfter, true
	}
	for {
		if c.buf == nil {
			// Idle: wait for the first bytes of the next request.
			if s.closing.Load() {
				return false
			}
			now := time.Now()
			if c.readDL.Before(now.Add(wait - deadlineSlack(wait))) {
				c.readDL = now.Add(wait)
				c.nc.SetReadDeadline(c.readDL)
			}
			if err := c.readIdle(); err != nil {
				var ne net.Error
				if park && errors.As(err, &ne) && ne.Timeout() && !s.closing.Load() && s.park.add(c) {
					return true
				}
				c.closed(err, "idle")
				return false
			}
		}
		if !c.setBusy(true) {
			return false
		}
		err := c.handle()
		c.setBusy(false)
		if err != nil {
			return false
		}
		if len(c.buf.in) == 0 {
			c.releaseBuffer()
		}
	}
}

// readIdle blocks until bytes arrive and reads them into a pooled buffer,
// which it takes only once the socket is readable.
func (c *conn) readIdle() error {
	if c.raw == nil {
		c.buf = getBuffer()
		n, err := c.nc.Read(c.buf.in[:cap(c.buf.in)])
		c.buf.in = c.buf.in[:n]
		if n > 0 {
			return nil
		}
		if err == nil {
			err = io.ErrNoProgress
		}
		return err
	}
	if c.readFunc == nil {
		c.readFunc = c.readReady
	}
	c.rn, c.rerr = 0, nil
	if err := c.raw.Read(c.readFunc); err != nil {
		return err
	}
	if c.rerr != nil {
		return os.NewSyscallError("read", c.rerr)
	}
	if c.rn == 0 {
		return io.EOF
	}
	return nil
}

// readReady is the raw read callback: it reads when data is there and
// returns false (wait for readability) without holding a buffer otherwise.
func (c *conn) readReady(fd uintptr) bool {
	if c.buf == nil {
		c.buf = getBuffer()
	}
	b := c.buf.in
	for {
		n, err := syscall.Read(int(fd), b[len(b):cap(b)])
		switch err {
		case syscall.EINTR:
			continue
		case syscall.EAGAIN:
			c.releaseBuffer()
			return false
		case nil:
			c.rn = n
			c.buf.in = b[:len(b)+n]
		default:
			c.rerr = err
		}
		return true
	}
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

// handle reads one request into c.buf (which already holds its start),
// decides and answers it, and leaves the bytes of a next request, if any, at
// the start of c.buf.in. On an error the connection closes without a reply.
func (c *conn) handle() error {
	s := c.s
	lim := s.Limits
	buf := c.buf
	var req Request
	scan, lineStart, n := 0, 0, 0
	maxRequest := lim.MaxAttributes*(lim.MaxLine+2) + 2
	var deadline time.Time // of this request, set when it needs a second read
	for {
		// Parse every complete line we have.
		end := -1
		for scan < len(buf.in) {
			i := bytes.IndexByte(buf.in[scan:], '\n')
			if i < 0 {
				scan = len(buf.in)
				break
			}
			nl := scan + i
			line := buf.in[lineStart:nl]
			scan, lineStart = nl+1, nl+1
			if len(line) > 0 && line[len(line)-1] == '\r' {
				line = line[:len(line)-1]
			}
			if len(line) == 0 {
				end = nl + 1
				break
			}
			n++
			if err := req.setLine(line, n, lim); err != nil {
				return c.malformed(err)
			}
		}
		if end >= 0 {
			if err := req.check(); err != nil {
				return c.malformed(err)
			}
			if err := c.answer(&req); err != nil {
				c.closed(err, "writing reply")
				return err
			}
			rest := copy(buf.in, buf.in[end:])
			buf.in = buf.in[:rest]
			return nil
		}
		if len(buf.in)-lineStart > lim.MaxLine+1 {
			return c.malformed(malformed("line %d longer than %d bytes", n+1, lim.MaxLine))
		}
		if len(buf.in) >= maxRequest {
			return c.malformed(malformed("request longer than %d bytes", maxRequest))
		}
		if deadline.IsZero() {
			deadline = time.Now().Add(s.RequestTimeout)
			c.readDL = deadline
			c.nc.SetReadDeadline(deadline)
		}
		if len(buf.in) == cap(buf.in) {
			buf.in = append(buf.in, 0)[:len(buf.in)]
		}
		m, err := c.nc.Read(buf.in[len(buf.in):cap(buf.in)])
		buf.in = buf.in[:len(buf.in)+m]
		if err != nil && m == 0 {
			if len(buf.in) > 0 && !errors.Is(err, io.EOF) {
				s.Log.Warn("policyd: incomplete request; closing without reply", "err", err, "remote", c.nc.RemoteAddr(), "bytes", len(buf.in))
			} else if len(buf.in) > 0 {
				s.Log.Warn("policyd: connection closed in the middle of a request", "remote", c.nc.RemoteAddr(), "bytes", len(buf.in))
			} else {
				c.closed(err, "reading request")
			}
			return err
		}
	}
}

func (c *conn) malformed(err error) error {
	c.s.Log.Warn("policyd: malformed request; closing without reply", "err", err, "remote", c.nc.RemoteAddr())
	if c.s.Metrics != nil {
		c.s.Metrics.malformed.Inc()
	}
	return err
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
	out := append(c.buf.out[:0], "action="...)
	out = append(out, d.Reply...)
	out = append(out, "\n\n"...)
	c.buf.out = out
	if c.writeDL.Before(start.Add(s.WriteTimeout - deadlineSlack(s.WriteTimeout))) {
		c.writeDL = start.Add(s.WriteTimeout)
		c.nc.SetWriteDeadline(c.writeDL)
	}
	if _, err := c.nc.Write(out); err != nil {
		return err
	}
	c.lastActive = start
	if s.MailLog != nil {
		s.MailLog.Decision(start, req, d, c.msg.rcpts)
	}
	if s.Metrics != nil {
		s.Metrics.observe(d, time.Since(start))
	}
	return nil
}
