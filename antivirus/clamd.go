// Package antivirus is milterd's virus scanner client: ClamAV's clamd,
// asked over its socket with the INSTREAM command. A Scan is opened when a
// message's headers are known and fed the message as the milter receives
// it, chunk by chunk, so that nothing is buffered for the scan; at the end
// of the message the stream is closed and clamd's answer read.
package antivirus

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strings"
	"sync"
	"time"
)

// DefaultTimeout bounds each step of a scan: the connection, every write,
// and the wait for the answer after the end of the message.
const DefaultTimeout = 15 * time.Second

// DefaultMaxBytes is how much of a message is streamed to clamd: 25 MiB,
// clamd's default StreamMaxLength. Beyond it, the rest of the message is
// not sent and the scan covers the first DefaultMaxBytes (Result.Truncated).
// A clamd whose StreamMaxLength is lower answers "INSTREAM size limit
// exceeded", an error.
const DefaultMaxBytes = 25 << 20

// maxChunk bounds one INSTREAM chunk; a larger write is split.
const maxChunk = 1 << 20

// Clamd is a clamd reachable at Address.
type Clamd struct {
	// Address is "unix:/path" or "host:port" (spam.antivirus.address).
	Address string
	// Timeout bounds each step; DefaultTimeout when 0.
	Timeout time.Duration
	// MaxBytes is how much of a message is sent; DefaultMaxBytes when 0.
	MaxBytes int
	// MaxIdle is how many clamd sessions are kept open between scans
	// (DefaultMaxIdle when 0; negative: a new connection per scan).
	MaxIdle int

	mu    sync.Mutex
	idle  []*session // most recently used last
	reap  *time.Timer
	reaps int // sessions closed for their age (tests)
}

// DefaultMaxIdle is the default of Clamd.MaxIdle.
const DefaultMaxIdle = 8

// MaxIdleAge is how long an idle session is kept: well below clamd's
// IdleTimeout (30 s by default), after which clamd closes it. A session
// clamd has closed fails at the first write, before anything of the
// message is lost, and the scan goes on over a new connection.
const MaxIdleAge = 10 * time.Second

// session is a connection in clamd's IDSESSION mode: it stays open across
// commands, each answer prefixed with the command's number. Setting one up
// and tearing it down is most of what a scan costs milterd beside clamd's
// own work (socket, connect, the poller, close), so sessions are reused,
// one scan at a time each.
type session struct {
	conn   net.Conn
	used   time.Time
	reused bool
	until  time.Time // conn's deadline, reads and writes (see refresh)
}

// get returns an idle session or opens a new one.
func (c *Clamd) get(ctx context.Context) (*session, []byte, error) {
	if c.MaxIdle >= 0 {
		c.mu.Lock()
		for len(c.idle) > 0 {
			s := c.idle[len(c.idle)-1]
			c.idle = c.idle[:len(c.idle)-1]
			if time.Since(s.used) < MaxIdleAge {
				c.mu.Unlock()
				s.reused = true
				return s, nil, nil
			}
			s.conn.Close()
		}
		c.mu.Unlock()
	}
	conn, err := c.dial(ctx)
	if err != nil {
		return nil, nil, err
	}
	var hello []byte
	if c.MaxIdle >= 0 {
		hello = []byte("zIDSESSION\x00")
	}
	return &session{conn: conn}, hello, nil
}

// put keeps a session whose scan went well for the next one.
func (c *Clamd) put(s *session) {
	if c.MaxIdle < 0 {
		s.conn.Close()
		return
	}
	max := c.MaxIdle
	if max == 0 {
		max = DefaultMaxIdle
	}
	s.used = time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.idle) >= max {
		s.conn.Close()
		return
	}
	c.idle = append(c.idle, s)
	if c.reap == nil {
		c.reap = time.AfterFunc(MaxIdleAge, c.reapIdle)
	}
}

// reapIdle closes sessions idle for MaxIdleAge, also those of a Clamd no
// longer used (an inventory reload made a new one).
func (c *Clamd) reapIdle() {
	c.mu.Lock()
	defer c.mu.Unlock()
	keep := c.idle[:0]
	for _, s := range c.idle {
		if time.Since(s.used) >= MaxIdleAge {
			s.conn.Close()
			c.reaps++
		} else {
			keep = append(keep, s)
		}
	}
	clear(c.idle[len(keep):])
	c.idle = keep
	c.reap = nil
	if len(c.idle) > 0 {
		c.reap = time.AfterFunc(MaxIdleAge-time.Since(c.idle[0].used)+time.Millisecond, c.reapIdle)
	}
}

// Close closes the idle sessions.
func (c *Clamd) Close() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for _, s := range c.idle {
		s.conn.Close()
	}
	c.idle = nil
	if c.reap != nil {
		c.reap.Stop()
		c.reap = nil
	}
}

// Idle is the number of open idle sessions.
func (c *Clamd) Idle() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.idle)
}

// SplitAddress returns the network ("unix" or "tcp") and address of a
// spam.antivirus.address value.
func SplitAddress(s string) (network, addr string, err error) {
	if p, ok := strings.CutPrefix(s, "unix:"); ok {
		if !strings.HasPrefix(p, "/") {
			return "", "", fmt.Errorf("%q: the socket path after unix: must be absolute", s)
		}
		return "unix", p, nil
	}
	h, port, err := net.SplitHostPort(s)
	if err != nil || h == "" || port == "" {
		return "", "", fmt.Errorf("%q is neither unix:/path nor host:port", s)
	}
	return "tcp", s, nil
}

func (c *Clamd) timeout() time.Duration {
	if c.Timeout > 0 {
		return c.Timeout
	}
	return DefaultTimeout
}

func (c *Clamd) dial(ctx context.Context) (net.Conn, error) {
	network, addr, err := SplitAddress(c.Address)
	if err != nil {
		return nil, err
	}
	d := net.Dialer{Timeout: c.timeout()}
	conn, err := d.DialContext(ctx, network, addr)
	if err != nil {
		return nil, fmt.Errorf("clamd: %w", err)
	}
	return conn, nil
}

// Ping asks clamd for PONG.
func (c *Clamd) Ping(ctx context.Context) error {
	conn, err := c.dial(ctx)
	if err != nil {
		return err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(c.timeout()))
	if _, err := conn.Write([]byte("zPING\x00")); err != nil {
		return fmt.Errorf("clamd: %w", err)
	}
	reply, err := readReply(conn)
	if err != nil {
		return err
	}
	if reply != "PONG" {
		return fmt.Errorf("clamd: PING answered %q", reply)
	}
	return nil
}

// Result is clamd's verdict on one message.
type Result struct {
	Virus     string // the signature name when a virus was found, else ""
	Truncated bool   // only the first MaxBytes of the message were scanned
	Bytes     int    // bytes streamed
}

// Scan is one INSTREAM in progress. It is not safe for concurrent use.
//
// Small writes (the command, the header block, short body chunks) gather
// in a small buffer; a write that does not fit goes out with it in one
// writev, without a copy. A small message costs one write for the whole
// stream.
type Scan struct {
	c       *Clamd
	conn    net.Conn
	sess    *session
	sent    bool    // something went out on conn
	pending *[]byte // bytes not yet sent, from bufPool
	max     int
	n       int
	trunc   bool
	err     error // the first failure; every later call returns it
}

// pendingSize is the small-write buffer of a Scan.
const pendingSize = 8 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, pendingSize); return &b }}

// Start takes a clamd session (a kept one, or a new connection) and opens
// an INSTREAM. A Scan whose Start failed is returned anyway: its Write does
// nothing and its Wait returns the error, so the caller handles clamd's
// trouble in one place.
func (c *Clamd) Start(ctx context.Context) *Scan {
	s := &Scan{c: c, max: c.MaxBytes}
	if s.max <= 0 {
		s.max = DefaultMaxBytes
	}
	sess, hello, err := c.get(ctx)
	if err != nil {
		s.err = err
		return s
	}
	s.sess, s.conn = sess, sess.conn
	s.pending = bufPool.Get().(*[]byte)
	*s.pending = append(append((*s.pending)[:0], hello...), "zINSTREAM\x00"...)
	return s
}

// release returns the buffer to the pool.
func (s *Scan) release() {
	if s.pending != nil {
		bufPool.Put(s.pending)
		s.pending = nil
	}
}

// refresh bounds the next step (a write, the wait for the answer) by the
// timeout. The session's deadline moves only when it has come closer than
// the timeout by more than a sixteenth of it, not at every write and
// answer: setting a deadline arms a runtime timer, which can wake an idle
// thread of the process for nothing (measured: most of the CPU milterd
// spent per scan beside its reads and writes). So a step is bounded by
// 15/16 of the timeout at least.
func (s *Scan) refresh() {
	t := s.c.timeout()
	now := time.Now()
	if s.sess.until.Sub(now) < t-t/16 {
		s.sess.until = now.Add(t)
		s.conn.SetDeadline(s.sess.until)
	}
}

// fail records a write error. clamd closes the connection after an error
// of its own (e.g. "INSTREAM size limit exceeded. ERROR"): its answer,
// when there is one, says more than the broken pipe.
func (s *Scan) fail(err error) {
	if s.err != nil {
		return
	}
	s.conn.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
	if reply, rerr := readReply(s.conn); rerr == nil && reply != "" {
		s.err = fmt.Errorf("clamd: %s", reply)
	} else {
		s.err = fmt.Errorf("clamd: %w", err)
	}
	s.conn.Close()
	s.release()
}

// send writes what is pending, then p (nil: nothing more), in one call.
// The first write on a reused session that clamd has closed meanwhile
// fails with nothing sent: everything so far is still pending (and p), so
// it goes again over a new session.
func (s *Scan) send(p []byte) error {
	err := s.write(p)
	if err != nil && !s.sent && s.sess.reused {
		s.conn.Close()
		s.c.Close() // the other kept sessions are likely gone too (clamd restarted)
		sess, hello, derr := s.c.get(context.Background())
		if derr != nil {
			return derr
		}
		sess.reused = false // never retry twice
		s.sess, s.conn = sess, sess.conn
		*s.pending = append(hello, *s.pending...)
		err = s.write(p)
	}
	*s.pending = (*s.pending)[:0]
	s.sent = true
	return err
}

func (s *Scan) write(p []byte) error {
	s.refresh()
	if p == nil {
		_, err := s.conn.Write(*s.pending)
		return err
	}
	bufs := net.Buffers{*s.pending, p}
	_, err := bufs.WriteTo(s.conn)
	return err
}

// Write streams the next bytes of the message as INSTREAM chunks. It never
// keeps p. After MaxBytes it drops the rest.
func (s *Scan) Write(p []byte) error {
	if s.err != nil {
		return s.err
	}
	if room := s.max - s.n; len(p) > room {
		p, s.trunc = p[:room], true
	}
	for len(p) > 0 {
		chunk := p[:min(len(p), maxChunk)]
		p = p[len(chunk):]
		*s.pending = binary.BigEndian.AppendUint32(*s.pending, uint32(len(chunk)))
		s.n += len(chunk)
		if len(*s.pending)+len(chunk) <= pendingSize {
			*s.pending = append(*s.pending, chunk...)
			continue
		}
		if err := s.send(chunk); err != nil {
			s.fail(err)
			return s.err
		}
	}
	return nil
}

// Truncated reports whether Write has dropped bytes over MaxBytes.
func (s *Scan) Truncated() bool { return s.trunc }

// Err is the failure so far (nil while the scan is healthy).
func (s *Scan) Err() error { return s.err }

// Finish ends the stream (the zero-length chunk) and sends what is
// buffered; clamd then scans. Wait reads its answer. Finish and Wait are
// split so that the caller can do other work while clamd scans.
func (s *Scan) Finish() {
	if s.err != nil {
		return
	}
	*s.pending = append(*s.pending, 0, 0, 0, 0)
	err := s.send(nil)
	s.release()
	if err != nil {
		s.fail(err)
	}
}

// Wait reads clamd's answer (after Finish) and closes the connection.
func (s *Scan) Wait(ctx context.Context) (Result, error) {
	res := Result{Truncated: s.trunc, Bytes: s.n}
	if s.err != nil {
		return res, s.err
	}
	s.refresh()
	stop := context.AfterFunc(ctx, func() { s.conn.SetReadDeadline(time.Unix(1, 0)) })
	reply, err := readReply(s.conn)
	stop()
	if err != nil {
		s.conn.Close()
		if ctx.Err() != nil {
			err = fmt.Errorf("clamd: %w", ctx.Err())
		}
		s.err = err
		return res, err
	}
	if s.c.MaxIdle >= 0 {
		// In a session every answer starts with its command's number.
		n, rest, ok := strings.Cut(reply, ": ")
		if !ok || n == "" || strings.Trim(n, "0123456789") != "" {
			s.conn.Close()
			s.err = fmt.Errorf("clamd: unexpected answer %q", reply)
			return res, s.err
		}
		reply = rest
	}
	res.Virus, err = ParseReply(reply)
	if err != nil {
		s.conn.Close()
		s.err = err
		return res, err
	}
	s.c.put(s.sess)
	s.err = errDone
	return res, nil
}

// errDone marks a scan whose session went back to the pool.
var errDone = errors.New("clamd: scan finished")

// Close releases the connection of an unfinished scan.
func (s *Scan) Close() {
	if s.conn != nil && s.err != errDone {
		s.conn.Close()
	}
	s.release()
	if s.err == nil {
		s.err = errors.New("clamd: scan closed")
	}
}

// ScanBytes scans data in one call.
func (c *Clamd) ScanBytes(ctx context.Context, data []byte) (Result, error) {
	s := c.Start(ctx)
	s.Write(data)
	s.Finish()
	return s.Wait(ctx)
}

// maxReply bounds clamd's answer.
const maxReply = 4096

// readReply reads one answer of the z-commands: up to the NUL (or EOF).
// clamd closes the connection after it, so nothing behind it is lost.
func readReply(r io.Reader) (string, error) {
	var arr [256]byte
	b := arr[:0]
	for {
		if len(b) >= maxReply {
			return "", fmt.Errorf("clamd: an answer of more than %d bytes", maxReply)
		}
		if len(b) == cap(b) {
			b = append(b, 0)[:len(b)]
		}
		n, err := r.Read(b[len(b):cap(b)])
		if i := bytes.IndexByte(b[len(b):len(b)+n], 0); i >= 0 {
			b = b[:len(b)+i]
			break
		}
		b = b[:len(b)+n]
		if err != nil {
			if len(b) > 0 && errors.Is(err, io.EOF) {
				break
			}
			return "", fmt.Errorf("clamd: reading the answer: %w", err)
		}
	}
	return string(bytes.TrimRight(b, "\r\n")), nil
}

// ParseReply reads clamd's answer to INSTREAM: "stream: OK" (clean),
// "stream: NAME FOUND" (virus NAME), or "... ERROR" (an error, e.g.
// "INSTREAM size limit exceeded. ERROR").
func ParseReply(reply string) (virus string, err error) {
	rest, ok := strings.CutPrefix(reply, "stream: ")
	switch {
	case ok && rest == "OK":
		return "", nil
	case ok && strings.HasSuffix(rest, " FOUND"):
		name := strings.TrimSuffix(rest, " FOUND")
		if name == "" {
			return "", fmt.Errorf("clamd: %q names no signature", reply)
		}
		return name, nil
	case strings.HasSuffix(reply, "ERROR"):
		return "", fmt.Errorf("clamd: %s", reply)
	}
	return "", fmt.Errorf("clamd: unexpected answer %q", reply)
}

// ReplyName makes a signature name fit for an SMTP reply: printable ASCII
// only (anything else, and '%', becomes '?'), at most 100 characters
// ("..." marks a cut), "unnamed" for nothing.
func ReplyName(name string) string {
	const max = 100
	var b strings.Builder
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c < 0x20 || c > 0x7e || c == '%' { // '%' is a format character to some MTAs' milter code
			c = '?'
		}
		b.WriteByte(c)
	}
	s := strings.TrimSpace(b.String())
	if len(s) > max {
		s = s[:max-3] + "..."
	}
	if s == "" {
		s = "unnamed"
	}
	return s
}
