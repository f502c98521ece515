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
