package state

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/mailnode/mailnode/inventory"
	"github.com/mailnode/mailnode/state/statetest"
)

func TestAdminListDelete(t *testing.T) {
	eachStore(t, func(t *testing.T, st Store, clk *statetest.Clock) {
		ctx := context.Background()
		g := newGrey(t, greyCfg(), st, clk)
		r := newRate(t, &inventory.Ratelimit{MessagesPerHour: 10}, st, clk)
		expect(t, g, tr1, greyed300, ReasonNew)
		clk.Add(300 * time.Second)
		expect(t, g, tr1, "", ReasonPassed)
		expect(t, g, Triplet{"203.0.113.5", "x@y.test", "bob@example.com"}, greyed300, ReasonNew)
		rcpt(t, r, alice, "m1", "", ReasonWithinLimit)
		rcpt(t, r, alice, "m1", "", ReasonWithinLimit)

		var b strings.Builder
		n, err := List(ctx, st, "", clk.Now(), &b)
		if err != nil {
			t.Fatal(err)
		}
		out := b.String()
		if n != 4 { // two triplets, one client, one rate counter
			t.Fatalf("List: %d entries:\n%s", n, out)
		}
		for _, want := range []string{
			"grey/c/198.51.100.7", "1 pass(es) counted",
			"grey/t/198.51.100.0/24/news@outside.test/alice@example.com", "passed 1 time(s)",
			"grey/t/203.0.113.0/24/x@y.test/bob@example.com", "greylisted since 2026-03-02T09:05:00Z, not passed yet",
			"rate/u/alice@example.com", "1 message(s), 2 recipient(s) in the last hour",
		} {
			if !strings.Contains(out, want) {
				t.Errorf("List output lacks %q:\n%s", want, out)
			}
		}
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if !strings.HasPrefix(lines[0], "grey/c/") || !strings.HasPrefix(lines[3], "rate/u/") {
			t.Errorf("List not sorted by key:\n%s", out)
		}

		if _, err := DeleteMatching(ctx, st, "g"); err == nil {
			t.Fatal("DeleteMatching accepted a prefix outside mailnode's keys")
		}
		if n, err := DeleteMatching(ctx, st, PrefixTriplet); err != nil || n != 2 {
			t.Fatalf("DeleteMatching(triplets) = %d, %v", n, err)
		}
		// The deleted triplet is new again; the client's count survived.
		res := expect(t, g, tr1, greyed300, ReasonNew)
		if res.Outcome.ClientCount != 1 {
			t.Fatalf("client count after deleting triplets = %d", res.Outcome.ClientCount)
		}
		if n, err := DeleteMatching(ctx, st, PrefixUser+"alice@example.com"); err != nil || n != 1 {
			t.Fatalf("DeleteMatching(alice) = %d, %v", n, err)
		}
		res2 := rcpt(t, r, alice, "m2", "", ReasonWithinLimit)
		if res2.Outcome.Messages != 1 {
			t.Fatalf("alice's count after delete = %d", res2.Outcome.Messages)
		}
	})
}

func TestNameRedactsPassword(t *testing.T) {
	for _, c := range []struct {
		s    inventory.State
		want string
	}{
		{inventory.State{Backend: "bbolt", Path: "/var/lib/mailnode/state.db"}, "bbolt /var/lib/mailnode/state.db"},
		{inventory.State{Backend: "redis", URL: "redis://:secret@10.0.0.5:6379/0"}, "redis redis://:xxxxx@10.0.0.5:6379/0"},
		{inventory.State{Backend: "redis", URL: "redis://10.0.0.5:6379/0"}, "redis redis://10.0.0.5:6379/0"},
	} {
		if got := Name(c.s); got != c.want {
			t.Errorf("Name(%+v) = %q, want %q", c.s, got, c.want)
		}
	}
}

// Count is the status page's greylist size, in both stores.
func TestCount(t *testing.T) {
	eachStore(t, func(t *testing.T, st Store, clk *statetest.Clock) {
		ctx := context.Background()
		count := func(prefix string) int {
			t.Helper()
			n, err := Count(ctx, st, prefix)
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
		if n := count(PrefixTriplet); n != 0 {
			t.Errorf("empty store: %d triplets", n)
		}
		g := newGrey(t, greyCfg(), st, clk)
		r := newRate(t, &inventory.Ratelimit{MessagesPerHour: 10}, st, clk)
		expect(t, g, tr1, greyed300, ReasonNew)
		expect(t, g, Triplet{"203.0.113.5", "x@y.test", "bob@example.com"}, greyed300, ReasonNew)
		expect(t, g, Triplet{"203.0.113.5", "x*[y]@y.test", "bob@example.com"}, greyed300, ReasonNew)
		rcpt(t, r, alice, "m1", "", ReasonWithinLimit)
		if a, b, c := count(PrefixTriplet), count(PrefixGrey), count(PrefixRate); a != 3 || b != 3 || c != 1 {
			t.Errorf("triplets %d, grey %d, rate %d; want 3, 3, 1", a, b, c)
		}
		clk.Add(300 * time.Second)
		expect(t, g, tr1, "", ReasonPassed)
		if a, c := count(PrefixTriplet), count(PrefixClient); a != 3 || c != 1 {
			t.Errorf("after a pass: triplets %d, clients %d; want 3, 1", a, c)
		}
	})
}
