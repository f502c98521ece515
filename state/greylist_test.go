package state

import (
	"context"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/mailnode/mailnode/inventory"
	"github.com/mailnode/mailnode/state/statetest"
)

func greyCfg() *inventory.Greylist {
	return &inventory.Greylist{
		Enabled:            true,
		Delay:              inventory.Duration(300 * time.Second),
		RetryWindow:        inventory.Duration(48 * time.Hour),
		AutoWhitelistAfter: 3,
		Expire:             inventory.Duration(35 * 24 * time.Hour),
	}
}

func newGrey(t *testing.T, cfg *inventory.Greylist, st Store, clk *statetest.Clock) *Greylister {
	t.Helper()
	g, err := NewGreylister(cfg, st, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// expect checks one Check call's action and reason.
func expect(t *testing.T, g *Greylister, tr Triplet, action string, reason Reason) GreyResult {
	t.Helper()
	res, err := g.Check(context.Background(), tr)
	if err != nil {
		t.Fatalf("Check(%v): %v", tr, err)
	}
	if res.Action != action || res.Reason != reason {
		t.Fatalf("Check(%v) = %q (%s), want %q (%s)", tr, res.Action, res.Reason, action, reason)
	}
	return res
}

const greyed300 = "450 4.7.1 Greylisted, please try again in 300 seconds"

var tr1 = Triplet{Client: "198.51.100.7", Sender: "news@outside.test", Recipient: "alice@example.com"}

func TestGreylistDelay(t *testing.T) {
	eachStore(t, func(t *testing.T, st Store, clk *statetest.Clock) {
		g := newGrey(t, greyCfg(), st, clk)
		expect(t, g, tr1, greyed300, ReasonNew)
		clk.Add(100 * time.Second)
		expect(t, g, tr1, "450 4.7.1 Greylisted, please try again in 200 seconds", ReasonEarly)
		clk.Add(199*time.Second + 999*time.Millisecond) // 1 ms before the delay is over
		expect(t, g, tr1, "450 4.7.1 Greylisted, please try again in 1 seconds", ReasonEarly)
		clk.Add(time.Millisecond) // exactly the delay
		res := expect(t, g, tr1, "", ReasonPassed)
		if res.Outcome.Passes != 1 || res.Outcome.ClientCount != 1 {
			t.Fatalf("after first pass: %+v", res.Outcome)
		}
		clk.Add(time.Second)
		expect(t, g, tr1, "", ReasonPassed)
		// Another host of the same /24 shares the triplet.
		same := tr1
		same.Client = "198.51.100.200"
		expect(t, g, same, "", ReasonPassed)
		// Other networks, senders and recipients do not.
		for _, o := range []Triplet{
			{Client: "198.51.101.7", Sender: tr1.Sender, Recipient: tr1.Recipient},
			{Client: tr1.Client, Sender: "other@outside.test", Recipient: tr1.Recipient},
			{Client: tr1.Client, Sender: tr1.Sender, Recipient: "bob@example.com"},
		} {
			expect(t, g, o, greyed300, ReasonNew)
		}
	})
}

func TestGreylistRetryWindow(t *testing.T) {
	eachStore(t, func(t *testing.T, st Store, clk *statetest.Clock) {
		g := newGrey(t, greyCfg(), st, clk)
		a := tr1
		b := Triplet{Client: "203.0.113.9", Sender: "x@y.test", Recipient: "bob@example.com"}
		expect(t, g, a, greyed300, ReasonNew)
		expect(t, g, b, greyed300, ReasonNew)
		clk.Add(48 * time.Hour) // exactly the end of the window: still counts
		expect(t, g, a, "", ReasonPassed)
		clk.Add(time.Millisecond) // b comes back 1 ms too late: starts over
		expect(t, g, b, greyed300, ReasonNew)
		clk.Add(300 * time.Second)
		expect(t, g, b, "", ReasonPassed)
	})
}

func TestGreylistExpire(t *testing.T) {
	eachStore(t, func(t *testing.T, st Store, clk *statetest.Clock) {
		cfg := greyCfg()
		cfg.AutoWhitelistAfter = 0 // off: this test is about triplets
		g := newGrey(t, cfg, st, clk)
		expect(t, g, tr1, greyed300, ReasonNew)
		clk.Add(300 * time.Second)
		expect(t, g, tr1, "", ReasonPassed) // last use
		clk.Add(35 * 24 * time.Hour)        // exactly expire after the last use: alive, refreshed
		expect(t, g, tr1, "", ReasonPassed)
		clk.Add(35*24*time.Hour + time.Millisecond) // unused for longer than expire
		expect(t, g, tr1, greyed300, ReasonNew)
	})
}

func TestGreylistTouchOnlyHourly(t *testing.T) {
	// Uses inside an hour do not refresh last-seen, so expiry counts from the
	// last refresh: a use 59 min after the pass does not move it.
	eachStore(t, func(t *testing.T, st Store, clk *statetest.Clock) {
		cfg := greyCfg()
		cfg.AutoWhitelistAfter = 0
		g := newGrey(t, cfg, st, clk)
		expect(t, g, tr1, greyed300, ReasonNew)
		clk.Add(300 * time.Second)
		expect(t, g, tr1, "", ReasonPassed)
		tk, _ := g.Keys(tr1)
		before, _, _ := st.Get(context.Background(), tk)
		clk.Add(59 * time.Minute)
		expect(t, g, tr1, "", ReasonPassed)
		after, _, _ := st.Get(context.Background(), tk)
		if before.Value != after.Value {
			t.Fatalf("triplet rewritten within the hour: %q -> %q", before.Value, after.Value)
		}
		clk.Add(time.Minute)
		res := expect(t, g, tr1, "", ReasonPassed)
		if res.Outcome.Passes != 2 {
			t.Fatalf("passes after an hour = %d, want 2", res.Outcome.Passes)
		}
	})
}

func TestGreylistAutoWhitelist(t *testing.T) {
	eachStore(t, func(t *testing.T, st Store, clk *statetest.Clock) {
		g := newGrey(t, greyCfg(), st, clk) // whitelisted after 3
		client := "192.0.2.10"
		pass := func(sender string) GreyResult {
			tr := Triplet{Client: client, Sender: sender, Recipient: "alice@example.com"}
			expect(t, g, tr, greyed300, ReasonNew)
			clk.Add(300 * time.Second)
			return expect(t, g, tr, "", ReasonPassed)
		}
		if n := pass("a@list.test").Outcome.ClientCount; n != 1 {
			t.Fatalf("count = %d, want 1", n)
		}
		// A second triplet passing within the hour does not count again.
		if n := pass("b@list.test").Outcome.ClientCount; n != 1 {
			t.Fatalf("count within the hour = %d, want 1", n)
		}
		clk.Add(time.Hour)
		if n := pass("c@list.test").Outcome.ClientCount; n != 2 {
			t.Fatalf("count = %d, want 2", n)
		}
		clk.Add(time.Hour)
		if n := pass("d@list.test").Outcome.ClientCount; n != 3 {
			t.Fatalf("count = %d, want 3", n)
		}
		// Now any new triplet from that client passes at once...
		fresh := Triplet{Client: client, Sender: "new@elsewhere.test", Recipient: "bob@example.com"}
		expect(t, g, fresh, "", ReasonClientAWL)
		// ...but not from a neighbour in the same /24: the AWL is per address.
		fresh.Client = "192.0.2.11"
		expect(t, g, fresh, greyed300, ReasonNew)
		// The whitelisting lapses after expire without use.
		clk.Add(35*24*time.Hour + time.Hour)
		fresh.Client = client
		fresh.Sender = "later@elsewhere.test"
		expect(t, g, fresh, greyed300, ReasonNew)
	})
}

func TestGreylistExemptions(t *testing.T) {
	eachStore(t, func(t *testing.T, st Store, clk *statetest.Clock) {
		cfg := greyCfg()
		cfg.WhitelistClients = []string{"203.0.113.0/24", "2001:db8:5::/48"}
		cfg.WhitelistSenders = []string{"bank.test"}
		g := newGrey(t, cfg, st, clk)
		cases := []struct {
			tr     Triplet
			reason Reason
		}{
			{Triplet{"203.0.113.77", "x@y.test", "alice@example.com"}, ReasonClientWhitelist},
			{Triplet{"::ffff:203.0.113.77", "x@y.test", "alice@example.com"}, ReasonClientWhitelist},
			{Triplet{"2001:db8:5:1::9", "x@y.test", "alice@example.com"}, ReasonClientWhitelist},
			{Triplet{"198.51.100.1", "alerts@BANK.test", "alice@example.com"}, ReasonSenderWhitelist},
			{Triplet{"198.51.100.1", "alerts@mail.bank.test.", "alice@example.com"}, ReasonSenderWhitelist},
			{Triplet{"198.51.100.1", "", "alice@example.com"}, ReasonNullSender},
			{Triplet{"198.51.100.1", "x@y.test", "PostMaster@example.com"}, ReasonPostmaster},
		}
		for _, c := range cases {
			expect(t, g, c.tr, "", c.reason)
		}
		n := 0
		if err := st.Scan(context.Background(), PrefixGrey, func(Entry) error { n++; return nil }); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Fatalf("exempt mail wrote %d entries", n)
		}
		// Not whitelisted: a look-alike domain and a neighbouring network.
		expect(t, g, Triplet{"198.51.100.1", "x@notbank.test", "alice@example.com"}, greyed300, ReasonNew)
		expect(t, g, Triplet{"203.0.114.1", "x@y.test", "alice@example.com"}, greyed300, ReasonNew)
	})
}

func TestGreylistDisabled(t *testing.T) {
	for _, cfg := range []*inventory.Greylist{nil, {Enabled: false}} {
		g, err := NewGreylister(cfg, nil, nil)
		if err != nil || g != nil {
			t.Fatalf("NewGreylister(%v) = %v, %v; want nil, nil", cfg, g, err)
		}
		res, err := g.Check(context.Background(), tr1)
		if err != nil || res.Action != "" || res.Reason != ReasonDisabled {
			t.Fatalf("nil Greylister: %+v, %v", res, err)
		}
	}
}

func TestGreylistKeys(t *testing.T) {
	g := &Greylister{}
	cases := []struct {
		tr              Triplet
		triplet, client string
	}{
		{Triplet{"198.51.100.7", "News+Weekly@Outside.Test", "Alice@Example.com"},
			"grey/t/198.51.100.0/24/news@outside.test/alice@example.com", "grey/c/198.51.100.7"},
		{Triplet{"::ffff:198.51.100.7", "bounce-123-456@lists.test", "a@b"},
			"grey/t/198.51.100.0/24/bounce-#-#@lists.test/a@b", "grey/c/198.51.100.7"},
		{Triplet{"2001:DB8:1:2:3:4:5:6", "prvs=0123456789=user@batv.test", "a@b"},
			"grey/t/2001:db8:1:2::/64/user@batv.test/a@b", "grey/c/2001:db8:1:2:3:4:5:6"},
		{Triplet{"2001:db8::1", "prvs=user=0123456789@batv.test", "a@b"},
			"grey/t/2001:db8::/64/user@batv.test/a@b", "grey/c/2001:db8::1"},
		{Triplet{"192.0.2.1", "user123@x.test", "a@b"},
			"grey/t/192.0.2.0/24/user123@x.test/a@b", "grey/c/192.0.2.1"},
		{Triplet{"192.0.2.1", "2024.report.9@x.test", "a@b"},
			"grey/t/192.0.2.0/24/#.report.#@x.test/a@b", "grey/c/192.0.2.1"},
		{Triplet{"unknown", "a@x.test", "a@b"},
			"grey/t/unknown/a@x.test/a@b", "grey/c/unknown"},
	}
	for _, c := range cases {
		tk, ck := g.Keys(c.tr)
		if tk != c.triplet || ck != c.client {
			t.Errorf("Keys(%v) =\n %s, %s\nwant\n %s, %s", c.tr, tk, ck, c.triplet, c.client)
		}
	}
}

func TestGreylistExplain(t *testing.T) {
	clk := statetest.NewClock()
	st := openBolt(t, clk.Now)
	g := newGrey(t, greyCfg(), st, clk)
	expect(t, g, tr1, greyed300, ReasonNew)
	clk.Add(60 * time.Second)
	out, err := g.Explain(context.Background(), tr1)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"grey/t/198.51.100.0/24/news@outside.test/alice@example.com",
		"greylisted since 2026-03-02T09:00:00Z", "try again in 240 seconds (early-retry)"} {
		if !strings.Contains(out, want) {
			t.Errorf("Explain output lacks %q:\n%s", want, out)
		}
	}
	// Explain changes nothing: the next Check is still an early retry.
	expect(t, g, tr1, "450 4.7.1 Greylisted, please try again in 240 seconds", ReasonEarly)
}

// TestGreyStepRefreshes: only the writes that push back the expiry of an
// entry that already passes are refreshes (which the bbolt store may drop
// while its disk is behind); a new triplet, a first pass and its client's
// count are not.
func TestGreyStepRefreshes(t *testing.T) {
	now := time.UnixMilli(1_800_000_000_000)
	op := GreyOp{Now: now, Delay: 5 * time.Minute, RetryWindow: 48 * time.Hour, Expire: 35 * 24 * time.Hour, AWLAfter: 3}
	ago := func(d time.Duration) int64 { return now.Add(-d).UnixMilli() }
	for _, c := range []struct {
		name               string
		triplet, client    string
		verdict            Verdict
		wt, wc             bool // a write wanted
		refreshT, refreshC bool
	}{
		{"new", "", "", VerdictNew, true, false, false, false},
		{"early", tripletValue(ago(time.Minute), ago(time.Minute), 0), "", VerdictEarly, false, false, false, false},
		{"first pass", tripletValue(ago(time.Hour), ago(time.Hour), 0), "", VerdictPass, true, true, false, false},
		{"pass within the hour", tripletValue(ago(48*time.Hour), ago(time.Minute), 2), "1," + strconv.FormatInt(ago(time.Hour), 10), VerdictPass, false, false, false, false},
		{"pass after hours", tripletValue(ago(48*time.Hour), ago(3*time.Hour), 2), "1," + strconv.FormatInt(ago(time.Hour), 10), VerdictPass, true, false, true, false},
		{"auto-whitelisted client", "", "3," + strconv.FormatInt(ago(2*time.Hour), 10), VerdictAWL, false, true, false, true},
	} {
		wt, wc, out := greyStep(c.triplet, c.client, op)
		if out.Verdict != c.verdict || (wt != nil) != c.wt || (wc != nil) != c.wc {
			t.Errorf("%s: verdict %v, writes %v %v; want %v, %v %v", c.name, out.Verdict, wt != nil, wc != nil, c.verdict, c.wt, c.wc)
			continue
		}
		if wt != nil && wt.refresh != c.refreshT || wc != nil && wc.refresh != c.refreshC {
			t.Errorf("%s: refresh flags %v %v, want %v %v", c.name, wt != nil && wt.refresh, wc != nil && wc.refresh, c.refreshT, c.refreshC)
		}
	}
	if w, _ := rateStep("", RateOp{Now: now, Messages: 1, Recipients: 1, MaxMessages: 5}); w == nil || w.refresh {
		t.Errorf("rate counter write %+v: want one, not a refresh", w)
	}
}
