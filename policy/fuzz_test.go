package policy

import (
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailnode/mailnode/acl"
	"github.com/mailnode/mailnode/inventory"
)

// FuzzParseRequest: the parser never panics, rejects NUL bytes, and what it
// accepts survives a round trip through the wire format.
func FuzzParseRequest(f *testing.F) {
	addTranscriptSeeds(f)
	f.Fuzz(func(t *testing.T, data []byte) {
		req, err := ParseRequest(data, DefaultLimits)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error %v is not ErrMalformed", err)
			}
			return
		}
		if bytes.IndexByte(data, 0) >= 0 {
			t.Fatal("a request with a NUL byte was accepted")
		}
		if req.Request != "smtpd_access_policy" {
			t.Fatalf("accepted request=%q", req.Request)
		}
		again, err := ParseRequest(encodeRequest(req), DefaultLimits)
		if err != nil || again != req {
			t.Fatalf("round trip: %+v, %v; want %+v", again, err, req)
		}
	})
}

// encodeRequest writes the attributes policyd reads back in wire format.
// Lines end in CRLF: the parser strips one CR before the LF (for requests
// typed by hand), so a value that itself ends in CR survives only when
// another CR follows it. Bare LF lines are covered by the transcripts.
func encodeRequest(r Request) []byte {
	var b bytes.Buffer
	for _, kv := range [][2]string{
		{"request", r.Request}, {"protocol_state", r.ProtocolState}, {"protocol_name", r.ProtocolName},
		{"queue_id", r.QueueID}, {"instance", r.Instance}, {"sender", r.Sender}, {"recipient", r.Recipient},
		{"recipient_count", r.RecipientCount}, {"client_address", r.ClientAddress}, {"client_name", r.ClientName},
		{"helo_name", r.HeloName}, {"sasl_method", r.SASLMethod}, {"sasl_username", r.SASLUsername},
	} {
		b.WriteString(kv[0] + "=" + kv[1] + "\r\n")
	}
	b.WriteString("\r\n")
	return b.Bytes()
}

func addTranscriptSeeds(f *testing.F) {
	files, _ := filepath.Glob("testdata/[0-9][0-9]-*.req")
	for _, file := range files {
		b, err := os.ReadFile(file)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(stripComments(b))
	}
}

// FuzzDecide: whatever the request, Decide does not panic, answers DUNNO or
// a one-line 550 5.7.1, never OK, and never DUNNO for mail from an
// unauthorized session to an outside recipient.
func FuzzDecide(f *testing.F) {
	inv := loadInventory(f)
	for _, c := range matrixCases {
		r := rcptRequest(c.s, c.sender, c.rcpt)
		f.Add(r.ProtocolState, r.Sender, r.Recipient, r.ClientAddress, r.SASLUsername, false)
	}
	f.Add("RCPT", "", "frank@example.org", "", "", false)
	f.Add("RCPT", "alice@example.com", "x@sub.example.com", "10.20.0.1", "", true)
	f.Add("", "<>", "postmaster", "::ffff:10.20.0.1", "", false)
	f.Add("rcpt", "a@b@example.com", "all-staff@EXAMPLE.com.", "2001:db8:1::1", "bob@example.com", true)
	f.Add("END-OF-MESSAGE", "eve@example.org", "frank@example.org", "198.51.100.7", "", false)
	f.Fuzz(func(t *testing.T, state, sender, rcpt, client, sasl string, strict bool) {
		req := Request{Request: "smtpd_access_policy", ProtocolState: state, Sender: sender,
			Recipient: rcpt, ClientAddress: client, SASLUsername: sasl}
		d := Decide(req, inv, Options{StrictSenderLogin: strict})
		checkReply(t, d)
		if d2 := Decide(req, inv, Options{StrictSenderLogin: strict}); d2 != d {
			t.Fatalf("not deterministic: %+v then %+v", d, d2)
		}
		atRcpt := state == "" || strings.EqualFold(state, "RCPT")
		if !atRcpt {
			if d.Reply != "DUNNO" {
				t.Fatalf("state %q answered %q", state, d.Reply)
			}
			return
		}
		if inv.Authorized(client, sasl) == inventory.AuthNone && strings.Contains(rcpt, "@") &&
			inv.Classify(rcpt) == inventory.Outside && d.Action != Reject {
			t.Fatalf("unauthorized mail to outside %q from %q accepted: %+v", rcpt, sender, d)
		}
		if d.Action == Dunno && d.Cell.Auth == inventory.AuthNone && d.Cell.Sender != inventory.Outside {
			t.Fatalf("unauthorized %s sender accepted: %+v", d.Cell.Sender, d)
		}
		if d.SpamCheck != (d.Action == Dunno && acl.SpamCheck(d.Cell)) {
			t.Fatalf("spam check %v for %+v", d.SpamCheck, d)
		}
	})
}

func checkReply(t *testing.T, d Decision) {
	t.Helper()
	switch {
	case d.Reply == "DUNNO":
		if d.Action != Dunno {
			t.Fatalf("DUNNO with action %v", d.Action)
		}
	case strings.HasPrefix(d.Reply, "550 5.7.1 "):
		if d.Action != Reject {
			t.Fatalf("550 with action %v", d.Action)
		}
	default:
		t.Fatalf("reply %q is neither DUNNO nor 550 5.7.1", d.Reply)
	}
	if strings.ContainsAny(d.Reply, "\x00\r\n") {
		t.Fatalf("reply %q breaks the line", d.Reply)
	}
	if !acl.SafeReply(d.Reply) {
		t.Fatalf("reply %q is refused by the reply allowlist", d.Reply)
	}
}

// FuzzServerFraming feeds a byte stream, in arbitrary chunks, through the
// server's incremental reader and checks it answers exactly as splitting the
// stream at empty lines and calling ParseRequest and Decide would: the same
// replies, and silence from the first malformed request on.
func FuzzServerFraming(f *testing.F) {
	inv := loadInventory(f)
	files, _ := filepath.Glob("testdata/[0-9][0-9]-*.req")
	for i, file := range files {
		b, _ := os.ReadFile(file)
		f.Add(stripComments(b), uint8(i*7+1))
	}
	f.Fuzz(func(t *testing.T, stream []byte, chunk uint8) {
		want := referenceReplies(stream, inv)
		fc := &fakeConn{in: stream, chunk: int(chunk%64) + 1}
		s := NewServer(inv)
		s.Limits = DefaultLimits
		c := &conn{s: s, nc: fc, buf: &buffer{in: make([]byte, 0, 64)}}
		for c.step() == nil {
		}
		if got := fc.out.String(); got != want {
			t.Fatalf("server answered\n%q\nreference\n%q", got, want)
		}
	})
}

// referenceReplies is the protocol read the slow, obvious way.
func referenceReplies(stream []byte, inv *inventory.Inventory) string {
	var out strings.Builder
	opts := OptionsFrom(inv)
	for len(stream) > 0 {
		// find the end of the request: a line that is empty or only "\r"
		end := -1
		for i := 0; i < len(stream); {
			j := bytes.IndexByte(stream[i:], '\n')
			if j < 0 {
				break
			}
			line := stream[i : i+j]
			if len(line) == 0 || string(line) == "\r" {
				end = i + j + 1
				break
			}
			i += j + 1
		}
		if end < 0 {
			break
		}
		req, err := ParseRequest(stream[:end], DefaultLimits)
		if err != nil {
			break
		}
		out.WriteString("action=" + Decide(req, inv, opts).Reply + "\n\n")
		stream = stream[end:]
	}
	return out.String()
}

// fakeConn is a net.Conn that hands out its input in small chunks.
type fakeConn struct {
	in    []byte
	chunk int
	out   bytes.Buffer
}

func (c *fakeConn) Read(p []byte) (int, error) {
	if len(c.in) == 0 {
		return 0, io.EOF
	}
	n := min(len(p), c.chunk, len(c.in))
	copy(p, c.in[:n])
	c.in = c.in[n:]
	return n, nil
}
func (c *fakeConn) Write(p []byte) (int, error)      { return c.out.Write(p) }
func (c *fakeConn) Close() error                     { return nil }
func (c *fakeConn) LocalAddr() net.Addr              { return &net.UnixAddr{Name: "fake", Net: "unix"} }
func (c *fakeConn) RemoteAddr() net.Addr             { return &net.UnixAddr{Name: "fake", Net: "unix"} }
func (c *fakeConn) SetDeadline(time.Time) error      { return nil }
func (c *fakeConn) SetReadDeadline(time.Time) error  { return nil }
func (c *fakeConn) SetWriteDeadline(time.Time) error { return nil }
