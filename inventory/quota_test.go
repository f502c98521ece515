package inventory

import "testing"

func TestParseSize(t *testing.T) {
	for _, c := range []struct {
		in      string
		bytes   int64
		dovecot string
	}{
		{"1G", 1 << 30, "1G"},
		{"500M", 500 << 20, "500M"},
		{"100k", 100 << 10, "100K"},
		{"10KB", 10 << 10, "10K"},
		{"2t", 2 << 40, "2T"},
		{"1048576", 1 << 20, "1048576B"},
		{" 3 G ", 3 << 30, "3G"},
	} {
		b, d, err := ParseSize(c.in)
		if err != nil || b != c.bytes || d != c.dovecot {
			t.Errorf("ParseSize(%q) = %d, %q, %v; want %d, %q", c.in, b, d, err, c.bytes, c.dovecot)
		}
	}
	for _, bad := range []string{"", "G", "1X", "1.5G", "-1G", "0", "0M", "1 GiB", "99999999999999T"} {
		if _, _, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) accepted", bad)
		}
	}
}

func TestMailboxDefaults(t *testing.T) {
	inv := mustParse(t, small)
	if inv.Dovecot.Sieve != nil || inv.QuotaOn() || inv.Dovecot.SpamLearning {
		t.Error("Sieve, quotas and learning must be off unless the inventory turns them on")
	}
	inv = mustParse(t, small+`dovecot:
  sieve: {}
  spam_learning: true
spam: {engine: rspamd, rspamd_url: "http://10.0.0.5:11333/"}
`)
	if sv := inv.Dovecot.Sieve; sv == nil || sv.JunkFolder != "Junk" || len(sv.Listen) != 1 || sv.Listen[0] != "4190" {
		t.Errorf("dovecot.sieve: {} = %+v, want Junk on 4190", sv)
	}
	if got := inv.Spam.RspamdControllerURL; got != "http://10.0.0.5:11334" {
		t.Errorf("spam.rspamd_controller_url = %q, want rspamd_url's host on 11334", got)
	}
}
