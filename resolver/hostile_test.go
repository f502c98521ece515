package resolver

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// forgery is one answer a hostile responder sends before (or instead of)
// the real one; each must be dropped.
type forgery struct {
	name  string
	edit  func(m *dns.Msg)
	other bool // sent from another port of the server's address
}

// forgeries carry NXDOMAIN or an "evil" record: taking any of them would
// give a wrong verdict (not found) or wrong data.
var forgeries = []forgery{
	{"wrong ID", func(m *dns.Msg) { m.Id++ }, false},
	{"wrong ID, NXDOMAIN", func(m *dns.Msg) { m.Id++; m.Answer = nil; m.Rcode = dns.RcodeNameError }, false},
	{"wrong name", func(m *dns.Msg) { m.Question[0].Name = "other.test." }, false},
	{"wrong name, NXDOMAIN", func(m *dns.Msg) { m.Question[0].Name = "other.test."; m.Answer = nil; m.Rcode = dns.RcodeNameError }, false},
	{"longer name", func(m *dns.Msg) { m.Question[0].Name = "x." + m.Question[0].Name }, false},
	{"wrong type", func(m *dns.Msg) { m.Question[0].Qtype = dns.TypeA }, false},
	{"wrong class", func(m *dns.Msg) { m.Question[0].Qclass = dns.ClassCHAOS }, false},
	{"no question", func(m *dns.Msg) { m.Question = nil }, false},
	{"two questions", func(m *dns.Msg) { m.Question = append(m.Question, m.Question[0]) }, false},
	{"a question, not an answer", func(m *dns.Msg) { m.Response = false }, false},
	{"from another port", func(*dns.Msg) {}, true},
	{"from another port, NXDOMAIN", func(m *dns.Msg) { m.Answer = nil; m.Rcode = dns.RcodeNameError }, true},
}

// hostile serves UDP on loopback: to every question it sends the
// forgeries, then, unless onlyForged, the real answer (TXT "good"), its
// question name in upper case (servers may echo 0x20 case as they like).
// With truncate the real UDP answer has TC set, and a TCP server on the
// same port sends a wrong-ID answer before the real one.
func hostile(t *testing.T, onlyForged, truncate bool) string {
	t.Helper()
	pc, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	other, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { pc.Close(); other.Close() })
	reply := func(q *dns.Msg, evil bool) *dns.Msg {
		m := new(dns.Msg)
		m.SetReply(q)
		txt := "good"
		if evil {
			txt = "evil"
		}
		m.Answer = []dns.RR{&dns.TXT{Hdr: dns.RR_Header{Name: q.Question[0].Name, Rrtype: dns.TypeTXT, Class: dns.ClassINET, Ttl: 60}, Txt: []string{txt}}}
		return m
	}
	pack := func(m *dns.Msg) []byte {
		b, err := m.Pack()
		if err != nil {
			panic(err)
		}
		return b
	}
	go func() {
		buf := make([]byte, 4096)
		for {
			n, from, err := pc.ReadFromUDP(buf)
			if err != nil {
				return
			}
			q := new(dns.Msg)
			if q.Unpack(buf[:n]) != nil || len(q.Question) != 1 {
				continue
			}
			for _, f := range forgeries {
				m := reply(q, true)
				f.edit(m)
				if f.other {
					other.WriteToUDP(pack(m), from)
				} else {
					pc.WriteToUDP(pack(m), from)
				}
			}
			if onlyForged {
				continue
			}
			m := reply(q, false)
			m.Question[0].Name = strings.ToUpper(m.Question[0].Name)
			if truncate {
				m.Answer, m.Truncated = nil, true
			}
			pc.WriteToUDP(pack(m), from)
		}
	}()
	if truncate {
		ln, err := net.ListenTCP("tcp", &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: pc.LocalAddr().(*net.UDPAddr).Port})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { ln.Close() })
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				go func() {
					defer c.Close()
					dc := &dns.Conn{Conn: c}
					q, err := dc.ReadMsg()
					if err != nil {
						return
					}
					bad := reply(q, true)
					bad.Id++
					dc.WriteMsg(bad)
					dc.WriteMsg(reply(q, false))
				}()
			}
		}()
	}
	return pc.LocalAddr().String()
}

// TestHostileAnswers: every forged answer (wrong ID, name, type, class,
// none or several questions, from another port) is dropped, and the real
// one that follows is taken, by Client and by Exchange, over UDP and over
// TCP after a truncated answer.
func TestHostileAnswers(t *testing.T) {
	for _, truncate := range []bool{false, true} {
		addr := hostile(t, false, truncate)
		ctx := context.Background()
		r := NewClient(addr, 2*time.Second)
		defer r.Close()
		for range 3 { // the socket is reused: late forgeries must not confuse the next question
			r.mu.Lock()
			r.cache = nil
			r.mu.Unlock()
			txt, err := r.LookupTXT(ctx, "hostile.test")
			if err != nil || len(txt) != 1 || txt[0] != "good" {
				t.Fatalf("truncate %v: Client: %q %v, want the real answer", truncate, txt, err)
			}
		}
		m := new(dns.Msg)
		m.SetQuestion("hostile.test.", dns.TypeTXT)
		in, err := Exchange(ctx, addr, m, 2*time.Second)
		if err != nil || len(in.Answer) != 1 || in.Answer[0].(*dns.TXT).Txt[0] != "good" {
			t.Fatalf("truncate %v: Exchange: %v %v, want the real answer", truncate, in, err)
		}
	}
}

// TestHostileOnly: with nothing but forgeries, the question times out as
// a temporary error, never a verdict (not found) or forged data.
func TestHostileOnly(t *testing.T) {
	addr := hostile(t, true, false)
	ctx := context.Background()
	r := NewClient(addr, 300*time.Millisecond)
	defer r.Close()
	start := time.Now()
	txt, err := r.LookupTXT(ctx, "hostile.test")
	var de *net.DNSError
	if !errors.As(err, &de) || !de.IsTimeout || !IsTemporary(err) || de.IsNotFound {
		t.Fatalf("Client: %q %#v, want a temporary timeout", txt, err)
	}
	if d := time.Since(start); d < 250*time.Millisecond || d > 2*time.Second {
		t.Errorf("Client gave up after %v, want the timeout (300ms)", d)
	}
	m := new(dns.Msg)
	m.SetQuestion("hostile.test.", dns.TypeTXT)
	in, err := Exchange(ctx, addr, m, 300*time.Millisecond)
	if !errors.As(err, &de) || !de.IsTimeout || !IsTemporary(err) {
		t.Fatalf("Exchange: %v %#v, want a temporary timeout", in, err)
	}
}

// TestAnswers covers the matching of a packed answer to the question.
func TestAnswers(t *testing.T) {
	q := new(dns.Msg)
	q.SetQuestion("Example.TEST.", dns.TypeMX)
	qb, _ := q.Pack()
	qs, ok := questionSection(qb)
	if !ok {
		t.Fatal("questionSection refused a plain question")
	}
	a := new(dns.Msg)
	a.SetReply(q)
	a.Question[0].Name = "eXAMPLE.test."
	ab, _ := a.Pack()
	if !answers(ab, q.Id, qs) {
		t.Error("an answer differing in case only was refused")
	}
	if answers(ab[:len(ab)-1], q.Id, qs) || answers(ab[:11], q.Id, qs) {
		t.Error("a short message was taken")
	}
	two := a.Copy()
	two.Question = append(two.Question, two.Question[0])
	tb, _ := two.Pack()
	if answers(tb, q.Id, qs) {
		t.Error("an answer with two questions was taken")
	}
	binary.BigEndian.PutUint16(ab, q.Id^1)
	if answers(ab, q.Id, qs) {
		t.Error("an answer with another ID was taken")
	}
}
