package state

import (
	"strings"
	"testing"
	"time"
)

// FuzzGreylistKeys: any request attributes give well-formed keys, and the
// sender normalization is stable (normalizing twice changes nothing), so a
// key printed by `mailnode state list` names the same triplet again.
func FuzzGreylistKeys(f *testing.F) {
	for _, s := range [][3]string{
		{"198.51.100.7", "News+Weekly@Outside.Test", "alice@example.com"},
		{"2001:db8::1", "prvs=0123456789=user@batv.test", "bob@example.com"},
		{"::ffff:10.1.2.3", "bounce-123-456@lists.test", "a@b"},
		{"unknown", "", "postmaster"},
		{"fe80::1%eth0", "a1b2@c", "x"},
	} {
		f.Add(s[0], s[1], s[2])
	}
	f.Fuzz(func(t *testing.T, client, sender, rcpt string) {
		tk, ck := GreylistKeys(Triplet{client, sender, rcpt})
		if !strings.HasPrefix(tk, PrefixTriplet) || !strings.HasPrefix(ck, PrefixClient) {
			t.Fatalf("keys %q %q", tk, ck)
		}
		n := normSender(sender)
		if again := normSender(n); again != n {
			t.Fatalf("normSender not stable: %q -> %q -> %q", sender, n, again)
		}
	})
}

// FuzzRateValue: whatever is stored under a rate key, a step neither panics
// nor writes a value it cannot read back.
func FuzzRateValue(f *testing.F) {
	f.Add("2992561:3:3", 1, 1, 5, 10)
	f.Add("1:2:3;4:5:6;x;;-7:1:1", 0, 1, 0, 0)
	f.Fuzz(func(t *testing.T, val string, dm, dr, lm, lr int) {
		op := RateOp{Key: "rate/u/x", Now: time.UnixMilli(1795537163211),
			Messages: dm & 3, Recipients: dr & 3, MaxMessages: lm % 100, MaxRecipts: lr % 100}
		w, out := rateStep(val, op)
		if w == nil {
			return
		}
		if !out.Allowed || w.ttl <= 0 {
			t.Fatalf("write %+v for outcome %+v", w, out)
		}
		if got := formatBuckets(parseBuckets(w.val)); got != w.val {
			t.Fatalf("value %q reads back as %q", w.val, got)
		}
	})
}
