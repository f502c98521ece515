package harness

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"
)

// Reply is one SMTP reply: the code and the text lines without the code
// (for "250-a", "250 b": Code 250, Lines ["a", "b"]).
type Reply struct {
	Code  int
	Lines []string
}

// Text is the reply as the client saw it, lines joined with "\n":
// "550 5.1.1 <x@example.com>: Recipient address rejected: User unknown".
func (r Reply) Text() string {
	if r.Code == 0 {
		return ""
	}
	var b strings.Builder
	for i, l := range r.Lines {
		if i > 0 {
			b.WriteByte('\n')
		}
		b.WriteString(strconv.Itoa(r.Code))
		b.WriteByte(' ')
		b.WriteString(l)
	}
	return b.String()
}

func (r Reply) String() string { return r.Text() }

// OK reports a 2xx or 3xx reply.
func (r Reply) OK() bool { return r.Code >= 200 && r.Code < 400 }

// Client is a tiny SMTP client that returns every reply exactly. Use Dial
// for a step-by-step session, or Send for a whole transaction.
type Client struct {
	conn    net.Conn
	r       *bufio.Reader
	Timeout time.Duration
	// EHLO holds the last EHLO reply (its lines are the extensions).
	EHLO Reply
}

// DialOptions configure the client side of a connection.
type DialOptions struct {
	// LocalAddr is the source address to bind, e.g. "127.0.0.2" to play a
	// trusted host (any 127.0.0.0/8 address works inside the namespace).
	LocalAddr string
	// Timeout bounds each command; default 30s.
	Timeout time.Duration
	// ImplicitTLS starts TLS on connect, before the banner (port 465, RFC
	// 8314), without verifying the certificate.
	ImplicitTLS bool
}

// Dial connects to addr (host:port) and reads the banner.
func Dial(addr string, opt DialOptions) (*Client, Reply, error) {
	d := net.Dialer{Timeout: 10 * time.Second}
	if opt.LocalAddr != "" {
		d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(opt.LocalAddr)}
	}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return nil, Reply{}, err
	}
	c := &Client{conn: conn, r: bufio.NewReader(conn), Timeout: opt.Timeout}
	if c.Timeout == 0 {
		c.Timeout = 30 * time.Second
	}
	if opt.ImplicitTLS {
		tc := tls.Client(conn, &tls.Config{InsecureSkipVerify: true})
		tc.SetDeadline(time.Now().Add(c.Timeout))
		if err := tc.Handshake(); err != nil {
			conn.Close()
			return nil, Reply{}, fmt.Errorf("smtp: TLS handshake: %w", err)
		}
		c.conn, c.r = tc, bufio.NewReader(tc)
	}
	banner, err := c.read()
	if err != nil {
		conn.Close()
		return nil, banner, err
	}
	return c, banner, nil
}

func (c *Client) read() (Reply, error) {
	c.conn.SetReadDeadline(time.Now().Add(c.Timeout))
	var r Reply
	for {
		line, err := c.r.ReadString('\n')
		if err != nil {
			return r, fmt.Errorf("smtp: reading reply: %w", err)
		}
		line = strings.TrimRight(line, "\r\n")
		if len(line) < 3 {
			return r, fmt.Errorf("smtp: short reply line %q", line)
		}
		code, err := strconv.Atoi(line[:3])
		if err != nil {
			return r, fmt.Errorf("smtp: bad reply line %q", line)
		}
		r.Code = code
		text := ""
		if len(line) > 4 {
			text = line[4:]
		}
		r.Lines = append(r.Lines, text)
		if len(line) == 3 || line[3] == ' ' {
			return r, nil
		}
	}
}

// Cmd sends one command line (CRLF added) and returns the reply.
func (c *Client) Cmd(format string, args ...any) (Reply, error) {
	c.conn.SetWriteDeadline(time.Now().Add(c.Timeout))
	if _, err := fmt.Fprintf(c.conn, format+"\r\n", args...); err != nil {
		return Reply{}, fmt.Errorf("smtp: %w", err)
	}
	return c.read()
}

// Hello sends EHLO name and remembers the extensions.
func (c *Client) Hello(name string) (Reply, error) {
	r, err := c.Cmd("EHLO %s", name)
	c.EHLO = r
	return r, err
}

// Extension reports whether the last EHLO reply announced ext (e.g.
// "STARTTLS", "AUTH").
func (c *Client) Extension(ext string) bool {
	for _, l := range c.EHLO.Lines {
		if f := strings.Fields(l); len(f) > 0 && strings.EqualFold(f[0], ext) {
			return true
		}
	}
	return false
}

// StartTLS sends STARTTLS and, on 220, performs the handshake without
// verifying the certificate (the harness's own self-signed one). Send EHLO
// again afterwards.
func (c *Client) StartTLS() (Reply, error) {
	r, err := c.Cmd("STARTTLS")
	if err != nil || r.Code != 220 {
		return r, err
	}
	tc := tls.Client(c.conn, &tls.Config{InsecureSkipVerify: true})
	tc.SetDeadline(time.Now().Add(c.Timeout))
	if err := tc.Handshake(); err != nil {
		return r, fmt.Errorf("smtp: TLS handshake: %w", err)
	}
	c.conn = tc
	c.r = bufio.NewReader(tc)
	return r, nil
}

// AuthPlain authenticates with SASL PLAIN (login = full address).
func (c *Client) AuthPlain(user, pass string) (Reply, error) {
	tok := base64.StdEncoding.EncodeToString([]byte("\x00" + user + "\x00" + pass))
	return c.Cmd("AUTH PLAIN %s", tok)
}

// Data sends DATA, then msg (dot-stuffed, CRLF line ends enforced) and the
// final dot. It returns the reply to DATA and, when that was 354, the final
// reply.
func (c *Client) Data(msg []byte) (Reply, Reply, error) {
	r, err := c.Cmd("DATA")
	if err != nil || r.Code != 354 {
		return r, Reply{}, err
	}
	c.conn.SetWriteDeadline(time.Now().Add(c.Timeout))
	w := bufio.NewWriter(c.conn)
	for _, l := range strings.SplitAfter(strings.ReplaceAll(string(msg), "\r\n", "\n"), "\n") {
		if l == "" {
			continue
		}
		l = strings.TrimSuffix(l, "\n")
		if strings.HasPrefix(l, ".") {
			w.WriteByte('.')
		}
		w.WriteString(l)
		w.WriteString("\r\n")
	}
	w.WriteString(".\r\n")
	if err := w.Flush(); err != nil {
		return r, Reply{}, fmt.Errorf("smtp: %w", err)
	}
	final, err := c.read()
	return r, final, err
}

// Quit sends QUIT and closes the connection.
func (c *Client) Quit() {
	c.Cmd("QUIT")
	c.conn.Close()
}

// Close closes the connection without QUIT.
func (c *Client) Close() error { return c.conn.Close() }

// Envelope describes one SMTP transaction for Send.
type Envelope struct {
	LocalAddr string // source address, e.g. "127.0.0.2" (trusted host)
	Helo      string // default "client.test"
	StartTLS  bool   // issue STARTTLS (then EHLO again)
	// ImplicitTLS: TLS from the first byte (port 465), see DialOptions.
	ImplicitTLS bool
	// AuthUser/AuthPass: AUTH PLAIN after EHLO (after STARTTLS when set).
	AuthUser, AuthPass string
	From               string   // MAIL FROM:<From>; "" is the null sender
	To                 []string // one RCPT TO each
	// Data is the message; nil stops after the RCPT stage (like swaks
	// --quit-after RCPT).
	Data []byte
}

// Transcript holds the reply to every stage Send reached; stages not
// reached have Code 0.
type Transcript struct {
	Banner, EHLO, StartTLS, EHLO2, Auth, Mail Reply
	Rcpt                                      []Reply
	DataCmd, Final                            Reply
}

// Send runs one transaction against addr, stopping like a real client
// does: after a failing EHLO, STARTTLS, AUTH or MAIL; before DATA when no
// recipient was accepted. err is an I/O or protocol error, never an SMTP
// rejection (those are in the transcript).
func Send(addr string, e Envelope) (Transcript, error) {
	var t Transcript
	c, banner, err := Dial(addr, DialOptions{LocalAddr: e.LocalAddr, ImplicitTLS: e.ImplicitTLS})
	t.Banner = banner
	if err != nil {
		return t, err
	}
	defer c.Quit()
	helo := e.Helo
	if helo == "" {
		helo = "client.test"
	}
	if t.EHLO, err = c.Hello(helo); err != nil || t.EHLO.Code != 250 {
		return t, err
	}
	if e.StartTLS {
		if t.StartTLS, err = c.StartTLS(); err != nil || t.StartTLS.Code != 220 {
			return t, err
		}
		if t.EHLO2, err = c.Hello(helo); err != nil || t.EHLO2.Code != 250 {
			return t, err
		}
	}
	if e.AuthUser != "" {
		if t.Auth, err = c.AuthPlain(e.AuthUser, e.AuthPass); err != nil || t.Auth.Code != 235 {
			return t, err
		}
	}
	if t.Mail, err = c.Cmd("MAIL FROM:<%s>", e.From); err != nil || t.Mail.Code != 250 {
		return t, err
	}
	accepted := 0
	for _, r := range e.To {
		rr, err := c.Cmd("RCPT TO:<%s>", r)
		t.Rcpt = append(t.Rcpt, rr)
		if err != nil {
			return t, err
		}
		if rr.OK() {
			accepted++
		}
	}
	if e.Data == nil || accepted == 0 {
		return t, nil
	}
	t.DataCmd, t.Final, err = c.Data(e.Data)
	return t, err
}
