package spam

import (
	"bufio"
	"bytes"
	"net/mail"
	"strings"
	"testing"
)

// FuzzGTUBEScanner: however the body is cut into chunks, the scanner
// finds GTUBE exactly when the whole body contains it.
func FuzzGTUBEScanner(f *testing.F) {
	f.Add([]byte("x\r\n"+GTUBE+"\r\n"), uint8(3), uint8(40))
	f.Add([]byte(GTUBE[:30]+GTUBE[29:]), uint8(29), uint8(31))
	f.Add([]byte(strings.Repeat(GTUBE[:20], 5)+GTUBE), uint8(7), uint8(7))
	f.Fuzz(func(t *testing.T, body []byte, a, b uint8) {
		var s GTUBEScanner
		rest := body
		for i := 0; len(rest) > 0; i++ {
			n := int(a)
			if i%2 == 1 {
				n = int(b)
			}
			n = max(1, min(n, len(rest)))
			s.Write(rest[:n])
			rest = rest[n:]
		}
		if s.Found() != bytes.Contains(body, gtube) {
			t.Fatalf("found %v, contains %v (chunks %d/%d)", s.Found(), !s.Found(), a, b)
		}
	})
}

// FuzzReadSpamd: any reply either parses into a report or is an error;
// never a panic, never a report without the Spam header's score.
func FuzzReadSpamd(f *testing.F) {
	f.Add("SPAMD/1.1 0 EX_OK\r\nContent-length: 5\r\nSpam: True ; 1000.0 / 5.0\r\n\r\nGTUBE")
	f.Add("SPAMD/1.1 0 EX_OK\r\nSpam: False ; -0.1 / 5.0\r\n\r\n")
	f.Add("SPAMD/1.0 76 Bad header line\r\n")
	f.Add("SPAMD/1.1 0 EX_OK\r\nContent-length: -1\r\nSpam: True ; 1 / 2\r\n\r\n")
	f.Fuzz(func(t *testing.T, reply string) {
		rep, err := readSpamd(bufio.NewReader(strings.NewReader(reply)))
		if err == nil && (rep == nil || !strings.Contains(strings.ToLower(reply), "spam:")) {
			t.Fatalf("report %+v from %q", rep, reply)
		}
	})
}

// FuzzParseDate: the fast path of parseDate agrees with mail.ParseDate.
func FuzzParseDate(f *testing.F) {
	for _, s := range []string{
		"Sun, 1 Mar 2026 11:59:00 +0000", "Sun, 01 Mar 2026 11:59:00 +0000", "1 Mar 2026 11:59:00 +0000",
		"Sun, 1 Mar 2026 11:59:00 +0000 (UTC)", "Sun, 1 Mar 26 11:59 GMT", "Mon, 1 Mar 2026 11:59:00 +0000",
		"Sun, 31 Feb 2026 11:59:00 +0000", "Sun, 1 Mar 2026 25:59:00 +0000", "Sun,  1 Mar 2026 11:59:00 -0130", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		got, gerr := parseDate(s)
		want, werr := mail.ParseDate(s)
		if (gerr == nil) != (werr == nil) || gerr == nil && !got.Equal(want) {
			t.Fatalf("parseDate(%q) = %v, %v; mail.ParseDate: %v, %v", s, got, gerr, want, werr)
		}
	})
}
