package milter

import (
	"bytes"
	"encoding/binary"
	"github.com/mailnode/mailnode/milter/miltertest"
	"io"
	"net"
	"strings"
	"testing"
	"time"

	gomilter "github.com/d--j/go-milter"
)

// Each case sends raw bytes to milterd over a real socket and expects that
// connection to be closed promptly — and milterd to go on serving: after
// every case a normal message is signed over a new connection. A go-milter
// panic would end the test binary, a stall would hit the deadline.

func packet(code byte, data ...[]byte) []byte {
	d := bytes.Join(data, nil)
	b := binary.BigEndian.AppendUint32(nil, uint32(len(d)+1))
	b = append(b, code)
	return append(b, d...)
}

func cstr(s string) []byte { return append([]byte(s), 0) }

// negotiation as Postfix sends it: version 6, all actions, all protocol flags.
var optneg = packet('O', binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(nil, 6), 0x1ff), 0x1fffff))

func connect() []byte {
	return packet('C', cstr("client.test"), []byte{'4'}, []byte{0x9c, 0x40}, cstr("198.51.100.7"))
}

func mailPkt() []byte { return packet('M', cstr("<a@sender.test>")) }

// expectClosed sends raw and checks that milterd closes the connection
// within a few seconds (reading whatever replies come first).
func expectClosed(t *testing.T, path string, raw []byte) {
	t.Helper()
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(raw)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = io.Copy(io.Discard, c)
	if ne, ok := err.(net.Error); ok && ne.Timeout() {
		t.Fatalf("connection still open after 5s")
	}
}

func stillServes(t *testing.T, path string) {
	t.Helper()
	r, err := miltertest.Submit(miltertest.NewClient("unix", path), localMessage("alice@example.com"))
	if err != nil {
		t.Fatalf("milterd no longer serves: %v", err)
	}
	if countMods(r, gomilter.ActionInsertHeader, "DKIM-Signature") != 2 {
		t.Fatalf("milterd no longer signs: %v", r.Mods)
	}
}

func TestHostileInput(t *testing.T) {
	f, _ := testFilter(t)
	limits := DefaultGuardLimits
	limits.PacketTimeout = time.Second
	limits.FirstPacket = time.Second
	path := startServer(t, f, &limits)

	many := []byte{}
	many = append(many, optneg...)
	many = append(many, connect()...)
	many = append(many, mailPkt()...)
	many = append(many, packet('T')...)
	for i := 0; i < 10000; i++ {
		many = append(many, packet('L', cstr("X-Flood"), cstr(" value"))...)
	}
	many = append(many, packet('N')...)

	cases := []struct {
		name string
		raw  []byte
	}{
		{"zero length first", []byte{0, 0, 0, 0}},
		{"zero length after negotiation", append(append([]byte{}, optneg...), 0, 0, 0, 0)},
		{"truncated length", []byte{0, 0}},
		{"truncated packet", append(append([]byte{}, optneg...), connect()[:9]...)},
		{"declared length far beyond data", append(append([]byte{}, optneg...), 0x00, 0x10, 0x00, 0x00, 'C', 'x')},
		{"declared length 512 MiB", append(append([]byte{}, optneg...), 0x20, 0x00, 0x00, 0x00, 'B')},
		{"negotiation too short", packet('O', []byte{0, 0, 0, 6})},
		{"command before negotiation", connect()},
		{"second negotiation", append(append([]byte{}, optneg...), optneg...)},
		{"connect host without NUL", append(append([]byte{}, optneg...), packet('C', []byte("client.test"))...)},
		{"connect without family", append(append([]byte{}, optneg...), packet('C', cstr("client.test"))...)},
		{"connect without port", append(append([]byte{}, optneg...), packet('C', cstr("h"), []byte{'4', 1})...)},
		{"connect address without NUL", append(append([]byte{}, optneg...), packet('C', cstr("h"), []byte{'4', 0, 25}, []byte("1.2.3.4"))...)},
		{"connect unknown family", append(append([]byte{}, optneg...), packet('C', cstr("h"), []byte{'Z'})...)},
		{"mail without NUL", append(append(append([]byte{}, optneg...), connect()...), packet('M', []byte("<a@b>"))...)},
		{"rcpt without NUL", append(append(append(append([]byte{}, optneg...), connect()...), mailPkt()...), packet('R', []byte("<a@b>"))...)},
		{"header one string", append(append(append([]byte{}, optneg...), connect()...), packet('L', cstr("Subject"))...)},
		{"header without NUL", append(append(append([]byte{}, optneg...), connect()...), packet('L', []byte("Subject x"))...)},
		{"body before headers", append(append(append([]byte{}, optneg...), connect()...), packet('B', []byte("body\r\n"))...)},
		{"body before end of headers", bytes.Join([][]byte{optneg, connect(), mailPkt(), packet('L', cstr("Subject"), cstr(" x")), packet('B', []byte("body"))}, nil)},
		{"header before MAIL", append(append(append([]byte{}, optneg...), connect()...), packet('L', cstr("Subject"), cstr(" x"))...)},
		{"10,000 headers", many},
		{"unknown command", append(append([]byte{}, optneg...), packet('Z', []byte("x"))...)},
		{"unknown command 0xff", append(append([]byte{}, optneg...), packet(0xff)...)},
		{"macro without NUL", append(append([]byte{}, optneg...), packet('D', []byte("C{x"))...)},
		{"garbage", bytes.Repeat([]byte{0xde, 0xad, 0xbe, 0xef}, 100)},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			expectClosed(t, path, tc.raw)
			stillServes(t, path)
		})
	}
}

// TestHostileSilence: a connection that sends nothing, or stops inside a
// packet, is closed after the guard's timeouts, while others are served.
func TestHostileSilence(t *testing.T) {
	f, _ := testFilter(t)
	limits := DefaultGuardLimits
	limits.FirstPacket = 500 * time.Millisecond
	limits.PacketTimeout = 500 * time.Millisecond
	path := startServer(t, f, &limits)
	silent, _ := net.Dial("unix", path)
	defer silent.Close()
	half, _ := net.Dial("unix", path)
	defer half.Close()
	half.Write(append(append([]byte{}, optneg...), 0, 0, 1, 0, 'L', 'X'))
	stillServes(t, path)
	for _, c := range []net.Conn{silent, half} {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.Copy(io.Discard, c); err != nil {
			t.Errorf("not closed by milterd: %v", err)
		}
	}
}

// TestHostileConnectionLimit: beyond MaxConns new connections are closed at once.
func TestHostileConnectionLimit(t *testing.T) {
	f, _ := testFilter(t)
	limits := DefaultGuardLimits
	limits.MaxConns = 2
	path := startServer(t, f, &limits)
	var held []net.Conn
	for i := 0; i < 2; i++ {
		c, _ := net.Dial("unix", path)
		c.Write(optneg)
		held = append(held, c)
	}
	time.Sleep(100 * time.Millisecond)
	expectClosed(t, path, optneg)
	for _, c := range held {
		c.Close()
	}
	time.Sleep(100 * time.Millisecond)
	stillServes(t, path)
}

// TestHeaderLimits: the transaction refuses more than MaxHeaders fields or
// MaxHeaderBytes bytes (the connection then closes, see TestHostileInput).
func TestHeaderLimits(t *testing.T) {
	f, _ := testFilter(t)
	tx := f.NewTransaction(Envelope{})
	var err error
	for i := 0; i <= MaxHeaders && err == nil; i++ {
		err = tx.Header("X", " y")
	}
	if err == nil {
		t.Error("no error after MaxHeaders fields")
	}
	tx = f.NewTransaction(Envelope{})
	big := strings.Repeat("x", 100<<10)
	err = nil
	for i := 0; i < 20 && err == nil; i++ {
		err = tx.Header("X", big)
	}
	if err == nil {
		t.Error("no error after MaxHeaderBytes")
	}
}

// TestHostileIdle: a connection silent after its first packets is closed
// once Idle has passed, not before: the deadline may end late by
// Idle/deadline.Slack, never early (deadline.Arm).
func TestHostileIdle(t *testing.T) {
	f, _ := testFilter(t)
	limits := DefaultGuardLimits
	limits.Idle = 400 * time.Millisecond
	path := startServer(t, f, &limits)
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	start := time.Now()
	c.Write(append(append([]byte{}, optneg...), connect()...))
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	n, err := io.Copy(io.Discard, c)
	took := time.Since(start)
	if err != nil {
		t.Fatalf("not closed by milterd within 5s: %v", err)
	}
	if n == 0 {
		t.Fatal("no reply to the negotiation before the close")
	}
	if took < limits.Idle {
		t.Fatalf("closed after %v, before Idle (%v)", took, limits.Idle)
	}
	stillServes(t, path)
}
