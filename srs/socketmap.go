package srs

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Postfix's socketmap protocol (socketmap_table(5)): the client sends one
// netstring "NAME KEY" per lookup, the server answers one netstring
// "OK DATA", "NOTFOUND ", "TEMP REASON", "TIMEOUT REASON" or "PERM
// REASON", and the connection stays open for the next lookup. Postfix
// asks socketmaps only with whole keys (no partial address forms).

// The statuses of a socketmap reply.
const (
	StatusOK       = "OK"
	StatusNotFound = "NOTFOUND"
	StatusTemp     = "TEMP"
	StatusPerm     = "PERM"
)

// Limits of the socketmap server.
const (
	// MaxRequest bounds one request: Postfix's keys are addresses (a line
	// of SMTP is at most a few thousand bytes).
	MaxRequest = 10000
	// MaxReply is Postfix's limit on a reply's payload.
	MaxReply = 100000
	// DefaultIdleTimeout closes a connection that asks nothing for this
	// long (Postfix's client keeps one open for a while after a lookup).
	DefaultIdleTimeout = 5 * time.Minute
	writeTimeout       = 10 * time.Second
)

// Lookup answers one socketmap request: the map name and the key as
// Postfix sent them. It returns a status (StatusOK, ...) and its data.
type Lookup func(name, key string) (status, data string)

// SocketmapServer serves a Lookup over Postfix's socketmap protocol.
type SocketmapServer struct {
	Lookup      Lookup
	IdleTimeout time.Duration // DefaultIdleTimeout when 0
	Log         *slog.Logger  // protocol errors (debug); slog.Default when nil

	mu     sync.Mutex
	ln     net.Listener
	conns  map[net.Conn]struct{}
	closed bool
	wg     sync.WaitGroup
}

// Serve accepts connections on ln until Close; it returns nil then.
func (s *SocketmapServer) Serve(ln net.Listener) error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.ln = ln
	if s.conns == nil {
		s.conns = map[net.Conn]struct{}{}
	}
	s.mu.Unlock()
	var delay time.Duration
	for {
		c, err := ln.Accept()
		if err != nil {
			s.mu.Lock()
			closed := s.closed
			s.mu.Unlock()
			if closed || errors.Is(err, net.ErrClosed) {
				return nil
			}
			var ne net.Error
			if errors.As(err, &ne) && ne.Timeout() || errors.Is(err, syscall.EMFILE) || errors.Is(err, syscall.ENFILE) {
				// Out of descriptors: wait a little, as net/http does.
				delay = min(max(2*delay, 5*time.Millisecond), time.Second)
				time.Sleep(delay)
				continue
			}
			return err
		}
		delay = 0
		s.mu.Lock()
		if s.closed {
			s.mu.Unlock()
			c.Close()
			return nil
		}
		s.conns[c] = struct{}{}
		s.wg.Add(1)
		s.mu.Unlock()
		go func() {
			defer s.wg.Done()
			s.serveConn(c)
			s.mu.Lock()
			delete(s.conns, c)
			s.mu.Unlock()
		}()
	}
}

// Close stops accepting, closes every connection and waits for them.
func (s *SocketmapServer) Close() error {
	s.mu.Lock()
	s.closed = true
	var err error
	if s.ln != nil {
		err = s.ln.Close()
	}
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()
	s.wg.Wait()
	return err
}

func (s *SocketmapServer) log() *slog.Logger {
	if s.Log != nil {
		return s.Log
	}
	return slog.Default()
}

func (s *SocketmapServer) serveConn(c net.Conn) {
	defer c.Close()
	idle := s.IdleTimeout
	if idle <= 0 {
		idle = DefaultIdleTimeout
	}
	r := bufio.NewReaderSize(c, 512)
	w := bufio.NewWriterSize(c, 512)
	for {
		c.SetReadDeadline(time.Now().Add(idle))
		req, err := ReadNetstring(r, MaxRequest)
		if err != nil {
			if !errors.Is(err, io.EOF) && !errors.Is(err, net.ErrClosed) && !isTimeout(err) {
				s.log().Debug("srs socketmap: closing a connection", "err", err)
			}
			return
		}
		name, key, ok := strings.Cut(string(req), " ")
		status, data := StatusPerm, "request is not NAME KEY"
		if ok && name != "" {
			status, data = s.Lookup(name, key)
		}
		reply := status + " " + data
		if len(reply) > MaxReply {
			reply = StatusPerm + " reply too long"
		}
		c.SetWriteDeadline(time.Now().Add(writeTimeout))
		if err := WriteNetstring(w, []byte(reply)); err != nil {
			return
		}
		if err := w.Flush(); err != nil {
			return
		}
	}
}

func isTimeout(err error) bool {
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// ReadNetstring reads one netstring ("LEN:DATA,") of at most max bytes of
// data. A length with a leading zero (other than "0" itself), more digits
// than max needs, a missing ':' or ',' is an error.
func ReadNetstring(r *bufio.Reader, max int) ([]byte, error) {
	n, digits := 0, 0
	maxDigits := len(strconv.Itoa(max))
	for {
		c, err := r.ReadByte()
		if err != nil {
			if digits > 0 && errors.Is(err, io.EOF) {
				return nil, io.ErrUnexpectedEOF
			}
			return nil, err
		}
		if c == ':' {
			if digits == 0 {
				return nil, errors.New("netstring: no length")
			}
			break
		}
		if c < '0' || c > '9' {
			return nil, fmt.Errorf("netstring: %q in the length", c)
		}
		if digits == 1 && n == 0 {
			return nil, errors.New("netstring: length with a leading zero")
		}
		digits++
		if digits > maxDigits {
			return nil, fmt.Errorf("netstring: longer than %d bytes", max)
		}
		n = n*10 + int(c-'0')
	}
	if n > max {
		return nil, fmt.Errorf("netstring: %d bytes, longer than %d", n, max)
	}
	buf := make([]byte, n+1)
	if _, err := io.ReadFull(r, buf); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, io.ErrUnexpectedEOF
		}
		return nil, err
	}
	if buf[n] != ',' {
		return nil, errors.New("netstring: no ',' after the data")
	}
	return buf[:n], nil
}

// WriteNetstring writes data as one netstring.
func WriteNetstring(w io.Writer, data []byte) error {
	b := make([]byte, 0, len(data)+12)
	b = strconv.AppendInt(b, int64(len(data)), 10)
	b = append(b, ':')
	b = append(b, data...)
	b = append(b, ',')
	_, err := w.Write(b)
	return err
}
