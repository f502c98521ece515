package maillog

import (
	"strings"
	"testing"
)

func TestCheckQuery(t *testing.T) {
	for _, q := range []string{"4jhrxN2Hywz1SKqt", "3F2A81C0D", "alice@example.com", "<>", "x+tag@elsewhere.test", "o'neil@example.com", "a@[192.0.2.1]"} {
		if err := CheckQuery(q); err != nil {
			t.Errorf("%q: %v", q, err)
		}
	}
	for q, want := range map[string]string{
		"":                                   "missing",
		"abc":                                "neither a queue id",
		"../../etc/passwd":                   "neither a queue id",
		"a@b c":                              "character",
		"<script>@x":                         "character",
		"a@b\x00":                            "character",
		"a@b\n":                              "character",
		"\"quoted\"@x":                       "character",
		"é@example.com":                      "character",
		strings.Repeat("a", 250) + "@x.test": "at most 254",
	} {
		if err := CheckQuery(q); err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%q: %v, want an error with %q", q, err, want)
		}
	}
}

// Question takes an address as the log writes it and drops spaces around
// the question; what is left must pass CheckQuery.
func TestQuestion(t *testing.T) {
	for in, want := range map[string]string{
		"<alice@example.com>":   "alice@example.com",
		"  alice@example.com\n": "alice@example.com",
		" <a@b.test> ":          "a@b.test",
		"<>":                    "<>",
		" 4jhrxN2Hywz1SKqt ":    "4jhrxN2Hywz1SKqt",
	} {
		if got, err := Question(in); got != want || err != nil {
			t.Errorf("Question(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, in := range []string{"", "  ", "<>>", "<<a@b.test>>", "<x>", "<a@b c>"} {
		if got, err := Question(in); err == nil {
			t.Errorf("Question(%q) = %q, no error", in, got)
		}
	}
}
