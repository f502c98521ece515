package spam

import (
	"bufio"
	"strings"
	"testing"
	"time"

	"blitiri.com.ar/go/spf"
	"github.com/mailnode/mailnode/dkim"
)

func TestGTUBEScanner(t *testing.T) {
	body := "Hello\r\n" + GTUBE + "\r\nbye\r\n"
	// Every way of cutting the body in two and three chunks finds it.
	for i := 0; i <= len(body); i++ {
		for _, j := range []int{i, (i + len(body)) / 2, len(body)} {
			var s GTUBEScanner
			s.Write([]byte(body[:i]))
			s.Write([]byte(body[i:j]))
			s.Write([]byte(body[j:]))
			if !s.Found() {
				t.Fatalf("not found when cut at %d and %d", i, j)
			}
		}
	}
	// Byte by byte.
	var s GTUBEScanner
	for i := 0; i < len(body); i++ {
		s.Write([]byte{body[i]})
	}
	if !s.Found() {
		t.Fatal("not found byte by byte")
	}
	// Near misses never match, however cut.
	miss := "Hello " + GTUBE[:len(GTUBE)-1] + " " + GTUBE[1:] + "\r\n"
	for i := 0; i <= len(miss); i++ {
		var s GTUBEScanner
		s.Write([]byte(miss[:i]))
		s.Write([]byte(miss[i:]))
		if s.Found() {
			t.Fatalf("false match when cut at %d", i)
		}
	}
}

func TestHeaderSymbols(t *testing.T) {
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	h := func(s string) []dkim.Header {
		var out []dkim.Header
		for _, l := range strings.Split(s, "\n") {
			if k, v, ok := strings.Cut(l, ":"); ok {
				out = append(out, dkim.Header{Name: k, Value: v})
			}
		}
		return out
	}
	good := "From: A <a@sender.test>\nDate: Sun, 1 Mar 2026 11:00:00 +0000\nMessage-ID: <1@sender.test>\nSubject: hi"
	isLocal := func(d string) bool { return strings.EqualFold(d, "example.com") }
	cases := []struct {
		name, headers, want string
	}{
		{"clean", good, ""},
		{"no From", "Date: Sun, 1 Mar 2026 11:00:00 +0000\nMessage-ID: <1@x>\nSubject: hi", "MN_MISSING_FROM"},
		{"two From", good + "\nFrom: b@sender.test", "MN_MULTI_FROM"},
		{"bad From", strings.Replace(good, "A <a@sender.test>", "not an address", 1), "MN_BAD_FROM"},
		{"our own domain", strings.Replace(good, "a@sender.test", "boss@EXAMPLE.com", 1), "MN_FROM_OWN_DOMAIN"},
		{"no Date", "From: a@x.test\nMessage-ID: <1@x>\nSubject: hi", "MN_MISSING_DATE"},
		{"bad Date", strings.Replace(good, "Sun, 1 Mar 2026 11:00:00 +0000", "yesterday", 1), "MN_BAD_DATE"},
		{"future Date", strings.Replace(good, "Sun, 1 Mar 2026", "Sun, 8 Mar 2026", 1), "MN_FUTURE_DATE"},
		{"no Message-ID, no Subject", "From: a@x.test\nDate: Sun, 1 Mar 2026 11:00:00 +0000", "MN_MISSING_MID MN_MISSING_SUBJECT"},
		{"nothing", "", "MN_MISSING_FROM MN_MISSING_DATE MN_MISSING_MID MN_MISSING_SUBJECT"},
	}
	for _, c := range cases {
		var names []string
		for _, s := range HeaderSymbols(h(c.headers), now, isLocal) {
			names = append(names, s.Name)
			if s.Score != Weights[s.Name] || !s.HasScore {
				t.Errorf("%s: %s weighs %v, table says %v", c.name, s.Name, s.Score, Weights[s.Name])
			}
		}
		if got := strings.Join(names, " "); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
	}
}

func TestAuthSymbols(t *testing.T) {
	cases := []struct {
		in   AuthResults
		want string
	}{
		{AuthResults{SPF: spf.Pass, DKIMPass: 1, DMARC: "pass"}, "MN_SPF_PASS MN_DKIM_PASS MN_DMARC_PASS"},
		{AuthResults{SPF: spf.Fail, DKIMFail: 1, DMARC: "fail", DMARCDisp: "none"}, "MN_SPF_FAIL MN_DKIM_FAIL MN_DMARC_FAIL"},
		{AuthResults{SPF: spf.SoftFail, DMARC: "fail", DMARCDisp: "quarantine"}, "MN_SPF_SOFTFAIL MN_DMARC_QUARANTINE"},
		{AuthResults{SPF: spf.PermError, DKIMPass: 1, DKIMFail: 2, DMARC: "fail", DMARCDisp: "reject"}, "MN_SPF_PERMERROR MN_DKIM_PASS MN_DMARC_QUARANTINE"},
		{AuthResults{SPF: spf.TempError, DMARC: "temperror"}, ""},
		{AuthResults{SPF: spf.None, DMARC: "none"}, ""},
	}
	for _, c := range cases {
		var names []string
		for _, s := range AuthSymbols(c.in) {
			names = append(names, s.Name)
		}
		if got := strings.Join(names, " "); got != c.want {
			t.Errorf("%+v: %q, want %q", c.in, got, c.want)
		}
	}
}

func TestFormatScore(t *testing.T) {
	for f, want := range map[float64]string{0: "0", 1000: "1000", 4.8: "4.8", -0.5: "-0.5", 1.234: "1.23", -0.001: "0", 15.10: "15.1"} {
		if got := FormatScore(f); got != want {
			t.Errorf("%v: %q, want %q", f, got, want)
		}
	}
}

func TestReadSpamd(t *testing.T) {
	cases := []struct {
		name, reply string
		score       float64
		symbols     string
		err         bool
	}{
		{"spam", "SPAMD/1.1 0 EX_OK\r\nContent-length: 22\r\nSpam: True ; 1000.5 / 5.0\r\n\r\nGTUBE,MSGID_SHORT,NO_RE", 1000.5, "GTUBE MSGID_SHORT NO_R", false},
		{"ham, no symbols", "SPAMD/1.1 0 EX_OK\r\nContent-length: 0\r\nSpam: False ; -0.1 / 5.0\r\n\r\n", -0.1, "", false},
		{"no length", "SPAMD/1.1 0 EX_OK\r\nSpam: False ; 1.2 / 5.0\r\n\r\nA,B\r\n", 1.2, "A B", false},
		{"error status", "SPAMD/1.0 76 Bad header line: x\r\n\r\n", 0, "", true},
		{"no Spam header", "SPAMD/1.1 0 EX_OK\r\nContent-length: 0\r\n\r\n", 0, "", true},
		{"bad Spam header", "SPAMD/1.1 0 EX_OK\r\nSpam: True ; lots\r\n\r\n", 0, "", true},
		{"short body", "SPAMD/1.1 0 EX_OK\r\nContent-length: 10\r\nSpam: True ; 1 / 5\r\n\r\nAB", 0, "", true},
		{"garbage", "HTTP/1.1 200 OK\r\n\r\n", 0, "", true},
		{"empty", "", 0, "", true},
	}
	for _, c := range cases {
		rep, err := readSpamd(bufio.NewReader(strings.NewReader(c.reply)))
		if (err != nil) != c.err {
			t.Errorf("%s: error %v", c.name, err)
			continue
		}
		if err != nil {
			continue
		}
		var names []string
		for _, s := range rep.Symbols {
			names = append(names, s.Name)
		}
		if rep.Score != c.score || strings.Join(names, " ") != c.symbols {
			t.Errorf("%s: %v %q, want %v %q", c.name, rep.Score, names, c.score, c.symbols)
		}
	}
}

func TestSymbolString(t *testing.T) {
	for s, want := range map[Symbol]string{
		{Name: "GTUBE", Score: 0, HasScore: true}:      "GTUBE(0)",
		{Name: "ALL_TRUSTED"}:                          "ALL_TRUSTED",
		{Name: "BAD\r\nX-Spam-Status: No", Score: 1}:   "BAD??X-Spam-Status:?No",
		{Name: "a,b(c)", Score: -1.25, HasScore: true}: "a?b?c?(-1.25)",
		{Name: "caf\u00e9", Score: 2, HasScore: true}:  "caf?(2)",
	} {
		if got := s.String(); got != want {
			t.Errorf("%q: %q, want %q", s.Name, got, want)
		}
	}
}
