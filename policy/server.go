package policy

import (
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
	MailLog *MailLog     // one line per decision; nil: none
	Metrics *Metrics     // nil: none

	state atomic.Pointer[snapshot]

	mu        sync.Mutex
	listeners map[net.Listener]struct{}
	conns     map[*conn]struct{}
	closing   atomic.Bool
	wg        sync.WaitGroup
}

// snapshot is the inventory and the options derived from it, swapped as one.
type snapshot struct {
	inv  *inventory.Inventory
	opts Options
}

// NewServer returns a server deciding with inv.
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
// Open connections stay open.
func (s *Server) SetInventory(inv *inventory.Inventory) {
	s.state.Store(&snapshot{inv: inv, opts: OptionsFrom(inv)})
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

// conn is one Postfix connection. Between requests it holds no buffer: it
// waits for readability on the socket itself, and takes a buffer from a
// pool only while a request is read and answered. Ten thousand idle
// connections cost a goroutine and a socket each, nothing more.
type conn struct {
	s  *Server
	nc net.Conn

	mu   sync.Mutex // guards busy against Shutdown's wakeIfIdle
	busy bool

	msg message // per-message state, keyed by instance

	peek     [1]byte
	peekErr  error
	peekFunc func(fd uintptr) bool // c.peekReady, bound once
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

func (c *conn) serve() {
	s := c.s
	if s.Metrics != nil {
		s.Metrics.open.Inc()
	}
	defer func() {
		if s.Metrics != nil {
			s.Metrics.open.Dec()
		}
		c.nc.Close()
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		s.wg.Done()
	}()
	var raw syscall.RawConn
	if sc, ok := c.nc.(syscall.Conn); ok {
		raw, _ = sc.SyscallConn()
	}
	var buf *buffer // non-nil while bytes of a next request are held
	for {
		if buf == nil {
			if s.closing.Load() {
				return
			}
			c.nc.SetReadDeadline(time.Now().Add(s.IdleTimeout))
			if raw != nil {
				if err := c.waitReadable(raw); err != nil {
					c.closed(err, "idle")
					return
				}
			}
			buf = bufPool.Get().(*buffer)
			buf.in = buf.in[:0]
		}
		if !c.setBusy(true) {
			putBuffer(buf)
			return
		}
		rest, err := c.handle(buf)
		c.setBusy(false)
		if err != nil {
			putBuffer(buf)
			return
		}
		if rest == 0 {
			putBuffer(buf)
			buf = nil
		}
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

// handle reads one request into buf (which may already hold its start),
// decides and answers it. It returns how many bytes of a next request remain
// at the start of buf.in, or an error after which the connection closes
// without a reply.
func (c *conn) handle(buf *buffer) (rest int, err error) {
	s := c.s
	lim := s.Limits
	c.nc.SetReadDeadline(time.Now().Add(s.RequestTimeout))
	var req Request
	scan, lineStart, n := 0, 0, 0
	maxRequest := lim.MaxAttributes*(lim.MaxLine+2) + 2
	for {
		// Parse every complete line we have.
		end := -1
		for scan < len(buf.in) {
			i := indexNL(buf.in[scan:])
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
				return 0, c.malformed(err)
			}
		}
		if end >= 0 {
			if err := req.check(); err != nil {
				return 0, c.malformed(err)
			}
			if err := c.answer(&req, buf); err != nil {
				c.closed(err, "writing reply")
				return 0, err
			}
			rest = copy(buf.in, buf.in[end:])
			buf.in = buf.in[:rest]
			return rest, nil
		}
		if len(buf.in)-lineStart > lim.MaxLine+1 {
			return 0, c.malformed(malformed("line %d longer than %d bytes", n+1, lim.MaxLine))
		}
		if len(buf.in) >= maxRequest {
			return 0, c.malformed(malformed("request longer than %d bytes", maxRequest))
		}
		if len(buf.in) == cap(buf.in) {
			buf.in = append(buf.in, 0)[:len(buf.in)]
		}
		m, err := c.nc.Read(buf.in[len(buf.in):cap(buf.in)])
		buf.in = buf.in[:len(buf.in)+m]
		if err != nil && m == 0 {
			if len(buf.in) > 0 && !errors.Is(err, io.EOF) {
				s.Log.Warn("policyd: incomplete request; closing without reply", "err", err, "remote", c.nc.RemoteAddr(), "bytes", len(buf.in))
			} else {
				c.closed(err, "reading request")
			}
			return 0, err
		}
	}
}

func indexNL(b []byte) int {
	for i, c := range b {
		if c == '\n' {
			return i
		}
	}
	return -1
}

func (c *conn) malformed(err error) error {
	c.s.Log.Warn("policyd: malformed request; closing without reply", "err", err, "remote", c.nc.RemoteAddr())
	if c.s.Metrics != nil {
		c.s.Metrics.malformed.Inc()
	}
	return err
}

// answer decides req and writes the reply.
func (c *conn) answer(req *Request, buf *buffer) error {
	s := c.s
	start := time.Now()
	st := s.state.Load()
	d := Decide(*req, st.inv, st.opts)
	if d.Reply == "" || d.Reply == "OK" {
		// Decide never does this; if it ever did, Postfix must not see it.
		return c.malformed(fmt.Errorf("policy: internal error: reply %q", d.Reply))
	}
	c.msg.observe(req, d)
	out := append(buf.out[:0], "action="...)
	out = append(out, d.Reply...)
	out = append(out, "\n\n"...)
	buf.out = out
	c.nc.SetWriteDeadline(time.Now().Add(s.WriteTimeout))
	_, err := c.nc.Write(out)
	if err != nil {
		return err
	}
	if s.MailLog != nil {
		s.MailLog.Decision(start, req, d, c.msg.rcpts)
	}
	if s.Metrics != nil {
		s.Metrics.observe(d, time.Since(start))
	}
	return nil
}

// waitReadable blocks until the socket has data or EOF, the read deadline
// passes or the connection is closed, without reading anything.
func (c *conn) waitReadable(raw syscall.RawConn) error {
	if c.peekFunc == nil {
		c.peekFunc = c.peekReady
	}
	c.peekErr = nil
	if err := raw.Read(c.peekFunc); err != nil {
		return err
	}
	if c.peekErr != nil {
		return os.NewSyscallError("recvfrom", c.peekErr)
	}
	return nil
}

// peekReady reports whether the socket is readable (data, EOF or an error)
// by peeking at one byte without consuming it.
func (c *conn) peekReady(fd uintptr) bool {
	_, _, e := syscall.Recvfrom(int(fd), c.peek[:], syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
	if e == syscall.EAGAIN || e == syscall.EINTR {
		return false
	}
	c.peekErr = e
	return true
}

// maxPooled keeps the rare oversized buffer out of the pool.
const maxPooled = 64 << 10

func putBuffer(b *buffer) {
	if cap(b.in) <= maxPooled {
		bufPool.Put(b)
	}
}
