package spam

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// Spamd asks a real SpamAssassin spamd over the SPAMC/1.5 protocol with the
// SYMBOLS command: one connection per message, the message as the request
// body, and back a "Spam: True ; score / required" header and the names of
// the rules that hit (spamd does not give their scores with SYMBOLS).
type Spamd struct {
	Address string        // spam.spamd_address: host:port, or the path of a unix socket
	Timeout time.Duration // bounds one check; DefaultEngineTimeout when 0
}

// Name implements Engine.
func (s *Spamd) Name() string { return "spamd" }

// Check implements Engine.
func (s *Spamd) Check(ctx context.Context, m *Message) (*Report, error) {
	t := s.Timeout
	if t <= 0 {
		t = DefaultEngineTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, t)
	defer cancel()
	conn, err := spamdSend(ctx, s.Address, fmt.Sprintf("SYMBOLS SPAMC/1.5\r\nContent-length: %d\r\n\r\n", len(m.Data)), m.Data)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	rep, err := readSpamd(bufio.NewReader(io.LimitReader(conn, maxReply)))
	if err != nil {
		return nil, engineErr("spamd", err)
	}
	return rep, nil
}

// spamdSend connects to spamd at address (a path: its unix socket) and
// sends one request, head then body, bounded by ctx (its deadline, and
// its end cuts the connection). It then half-closes, as spamc does: spamd
// reads the message line by line up to Content-length, and a message cut
// at MaxEngineBytes (or not ending in a newline) would leave it waiting
// for the rest of a line. The caller reads the reply and closes conn.
func spamdSend(ctx context.Context, address, head string, body []byte) (net.Conn, error) {
	network := "tcp"
	if strings.HasPrefix(address, "/") {
		network = "unix"
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, network, address)
	if err != nil {
		return nil, engineErr("spamd", err)
	}
	dl, _ := ctx.Deadline()
	conn.SetDeadline(dl)
	stop := context.AfterFunc(ctx, func() { conn.SetDeadline(time.Unix(1, 0)) })
	fail := func(err error) (net.Conn, error) {
		stop()
		conn.Close()
		return nil, engineErr("spamd", err)
	}
	w := bufio.NewWriterSize(conn, 32<<10)
	w.WriteString(head)
	w.Write(body)
	if err := w.Flush(); err != nil {
		return fail(err)
	}
	if cw, ok := conn.(interface{ CloseWrite() error }); ok {
		if err := cw.CloseWrite(); err != nil {
			return fail(err)
		}
	}
	return &stopConn{Conn: conn, stop: stop}, nil
}

// stopConn ends the context's hold on the connection when it is closed.
type stopConn struct {
	net.Conn
	stop func() bool
}

func (c *stopConn) Close() error {
	c.stop()
	return c.Conn.Close()
}

// readSpamd parses a SPAMD/1.x reply to SYMBOLS.
func readSpamd(r *bufio.Reader) (*Report, error) {
	line, err := r.ReadString('\n')
	if err != nil {
		return nil, fmt.Errorf("reply: %w", err)
	}
	f := strings.Fields(line)
	if len(f) < 3 || !strings.HasPrefix(f[0], "SPAMD/") {
		return nil, fmt.Errorf("reply: bad status line %q", strings.TrimSpace(line))
	}
	if f[1] != "0" {
		return nil, fmt.Errorf("reply: %s", strings.TrimSpace(line))
	}
	var rep *Report
	length := -1
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return nil, fmt.Errorf("reply header: %w", err)
		}
		line = strings.TrimRight(line, "\r\n")
		if line == "" {
			break
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		// A field name runs up to the colon with no space before it, as
		// spamd writes it; "Spam :" is not its Spam header.
		switch strings.ToLower(k) {
		case "spam":
			// "True ; 1000.0 / 5.0"
			_, scores, ok := strings.Cut(v, ";")
			sc, req, ok2 := strings.Cut(scores, "/")
			score, err1 := strconv.ParseFloat(strings.TrimSpace(sc), 64)
			required, err2 := strconv.ParseFloat(strings.TrimSpace(req), 64)
			if !ok || !ok2 || err1 != nil || err2 != nil {
				return nil, fmt.Errorf("reply: bad Spam header %q", v)
			}
			rep = &Report{Score: score, Required: required}
		case "content-length":
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > maxReply {
				return nil, fmt.Errorf("reply: bad Content-length %q", v)
			}
			length = n
		}
	}
	if rep == nil {
		return nil, fmt.Errorf("reply without Spam header")
	}
	var body []byte
	if length >= 0 {
		body = make([]byte, length)
		if _, err := io.ReadFull(r, body); err != nil {
			return nil, fmt.Errorf("reply body: %w", err)
		}
	} else if body, err = io.ReadAll(r); err != nil {
		return nil, fmt.Errorf("reply body: %w", err)
	}
	for _, name := range strings.Split(string(body), ",") {
		if name = strings.TrimSpace(name); name != "" {
			rep.Symbols = append(rep.Symbols, Symbol{Name: name})
		}
	}
	sortSymbols(rep.Symbols)
	return rep, nil
}
