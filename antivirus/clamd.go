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
	pending *[]byte // bytes not yet sent, from bufPool
	max     int
	n       int
	trunc   bool
	err     error // the first failure; every later call returns it
}

// pendingSize is the small-write buffer of a Scan.
const pendingSize = 8 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, pendingSize); return &b }}

// Start connects to clamd and opens an INSTREAM. A Scan whose Start
// failed is returned anyway: its Write does nothing and its End returns
// the error, so the caller handles clamd's trouble in one place.
func (c *Clamd) Start(ctx context.Context) *Scan {
	s := &Scan{c: c, max: c.MaxBytes}
	if s.max <= 0 {
		s.max = DefaultMaxBytes
	}
	conn, err := c.dial(ctx)
	if err != nil {
		s.err = err
		return s
	}
	s.conn = conn
	s.pending = bufPool.Get().(*[]byte)
	*s.pending = append((*s.pending)[:0], "zINSTREAM\x00"...)
	return s
}

// release returns the buffer to the pool.
func (s *Scan) release() {
	if s.pending != nil {
		bufPool.Put(s.pending)
		s.pending = nil
	}
}

func (s *Scan) deadline() { s.conn.SetWriteDeadline(time.Now().Add(s.c.timeout())) }

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
func (s *Scan) send(p []byte) error {
	s.deadline()
	var err error
	if p == nil {
		_, err = s.conn.Write(*s.pending)
	} else {
		bufs := net.Buffers{*s.pending, p}
		_, err = bufs.WriteTo(s.conn)
	}
	*s.pending = (*s.pending)[:0]
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
	defer s.conn.Close()
	s.conn.SetReadDeadline(time.Now().Add(s.c.timeout()))
	stop := context.AfterFunc(ctx, func() { s.conn.SetReadDeadline(time.Unix(1, 0)) })
	defer stop()
	reply, err := readReply(s.conn)
	if err != nil {
		if ctx.Err() != nil {
			err = fmt.Errorf("clamd: %w", ctx.Err())
		}
		s.err = err
		return res, err
	}
	res.Virus, err = ParseReply(reply)
	if err != nil {
		s.err = err
	}
	return res, err
}

// Close releases the connection of an unfinished scan.
func (s *Scan) Close() {
	if s.conn != nil {
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
	for len(b) < maxReply {
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
// only (anything else becomes '?'), at most 100 characters ("..." marks a
// cut), "unnamed" for nothing.
func ReplyName(name string) string {
	const max = 100
	var b strings.Builder
	for i := 0; i < len(name); i++ {
		c := name[i]
		if c < 0x20 || c > 0x7e {
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
