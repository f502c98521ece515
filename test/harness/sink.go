package harness

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Message is one message a Sink received.
type Message struct {
	Helo  string
	Login string   // the AUTH PLAIN login, with SinkOptions.User
	From  string   // envelope sender, without brackets
	To    []string // envelope recipients
	Data  []byte   // the message as transmitted, CRLF line ends, dot-unstuffed
	TLS   bool     // received after STARTTLS
}

// Sink is a minimal SMTP server on a loopback port that accepts every
// message and records it: the next hop of relay domains in tests and the
// demo. It speaks plain ESMTP (no STARTTLS, no AUTH) unless SinkOptions
// make it a smarthost.
type Sink struct {
	Addr string // host:port it listens on
	// Dir, when set, also receives each message as NNNN.eml (the demo).
	Dir string

	opt SinkOptions
	// What a smarthost sink saw: logins that passed and failed, and AUTH
	// or MAIL commands sent before STARTTLS (read with Counts).
	authOK, authFail, clearAuth, clearMail int

	ln       net.Listener
	mu       sync.Mutex
	msgs     []Message
	notify   chan struct{}
	wg       sync.WaitGroup
	closed   bool
	hostname string
	mode     atomic.Int32 // a SinkMode
}

// SinkMode is how a Sink answers, read as each session starts.
type SinkMode int32

const (
	// SinkAccept accepts every message (the default).
	SinkAccept SinkMode = iota
	// SinkTempfail greets with 421 and hangs up: every delivery is deferred.
	SinkTempfail
	// SinkRejectRcpt refuses every recipient with 550: every delivery bounces.
	SinkRejectRcpt
)

// SetMode makes the sessions that start from now on answer as m says.
func (s *Sink) SetMode(m SinkMode) { s.mode.Store(int32(m)) }

// SinkOptions make a Sink a stand-in for a provider's submission server.
type SinkOptions struct {
	// TLS, when set, offers STARTTLS with it.
	TLS *tls.Config
	// User and Pass, when set, require STARTTLS and then AUTH PLAIN with
	// exactly this login before MAIL; AUTH is offered only after STARTTLS.
	User, Pass string
}

// SinkCounts are what a smarthost sink saw besides the messages.
type SinkCounts struct {
	AuthOK, AuthFail     int // AUTH PLAIN with the right login, and with another
	ClearAuth, ClearMail int // AUTH or MAIL before STARTTLS (refused)
}

// StartSink listens on addr ("127.0.0.1:0" for any free port).
func StartSink(addr, dir string) (*Sink, error) { return StartSinkWith(addr, dir, SinkOptions{}) }

// StartSinkWith is StartSink with options.
func StartSinkWith(addr, dir string, opt SinkOptions) (*Sink, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("sink: %w", err)
	}
	if dir != "" {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			ln.Close()
			return nil, err
		}
	}
	s := &Sink{Addr: ln.Addr().String(), Dir: dir, opt: opt, ln: ln, notify: make(chan struct{}), hostname: "sink.test"}
	s.wg.Add(1)
	go s.serve()
	return s, nil
}

// Port returns the port number as a string.
func (s *Sink) Port() string {
	_, p, _ := net.SplitHostPort(s.Addr)
	return p
}

// Close stops listening and waits for open sessions to end.
func (s *Sink) Close() error {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	err := s.ln.Close()
	s.wg.Wait()
	return err
}

// Messages returns a copy of what was received so far.
func (s *Sink) Messages() []Message {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Message(nil), s.msgs...)
}

// Counts returns what a smarthost sink saw so far.
func (s *Sink) Counts() SinkCounts {
	s.mu.Lock()
	defer s.mu.Unlock()
	return SinkCounts{AuthOK: s.authOK, AuthFail: s.authFail, ClearAuth: s.clearAuth, ClearMail: s.clearMail}
}

func (s *Sink) count(n *int) {
	s.mu.Lock()
	*n++
	s.mu.Unlock()
}

// Wait returns once at least n messages have arrived, or fails after timeout.
func (s *Sink) Wait(n int, timeout time.Duration) ([]Message, error) {
	deadline := time.After(timeout)
	for {
		s.mu.Lock()
		if len(s.msgs) >= n {
			m := append([]Message(nil), s.msgs...)
			s.mu.Unlock()
			return m, nil
		}
		ch := s.notify
		got := len(s.msgs)
		s.mu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			return s.Messages(), fmt.Errorf("sink: %d message(s) after %s, want %d", got, timeout, n)
		}
	}
}

func (s *Sink) serve() {
	defer s.wg.Done()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}
		s.wg.Add(1)
		go func() {
			defer s.wg.Done()
			defer c.Close()
			s.session(c)
		}()
	}
}

func (s *Sink) session(c net.Conn) {
	r := bufio.NewReader(c)
	w := bufio.NewWriter(c)
	reply := func(l string) bool {
		c.SetWriteDeadline(time.Now().Add(time.Minute))
		w.WriteString(l + "\r\n")
		return w.Flush() == nil
	}
	mode := SinkMode(s.mode.Load())
	if mode == SinkTempfail {
		reply("421 4.3.2 not now")
		return
	}
	if !reply("220 " + s.hostname + " ESMTP mailnode test sink") {
		return
	}
	var cur Message
	helo, login, secure, mail := "", "", false, false
	authRequired := s.opt.Pass != ""
	for {
		c.SetReadDeadline(time.Now().Add(5 * time.Minute))
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		verb, arg, _ := strings.Cut(line, " ")
		switch strings.ToUpper(verb) {
		case "EHLO":
			helo = arg
			reply("250-" + s.hostname)
			if s.opt.TLS != nil && !secure {
				reply("250-STARTTLS")
			}
			if authRequired && secure {
				reply("250-AUTH PLAIN")
			}
			reply("250-8BITMIME")
			reply("250 PIPELINING")
		case "HELO":
			helo = arg
			reply("250 " + s.hostname)
		case "STARTTLS":
			if s.opt.TLS == nil || secure {
				reply("503 5.5.1 Error: STARTTLS not available")
				continue
			}
			reply("220 2.0.0 Ready to start TLS")
			tc := tls.Server(c, s.opt.TLS)
			if tc.Handshake() != nil {
				return
			}
			c, secure, helo, login, cur, mail = tc, true, "", "", Message{}, false
			r, w = bufio.NewReader(tc), bufio.NewWriter(tc)
		case "AUTH":
			if !authRequired || !secure {
				s.count(&s.clearAuth)
				reply("530 5.7.0 Must issue a STARTTLS command first")
				continue
			}
			mech, resp, _ := strings.Cut(arg, " ")
			if !strings.EqualFold(mech, "PLAIN") {
				reply("504 5.5.4 Unrecognized authentication type")
				continue
			}
			if resp == "" {
				reply("334 ")
				if resp, err = r.ReadString('\n'); err != nil {
					return
				}
				resp = strings.TrimSpace(resp)
			}
			raw, _ := base64.StdEncoding.DecodeString(resp)
			if parts := strings.Split(string(raw), "\x00"); len(parts) == 3 && parts[1] == s.opt.User && parts[2] == s.opt.Pass {
				s.count(&s.authOK)
				login = parts[1]
				reply("235 2.7.0 Authentication successful")
			} else {
				s.count(&s.authFail)
				reply("535 5.7.8 Authentication credentials invalid")
			}
		case "MAIL":
			switch {
			case authRequired && !secure:
				s.count(&s.clearMail)
				reply("530 5.7.0 Must issue a STARTTLS command first")
			case authRequired && login == "":
				reply("530 5.7.0 Authentication required")
			default:
				cur, mail = Message{Helo: helo, Login: login, From: addrArg(arg, "FROM:"), TLS: secure}, true
				reply("250 2.1.0 Ok")
			}
		case "RCPT":
			if !mail {
				reply("503 5.5.1 MAIL first")
				continue
			}
			if mode == SinkRejectRcpt {
				reply("550 5.1.1 no such user here")
				continue
			}
			cur.To = append(cur.To, addrArg(arg, "TO:"))
			reply("250 2.1.5 Ok")
		case "DATA":
			if len(cur.To) == 0 {
				reply("503 5.5.1 need RCPT")
				continue
			}
			reply("354 End data with <CR><LF>.<CR><LF>")
			var data strings.Builder
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" || l == ".\n" {
					break
				}
				if strings.HasPrefix(l, ".") {
					l = l[1:]
				}
				data.WriteString(l)
			}
			cur.Data = []byte(data.String())
			s.store(cur)
			cur, mail = Message{}, false
			reply("250 2.0.0 Ok: queued")
		case "RSET":
			cur, mail = Message{}, false
			reply("250 2.0.0 Ok")
		case "NOOP":
			reply("250 2.0.0 Ok")
		case "QUIT":
			reply("221 2.0.0 Bye")
			return
		default:
			reply("502 5.5.2 Error: command not recognized")
		}
	}
}

func addrArg(arg, prefix string) string {
	if len(arg) >= len(prefix) && strings.EqualFold(arg[:len(prefix)], prefix) {
		arg = arg[len(prefix):]
	}
	arg = strings.TrimSpace(arg)
	if i := strings.IndexByte(arg, '>'); strings.HasPrefix(arg, "<") && i > 0 {
		return arg[1:i]
	}
	a, _, _ := strings.Cut(arg, " ")
	return a
}

func (s *Sink) store(m Message) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.msgs = append(s.msgs, m)
	if s.Dir != "" {
		name := filepath.Join(s.Dir, fmt.Sprintf("%04d.eml", len(s.msgs)))
		hdr := fmt.Sprintf("X-Sink-Envelope-From: <%s>\r\nX-Sink-Envelope-To: <%s>\r\n", m.From, strings.Join(m.To, ">, <"))
		os.WriteFile(name, append([]byte(hdr), m.Data...), 0o644)
	}
	close(s.notify)
	s.notify = make(chan struct{})
}
