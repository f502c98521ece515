package test

import (
	"bufio"
	"crypto/tls"
	"encoding/base64"
	"net"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailnode/mailnode/test/harness"
)

// smarthost is a stand-in for a provider's submission server: it offers
// AUTH PLAIN only after STARTTLS, takes mail only after a successful AUTH
// with the one login it knows, and records what it saw.
type smarthost struct {
	ln         net.Listener
	tls        *tls.Config
	user, pass string
	noTLS      bool // offer no STARTTLS (and so no AUTH): a downgraded path

	mu        sync.Mutex
	accepted  []smarthostMessage
	authOK    int
	authFail  int
	clearAuth int // AUTH attempted before STARTTLS (must stay 0)
	clearMail int // MAIL attempted before STARTTLS
}

type smarthostMessage struct {
	Login, From string
	To          []string
	Data        string
}

func startSmarthost(t *testing.T, user, pass string, noTLS bool) *smarthost {
	t.Helper()
	dir := t.TempDir()
	cert, key := filepath.Join(dir, "cert.pem"), filepath.Join(dir, "key.pem")
	if err := harness.WriteSelfSigned(cert, key, "smarthost.test"); err != nil {
		t.Fatal(err)
	}
	pair, err := tls.LoadX509KeyPair(cert, key)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := &smarthost{ln: ln, tls: &tls.Config{Certificates: []tls.Certificate{pair}}, user: user, pass: pass, noTLS: noTLS}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go s.session(c)
		}
	}()
	return s
}

func (s *smarthost) addr() string { return s.ln.Addr().String() }

func (s *smarthost) count(f func() int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return f()
}

func (s *smarthost) session(c net.Conn) {
	defer c.Close()
	c.SetDeadline(time.Now().Add(2 * time.Minute))
	r, w := bufio.NewReader(c), bufio.NewWriter(c)
	say := func(lines ...string) {
		for _, l := range lines {
			w.WriteString(l + "\r\n")
		}
		w.Flush()
	}
	say("220 smarthost.test ESMTP stand-in")
	var secure bool
	var login, from string
	var to []string
	for {
		line, err := r.ReadString('\n')
		if err != nil {
			return
		}
		line = strings.TrimRight(line, "\r\n")
		verb, arg, _ := strings.Cut(line, " ")
		switch strings.ToUpper(verb) {
		case "EHLO":
			if secure {
				say("250-smarthost.test", "250-AUTH PLAIN", "250 8BITMIME")
			} else if s.noTLS {
				say("250-smarthost.test", "250 8BITMIME")
			} else {
				say("250-smarthost.test", "250-STARTTLS", "250 8BITMIME")
			}
		case "STARTTLS":
			if s.noTLS {
				say("502 5.5.2 Command not recognized")
				continue
			}
			if secure {
				say("503 5.5.1 TLS already active")
				continue
			}
			say("220 2.0.0 Ready to start TLS")
			tc := tls.Server(c, s.tls)
			if tc.Handshake() != nil {
				return
			}
			c, secure = tc, true
			r, w = bufio.NewReader(tc), bufio.NewWriter(tc)
			login, from, to = "", "", nil
		case "AUTH":
			if !secure {
				s.mu.Lock()
				s.clearAuth++
				s.mu.Unlock()
				say("530 5.7.0 Must issue a STARTTLS command first")
				continue
			}
			mech, resp, _ := strings.Cut(arg, " ")
			if !strings.EqualFold(mech, "PLAIN") {
				say("504 5.5.4 Unrecognized authentication type")
				continue
			}
			if resp == "" {
				say("334 ")
				if resp, err = r.ReadString('\n'); err != nil {
					return
				}
				resp = strings.TrimSpace(resp)
			}
			raw, _ := base64.StdEncoding.DecodeString(resp)
			parts := strings.Split(string(raw), "\x00")
			s.mu.Lock()
			if len(parts) == 3 && parts[1] == s.user && parts[2] == s.pass {
				s.authOK++
				login = parts[1]
				s.mu.Unlock()
				say("235 2.7.0 Authentication successful")
			} else {
				s.authFail++
				s.mu.Unlock()
				say("535 5.7.8 Authentication credentials invalid")
			}
		case "MAIL":
			switch {
			case !secure:
				s.mu.Lock()
				s.clearMail++
				s.mu.Unlock()
				say("530 5.7.0 Must issue a STARTTLS command first")
			case login == "":
				say("530 5.7.0 Authentication required")
			default:
				from, to = arg, nil
				say("250 2.1.0 Ok")
			}
		case "RCPT":
			if from == "" {
				say("503 5.5.1 MAIL first")
				continue
			}
			to = append(to, arg)
			say("250 2.1.5 Ok")
		case "DATA":
			if len(to) == 0 {
				say("503 5.5.1 RCPT first")
				continue
			}
			say("354 End data with <CR><LF>.<CR><LF>")
			var b strings.Builder
			for {
				l, err := r.ReadString('\n')
				if err != nil {
					return
				}
				if l == ".\r\n" {
					break
				}
				b.WriteString(strings.TrimPrefix(l, "."))
			}
			s.mu.Lock()
			s.accepted = append(s.accepted, smarthostMessage{Login: login, From: from, To: to, Data: b.String()})
			s.mu.Unlock()
			from, to = "", nil
			say("250 2.0.0 Ok: queued")
		case "RSET":
			from, to = "", nil
			say("250 2.0.0 Ok")
		case "NOOP":
			say("250 2.0.0 Ok")
		case "QUIT":
			say("221 2.0.0 Bye")
			return
		default:
			say("502 5.5.2 Command not recognized")
		}
	}
}

// TestSmarthostAuth: with postfix.relayhost_auth, mail to outside goes to
// the relayhost over STARTTLS (relayhost_tls defaults to encrypt), logged
// in with the password read from password_file at render time; with a
// wrong password it is deferred, and the password never travels in clear.
func TestSmarthostAuth(t *testing.T) {
	const user, pass = "node1@example.net", "c0rrect horse"
	sh := startSmarthost(t, user, pass, false)
	start := func(t *testing.T, sh *smarthost, password string) *harness.Node {
		secret := filepath.Join(t.TempDir(), "relayhost.secret")
		if err := os.WriteFile(secret, []byte(password+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		return harness.StartNode(t, harness.Options{Policy: true, Milter: true, DKIMKeys: true, Edit: func(doc map[string]any) {
			harness.Set(doc, "policy.greylist.enabled", false)
			harness.Set(doc, "postfix.relayhost", "["+strings.Split(sh.addr(), ":")[0]+"]:"+strings.Split(sh.addr(), ":")[1])
			harness.Set(doc, "postfix.relayhost_auth", map[string]any{"username": user, "password_file": secret})
		}})
	}
	submit := func(t *testing.T, n *harness.Node, subject string) string {
		msg, id := dkimTestMessage("alice@example.com", "frank@example.org", subject, testBody)
		tr := send(t, n.Submission, harness.Envelope{StartTLS: true, AuthUser: "alice@example.com", AuthPass: "alicepass",
			From: "alice@example.com", To: []string{"frank@example.org"}, Data: msg})
		wantFinal(t, tr)
		return id
	}

	t.Run("right password: relayed through the smarthost, signed", func(t *testing.T) {
		n := start(t, sh, pass)
		for _, f := range []string{"main.cf", "master.cf", "tls_policy"} {
			if b, _ := os.ReadFile(filepath.Join(n.PostfixConfig, f)); strings.Contains(string(b), pass) {
				t.Errorf("postfix/%s holds the password", f)
			}
		}
		if st, err := os.Stat(filepath.Join(n.PostfixConfig, "sasl_passwd")); err != nil || st.Mode().Perm() != 0o600 {
			t.Errorf("sasl_passwd: %v %v", st.Mode(), err)
		}
		id := submit(t, n, "via the smarthost")
		deadline := time.Now().Add(harness.DeliveryTimeout)
		var got *smarthostMessage
		for got == nil && time.Now().Before(deadline) {
			sh.mu.Lock()
			for i := range sh.accepted {
				if strings.Contains(sh.accepted[i].Data, id) {
					got = &sh.accepted[i]
				}
			}
			sh.mu.Unlock()
			time.Sleep(50 * time.Millisecond)
		}
		if got == nil {
			t.Fatalf("the smarthost got nothing; mail log:\n%s", n.MailLog())
		}
		if got.Login != user || got.From != "FROM:<alice@example.com>" || len(got.To) != 1 || got.To[0] != "TO:<frank@example.org>" {
			t.Errorf("smarthost saw login %q, %s, %v", got.Login, got.From, got.To)
		}
		if !strings.Contains(got.Data, "DKIM-Signature: ") {
			t.Errorf("not signed:\n%s", got.Data)
		}
		if strings.Contains(n.MailLog(), pass) || strings.Contains(n.DaemonLog("milterd")+n.DaemonLog("policyd"), pass) {
			t.Error("the password is in a log")
		}
		t.Logf("smarthost: login %s, %s %v; logins ok %d", got.Login, got.From, got.To, sh.count(func() int { return sh.authOK }))
	})

	t.Run("wrong password: deferred, nothing sent", func(t *testing.T) {
		before := sh.count(func() int { return len(sh.accepted) })
		n := start(t, sh, "wrong horse")
		submit(t, n, "must wait")
		line := waitDeferred(t, n, "to=<frank@example.org>")
		if !strings.Contains(line, "SASL authentication failed") {
			t.Fatalf("no deferral for a failed login; mail log:\n%s", n.MailLog())
		}
		t.Logf("deferred: %s", line[strings.Index(line, "to=<"):])
		if got := sh.count(func() int { return len(sh.accepted) }); got != before {
			t.Errorf("the smarthost accepted %d messages with a wrong password", got-before)
		}
		if sh.count(func() int { return sh.authFail }) == 0 {
			t.Error("the smarthost saw no failed login")
		}
	})

	t.Run("a smarthost without STARTTLS: deferred, no password in clear", func(t *testing.T) {
		plain := startSmarthost(t, user, pass, true)
		n := start(t, plain, pass)
		submit(t, n, "never in clear")
		line := waitDeferred(t, n, "to=<frank@example.org>")
		if !strings.Contains(line, "TLS is required, but was not offered") {
			t.Errorf("deferred for another reason: %s", line)
		}
		t.Logf("deferred: %s", line[strings.Index(line, "to=<"):])
		if c, m := plain.count(func() int { return plain.clearAuth }), plain.count(func() int { return plain.clearMail }); c+m != 0 || plain.count(func() int { return len(plain.accepted) }) != 0 {
			t.Errorf("in clear: %d AUTH, %d MAIL, %d messages", c, m, len(plain.accepted))
		}
	})

	if c, m := sh.count(func() int { return sh.clearAuth }), sh.count(func() int { return sh.clearMail }); c+m != 0 {
		t.Errorf("before STARTTLS: %d AUTH and %d MAIL attempts", c, m)
	}
}

// waitDeferred returns the mail log line that defers the recipient.
func waitDeferred(t *testing.T, n *harness.Node, to string) string {
	t.Helper()
	deadline := time.Now().Add(harness.DeliveryTimeout)
	for time.Now().Before(deadline) {
		for _, l := range strings.Split(n.MailLog(), "\n") {
			if strings.Contains(l, to) && strings.Contains(l, "status=deferred") {
				return l
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("no deferral of %s; mail log:\n%s", to, n.MailLog())
	return ""
}
