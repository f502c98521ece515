package milter

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"sync"
	"time"

	"github.com/mailnode/mailnode/internal/deadline"
)

// Any local process that can reach the socket can send milterd anything.
// go-milter v0.10.1 trusts the framing: a zero-length packet, a connect,
// MAIL or RCPT packet whose string lacks its NUL, or a connect packet that
// ends after the host name make it index out of range and panic — in a
// goroutine, which ends the whole process — and a declared length of up to
// 512 MiB is allocated before a byte of it arrives. So every accepted
// connection is wrapped in a guard that reads each packet's framing itself,
// checks it, and only then lets go-milter read it. Anything malformed ends
// that connection with an error; go-milter then closes it.

// GuardLimits are the guard's bounds. The three waits end a connection at
// most 1/16 of the wait after it has passed, never before (deadline.Arm).
type GuardLimits struct {
	MaxPacket     int           // largest packet (length field); Postfix sends ≤ 64 KiB body chunks and header fields ≤ header_size_limit
	FirstPacket   time.Duration // the negotiation must arrive within this
	Idle          time.Duration // the MTA may be silent this long between packets
	PacketTimeout time.Duration // a packet, once started, must be complete within this
	MaxConns      int           // concurrent connections; more are closed at once
}

// DefaultGuardLimits suit Postfix: a milter connection lives as long as the
// SMTP session (smtpd_timeout is 300s per command).
var DefaultGuardLimits = GuardLimits{
	MaxPacket:     1<<20 + 64,
	FirstPacket:   10 * time.Second,
	Idle:          time.Hour,
	PacketTimeout: time.Minute,
	MaxConns:      1024,
}

// ErrBadPacket is returned (wrapped) by a guarded connection that received
// a malformed packet.
var ErrBadPacket = errors.New("milter: malformed packet")

// milter commands the MTA may send (SMFIC_*).
const knownCodes = "ODCQHMRLNBEATKU"

// guardListener wraps accepted connections in guards and caps their number.
type guardListener struct {
	net.Listener
	limits GuardLimits
	log    *slog.Logger
	sem    chan struct{}
}

func newGuardListener(ln net.Listener, limits GuardLimits, log *slog.Logger) *guardListener {
	return &guardListener{Listener: ln, limits: limits, log: log, sem: make(chan struct{}, limits.MaxConns)}
}

func (l *guardListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		select {
		case l.sem <- struct{}{}:
			return newGuardConn(c, l.limits, l.log, func() { <-l.sem }), nil
		default:
			l.log.Warn("milterd: too many connections, closing a new one", "max", l.limits.MaxConns)
			c.Close()
		}
	}
}

// guardConn is a net.Conn whose Read hands out only checked packets.
type guardConn struct {
	net.Conn
	limits  GuardLimits
	log     *slog.Logger
	mu      sync.Mutex    // Read against Close: br goes back to the pool
	br      *bufio.Reader // nil once closed
	pending []byte        // checked bytes not yet read by go-milter
	buf     []byte        // backing store for small packets
	body    int           // bytes of a body packet still to pass through
	wmu     sync.Mutex    // wbuf, wdl: Close may come from another goroutine
	wbuf    []byte        // replies held back until milterd waits for the MTA
	wdl     time.Time     // go-milter's write deadline for them
	started bool
	rArmed  time.Time // the read deadline set on the socket (deadline.Arm)
	wArmed  time.Time // the write deadline set on the socket (deadline.Arm)
	err     error
	once    sync.Once
	release func()
}

// readers are the connections' 64 KiB read buffers (a body packet is up to
// 64 KiB): one per live connection, reused instead of allocated and cleared
// per milter session — Postfix opens one for every SMTP session.
var readers = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 64<<10) }}

func newGuardConn(c net.Conn, limits GuardLimits, log *slog.Logger, release func()) *guardConn {
	br := readers.Get().(*bufio.Reader)
	br.Reset(c)
	return &guardConn{Conn: c, limits: limits, log: log, br: br, release: release}
}

// SetReadDeadline is the guard's business; go-milter's calls are ignored.
func (g *guardConn) SetReadDeadline(time.Time) error { return nil }

// SetWriteDeadline records go-milter's write deadline for the held replies.
func (g *guardConn) SetWriteDeadline(t time.Time) error {
	if !t.IsZero() {
		g.wmu.Lock()
		g.wdl = t
		g.wmu.Unlock()
	}
	return nil
}

// SetDeadline only sets the write deadline for the same reason.
func (g *guardConn) SetDeadline(t time.Time) error { return g.SetWriteDeadline(t) }

// Write takes go-milter's replies. go-milter writes each packet as two
// writes, the 5-byte length and code, then the data, and at the end of a
// message the header changes and the verdict as packets of their own. The
// guard holds them all and sends them with one system call when milterd
// is about to wait for the MTA (flush), as Postfix's side does with its
// VSTREAM buffer; the MTA reads nothing before it waits for a reply, and
// milterd waits for nothing before it has sent them.
func (g *guardConn) Write(p []byte) (int, error) {
	g.wmu.Lock()
	defer g.wmu.Unlock()
	g.wbuf = append(g.wbuf, p...)
	if len(g.wbuf) >= 64<<10 {
		if err := g.flushLocked(time.Time{}); err != nil {
			return 0, err
		}
	}
	return len(p), nil
}

// flush sends the held replies.
func (g *guardConn) flush() error {
	g.wmu.Lock()
	defer g.wmu.Unlock()
	return g.flushLocked(time.Time{})
}

// flushLocked sends the held replies by the earliest of go-milter's write
// deadline (the packet timeout when it set none) and limit (unless zero).
func (g *guardConn) flushLocked(limit time.Time) error {
	if len(g.wbuf) == 0 {
		return nil
	}
	dl := g.wdl
	if dl.IsZero() {
		dl = time.Now().Add(g.limits.PacketTimeout)
	}
	if !limit.IsZero() && limit.Before(dl) {
		dl = limit
	}
	deadline.Arm(&g.wArmed, time.Until(dl), g.Conn.SetWriteDeadline)
	_, err := g.Conn.Write(g.wbuf)
	g.wbuf, g.wdl = g.wbuf[:0], time.Time{}
	if cap(g.wbuf) > 64<<10 {
		g.wbuf = nil
	}
	return err
}

// flushBefore flushes the held replies when reading n more bytes may block.
func (g *guardConn) flushBefore(n int) error {
	if g.br.Buffered() >= n {
		return nil
	}
	return g.flush()
}

// Close sends what go-milter wrote last (a final reply before it gives up
// on a session), waiting at most a second (and 1/16 of one: deadline.Arm) for a
// peer that does not read.
func (g *guardConn) Close() error {
	g.wmu.Lock()
	g.flushLocked(time.Now().Add(time.Second))
	g.wmu.Unlock()
	err := g.Conn.Close() // ends a Read blocked in another goroutine
	g.mu.Lock()
	if g.br != nil {
		g.br.Reset(nil)
		readers.Put(g.br)
		g.br = nil
	}
	g.mu.Unlock()
	g.once.Do(func() {
		if g.release != nil {
			g.release()
		}
	})
	return err
}

func (g *guardConn) Read(p []byte) (int, error) {
	if len(g.pending) > 0 {
		n := copy(p, g.pending)
		g.pending = g.pending[n:]
		return n, nil
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.br == nil {
		return 0, net.ErrClosed
	}
	return g.read(p)
}

func (g *guardConn) read(p []byte) (int, error) {
	if len(g.pending) > 0 {
		n := copy(p, g.pending)
		g.pending = g.pending[n:]
		return n, nil
	}
	if g.body > 0 {
		if len(p) > g.body {
			p = p[:g.body]
		}
		if err := g.flushBefore(1); err != nil {
			return 0, g.fail(err)
		}
		n, err := g.br.Read(p)
		g.body -= n
		if err != nil {
			return n, g.fail(err)
		}
		return n, nil
	}
	if g.err != nil {
		return 0, g.err
	}
	if err := g.next(); err != nil {
		return 0, g.fail(err)
	}
	return g.read(p)
}

func (g *guardConn) fail(err error) error {
	if g.err == nil {
		g.err = err
		if errors.Is(err, ErrBadPacket) {
			g.log.Warn("milterd: closing connection", "remote", g.Conn.RemoteAddr().String(), "error", err)
		}
	}
	return g.err
}

// next reads and checks the next packet's framing; small packets are read
// whole and checked, body packets stream through afterwards.
func (g *guardConn) next() error {
	// Deadlines only guard reads that may block: when the next bytes are
	// already buffered, setting them would only cost timer updates.
	if g.br.Buffered() < 5 {
		if err := g.flush(); err != nil {
			return err
		}
		wait := g.limits.Idle
		if !g.started {
			wait = g.limits.FirstPacket
		}
		deadline.Arm(&g.rArmed, wait, g.Conn.SetReadDeadline)
	}
	var hdr [5]byte
	if _, err := io.ReadFull(g.br, hdr[:4]); err != nil {
		if err == io.ErrUnexpectedEOF {
			return fmt.Errorf("%w: truncated length", ErrBadPacket)
		}
		return err // EOF between packets: the MTA is done
	}
	length := binary.BigEndian.Uint32(hdr[:4])
	if g.br.Buffered() < int(min(length, 1<<16)) {
		deadline.Arm(&g.rArmed, g.limits.PacketTimeout, g.Conn.SetReadDeadline)
	}
	if length == 0 {
		return fmt.Errorf("%w: zero length", ErrBadPacket)
	}
	if length > uint32(g.limits.MaxPacket) {
		return fmt.Errorf("%w: length %d exceeds %d", ErrBadPacket, length, g.limits.MaxPacket)
	}
	code, err := g.br.ReadByte()
	if err != nil {
		return fmt.Errorf("%w: truncated packet: %v", ErrBadPacket, err)
	}
	hdr[4] = code
	if bytes.IndexByte([]byte(knownCodes), code) < 0 {
		return fmt.Errorf("%w: unknown command %q", ErrBadPacket, code)
	}
	if !g.started && code != 'O' {
		return fmt.Errorf("%w: command %q before negotiation", ErrBadPacket, code)
	}
	if g.started && code == 'O' {
		return fmt.Errorf("%w: second negotiation", ErrBadPacket)
	}
	g.started = true
	data := int(length) - 1
	if code == 'B' {
		g.pending = append(g.buf[:0], hdr[:]...)
		g.body = data
		return nil
	}
	g.buf = append(g.buf[:0], hdr[:]...)
	if cap(g.buf) < 5+data {
		g.buf = append(make([]byte, 0, 5+data), g.buf...)
	}
	g.buf = g.buf[:5+data]
	if err := g.flushBefore(data); err != nil {
		return err
	}
	if _, err := io.ReadFull(g.br, g.buf[5:]); err != nil {
		return fmt.Errorf("%w: declared %d bytes, connection ended or stalled: %v", ErrBadPacket, data, err)
	}
	if err := checkPacket(code, g.buf[5:]); err != nil {
		return err
	}
	g.pending = g.buf
	// Do not keep a large buffer around for an idle connection.
	if cap(g.buf) > 64<<10 {
		g.buf = nil
	}
	return nil
}

// checkPacket checks the layout of the packets go-milter parses without
// bounds checks.
func checkPacket(code byte, d []byte) error {
	switch code {
	case 'O':
		if len(d) < 12 {
			return fmt.Errorf("%w: negotiation of %d bytes", ErrBadPacket, len(d))
		}
	case 'C': // host NUL family [port(2) address NUL]
		h := bytes.IndexByte(d, 0)
		if h < 0 || h+1 >= len(d) {
			return fmt.Errorf("%w: connect without host or family", ErrBadPacket)
		}
		switch d[h+1] {
		case 'U':
		case 'L', '4', '6':
			rest := d[h+2:]
			if len(rest) < 2 || bytes.IndexByte(rest[2:], 0) < 0 {
				return fmt.Errorf("%w: connect without port or address", ErrBadPacket)
			}
		default:
			return fmt.Errorf("%w: connect with family %q", ErrBadPacket, d[h+1])
		}
	case 'M', 'R', 'H':
		if bytes.IndexByte(d, 0) < 0 {
			return fmt.Errorf("%w: command %q: string without NUL", ErrBadPacket, code)
		}
	case 'L': // name NUL value NUL
		if len(d) < 2 || d[len(d)-1] != 0 || bytes.Count(d, []byte{0}) != 2 {
			return fmt.Errorf("%w: header is not two NUL-terminated strings", ErrBadPacket)
		}
	case 'D':
		if len(d) < 1 || (len(d) > 1 && d[len(d)-1] != 0) {
			return fmt.Errorf("%w: macro packet without NUL", ErrBadPacket)
		}
	}
	return nil
}
