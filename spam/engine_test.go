package spam

import (
	"context"
	"errors"
	"net"
	"strings"
	"testing"
	"time"

	"github.com/mailnode/mailnode/spam/spamtest"
)

// engineZone answers what rspamd asks about the test client and sender:
// nothing is listed, the sender's SPF passes.
const engineZone = `
sender.test. IN TXT "v=spf1 ip4:127.0.0.0/8 -all"
sender.test. IN MX 10 mx.sender.test.
mx.sender.test. IN A 127.0.0.1
1.0.0.127.in-addr.arpa. IN PTR mx.sender.test.
`

func testMessage(body string) *Message {
	data := "Received: from mx.sender.test (mx.sender.test [127.0.0.1])\r\n" +
		"\tby mx1.example.com (Postfix) with ESMTP id 4ABCD1234; Sun, 1 Mar 2026 12:00:00 +0000\r\n" +
		"From: Alice Sender <alice@sender.test>\r\n" +
		"To: Bob <bob@example.com>\r\n" +
		"Subject: Lunch on Thursday\r\n" +
		"Date: Sun, 1 Mar 2026 11:59:00 +0000\r\n" +
		"Message-ID: <20260301115900.1234@sender.test>\r\n" +
		"MIME-Version: 1.0\r\n" +
		"Content-Type: text/plain; charset=utf-8\r\n" +
		"\r\n" + body
	return &Message{
		ClientAddr: "127.0.0.1", ClientName: "mx.sender.test", Helo: "mx.sender.test",
		Sender: "alice@sender.test", Rcpts: []string{"bob@example.com"},
		QueueID: "4ABCD1234", Hostname: "mx1.example.com", Data: []byte(data),
	}
}

const cleanBody = "Hello Bob,\r\n\r\nshall we meet for lunch on Thursday at noon, at the usual place?\r\n\r\nAlice\r\n"

func hasSymbol(r *Report, name string) bool {
	for _, s := range r.Symbols {
		if s.Name == name {
			return true
		}
	}
	return false
}

// checkEngine runs the common real-engine cases: GTUBE is spam by the
// engine's own rule, a clean message is scored low, a stopped engine is an
// ErrEngine, promptly.
func checkEngine(t *testing.T, e Engine, stop func()) {
	ctx := context.Background()
	rep, err := e.Check(ctx, testMessage("This is the GTUBE:\r\n"+GTUBE+"\r\n"))
	if err != nil {
		t.Fatalf("GTUBE: %v", err)
	}
	if !hasSymbol(rep, "GTUBE") {
		t.Errorf("GTUBE: symbol missing: %+v", rep)
	}
	if rep.Score < 15 && rep.Action != "reject" {
		t.Errorf("GTUBE: score %v action %q, want spam", rep.Score, rep.Action)
	}
	t.Logf("%s GTUBE: score %v action %q symbols %v", e.Name(), rep.Score, rep.Action, rep.Symbols)

	rep, err = e.Check(ctx, testMessage(cleanBody))
	if err != nil {
		t.Fatalf("clean: %v", err)
	}
	if rep.Score >= 5 || hasSymbol(rep, "GTUBE") || rep.Action == "reject" {
		t.Errorf("clean message: score %v action %q symbols %v", rep.Score, rep.Action, rep.Symbols)
	}
	if len(rep.Symbols) == 0 {
		t.Errorf("clean message: no symbols at all: %+v", rep)
	}
	t.Logf("%s clean: score %v action %q symbols %v", e.Name(), rep.Score, rep.Action, rep.Symbols)

	// A message cut in the middle of a line, as MaxEngineBytes cuts one.
	cut := testMessage(strings.Repeat("All work and no play makes Jack a dull boy. ", 400))
	cut.Data, cut.Truncated = cut.Data[:len(cut.Data)-7], true
	if _, err := e.Check(ctx, cut); err != nil {
		t.Errorf("message cut mid-line: %v", err)
	}

	stop()
	start := time.Now()
	_, err = e.Check(ctx, testMessage(cleanBody))
	if !errors.Is(err, ErrEngine) {
		t.Errorf("stopped engine: %v, want ErrEngine", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("stopped engine took %v to fail", d)
	}
}

func TestRspamdReal(t *testing.T) {
	d := spamtest.StartDNS(t, engineZone)
	eng := spamtest.StartRspamd(t, d.Addr)
	r := &Rspamd{URL: eng.URL, Timeout: 30 * time.Second}
	checkEngine(t, r, eng.Stop)
	if d.Queries.Load() == 0 {
		t.Error("rspamd asked the test DNS server nothing: is its DNS pointed elsewhere?")
	}
}

func TestSpamdReal(t *testing.T) {
	eng := spamtest.StartSpamd(t)
	s := &Spamd{Address: eng.Addr, Timeout: 30 * time.Second}
	checkEngine(t, s, eng.Stop)
}

// An engine that accepts the connection and never answers: the check ends
// at the timeout with ErrEngine. (The slow engine is simulated; the
// unreachable one above is the real engine stopped.)
func TestEngineTimeout(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	for _, e := range []Engine{
		&Rspamd{URL: "http://" + ln.Addr().String(), Timeout: 300 * time.Millisecond},
		&Spamd{Address: ln.Addr().String(), Timeout: 300 * time.Millisecond},
	} {
		start := time.Now()
		_, err := e.Check(context.Background(), testMessage(cleanBody))
		if !errors.Is(err, ErrEngine) {
			t.Errorf("%s: %v, want ErrEngine", e.Name(), err)
		}
		if d := time.Since(start); d < 250*time.Millisecond || d > 3*time.Second {
			t.Errorf("%s: gave up after %v, want about 300ms", e.Name(), d)
		}
		if err != nil && !strings.Contains(err.Error(), e.Name()) {
			t.Errorf("%s: error does not name the engine: %v", e.Name(), err)
		}
	}
}
