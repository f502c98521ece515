package state

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/mailnode/mailnode/inventory"
	"github.com/mailnode/mailnode/state/statetest"
)

func newRate(t *testing.T, cfg *inventory.Ratelimit, st Store, clk *statetest.Clock) *RateLimiter {
	t.Helper()
	r, err := NewRateLimiter(cfg, st, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func rcpt(t *testing.T, r *RateLimiter, s Sender, instance, action string, reason Reason) RateResult {
	t.Helper()
	res, err := r.Check(context.Background(), s, instance)
	if err != nil {
		t.Fatalf("Check(%v, %s): %v", s, instance, err)
	}
	if res.Action != action || res.Reason != reason {
		t.Fatalf("Check(%v, %s) = %q (%s), want %q (%s); outcome %+v", s, instance, res.Action, res.Reason, action, reason, res.Outcome)
	}
	return res
}

var alice = Sender{Login: "alice@example.com", Client: "192.0.2.50"}

const aliceOver = "450 4.7.1 Rate limit exceeded for <alice@example.com>, try again later"

func TestRateMessages(t *testing.T) {
	eachStore(t, func(t *testing.T, st Store, clk *statetest.Clock) {
		r := newRate(t, &inventory.Ratelimit{MessagesPerHour: 3}, st, clk)
		// Message 1 has three recipients: counted once.
		for i := 0; i < 3; i++ {
			rcpt(t, r, alice, "m1", "", ReasonWithinLimit)
		}
		rcpt(t, r, alice, "m2", "", ReasonWithinLimit)
		res := rcpt(t, r, alice, "m3", "", ReasonWithinLimit) // the third message: at the limit
		if res.Outcome.Messages != 3 || res.Outcome.Recipients != 5 {
			t.Fatalf("counts = %+v, want 3 messages, 5 recipients", res.Outcome)
		}
		rcpt(t, r, alice, "m3", "", ReasonWithinLimit) // more recipients of a counted message pass
		res = rcpt(t, r, alice, "m4", aliceOver, ReasonOverMessages)
		if res.Outcome.RetryAfter <= 0 || res.Outcome.RetryAfter > time.Hour {
			t.Fatalf("retry after %s", res.Outcome.RetryAfter)
		}
		// Other senders have their own counters.
		rcpt(t, r, Sender{Login: "bob@example.com"}, "b1", "", ReasonWithinLimit)
		rcpt(t, r, Sender{Client: "10.20.0.5"}, "c1", "", ReasonWithinLimit)
	})
}

func TestRateRecipients(t *testing.T) {
	eachStore(t, func(t *testing.T, st Store, clk *statetest.Clock) {
		r := newRate(t, &inventory.Ratelimit{MessagesPerHour: 100, RecipientsPerHour: 4}, st, clk)
		for i := 0; i < 4; i++ {
			rcpt(t, r, alice, "m1", "", ReasonWithinLimit)
		}
		rcpt(t, r, alice, "m1", aliceOver, ReasonOverRecipients)
		// A refused RCPT counted nothing: the next message is refused too,
		// and its message was not counted (it would be 2 otherwise).
		res := rcpt(t, r, alice, "m2", aliceOver, ReasonOverRecipients)
		if res.Outcome.Messages != 1 || res.Outcome.Recipients != 4 {
			t.Fatalf("counts %+v, want 1 message, 4 recipients", res.Outcome)
		}
	})
}

func TestRateWindowSlides(t *testing.T) {
	eachStore(t, func(t *testing.T, st Store, clk *statetest.Clock) {
		// The fake clock starts at 09:00:00, a bucket boundary.
		r := newRate(t, &inventory.Ratelimit{MessagesPerHour: 2}, st, clk)
		rcpt(t, r, alice, "a", "", ReasonWithinLimit) // 09:00, bucket 09:00-09:10
		clk.Add(25 * time.Minute)
		rcpt(t, r, alice, "b", "", ReasonWithinLimit) // 09:25, bucket 09:20-09:30
		res := rcpt(t, r, alice, "c", aliceOver, ReasonOverMessages)
		if res.Outcome.RetryAfter != 35*time.Minute { // the 09:00 bucket leaves at 10:00
			t.Fatalf("retry after %s, want 35m", res.Outcome.RetryAfter)
		}
		clk.Add(35*time.Minute - time.Millisecond) // 09:59:59.999
		rcpt(t, r, alice, "c", aliceOver, ReasonOverMessages)
		clk.Add(time.Millisecond) // 10:00: message a left the window
		res = rcpt(t, r, alice, "c", "", ReasonWithinLimit)
		if res.Outcome.Messages != 2 {
			t.Fatalf("messages = %d, want 2 (b and c)", res.Outcome.Messages)
		}
		// No doubling at a clock-hour boundary: b and c still count at 10:05.
		clk.Add(5 * time.Minute)
		rcpt(t, r, alice, "d", aliceOver, ReasonOverMessages)
	})
}

func TestRateOverridesAndDefaults(t *testing.T) {
	clk := statetest.NewClock()
	st := openBolt(t, clk.Now)
	cfg := &inventory.Ratelimit{MessagesPerHour: 1, RecipientsPerHour: 10, Overrides: map[string]inventory.Limits{
		"Alice@Example.com": {MessagesPerHour: 2},
		"10.20.0.0/16":      {MessagesPerHour: 5, RecipientsPerHour: 50},
		"10.20.30.0/24":     {RecipientsPerHour: 3},
	}}
	r := newRate(t, cfg, st, clk)
	for _, c := range []struct {
		s    Sender
		want inventory.Limits
	}{
		{alice, inventory.Limits{MessagesPerHour: 2, RecipientsPerHour: 10}},
		{Sender{Login: "bob@example.com", Client: "10.20.0.1"}, inventory.Limits{MessagesPerHour: 1, RecipientsPerHour: 10}},
		{Sender{Client: "10.20.0.1"}, inventory.Limits{MessagesPerHour: 5, RecipientsPerHour: 50}},
		{Sender{Client: "10.20.30.4"}, inventory.Limits{MessagesPerHour: 1, RecipientsPerHour: 3}},
		{Sender{Client: "127.0.0.1"}, inventory.Limits{MessagesPerHour: 1, RecipientsPerHour: 10}},
	} {
		if got := r.LimitsFor(c.s); got != c.want {
			t.Errorf("LimitsFor(%v) = %+v, want %+v", c.s, got, c.want)
		}
	}
	rcpt(t, r, alice, "1", "", ReasonWithinLimit)
	rcpt(t, r, alice, "2", "", ReasonWithinLimit)
	rcpt(t, r, alice, "3", aliceOver, ReasonOverMessages)
	// A trusted host is counted by address, named in the reply.
	h := Sender{Client: "::ffff:10.20.30.4"}
	for i := 0; i < 3; i++ {
		rcpt(t, r, h, "h", "", ReasonWithinLimit)
	}
	rcpt(t, r, h, "h", "450 4.7.1 Rate limit exceeded for <10.20.30.4>, try again later", ReasonOverRecipients)
}

func TestRateNoLimit(t *testing.T) {
	r, err := NewRateLimiter(nil, nil, nil)
	if err != nil || r != nil {
		t.Fatalf("NewRateLimiter(nil) = %v, %v", r, err)
	}
	if res, err := r.Check(context.Background(), alice, "x"); err != nil || res.Action != "" || res.Reason != ReasonNoLimit {
		t.Fatalf("nil RateLimiter: %+v, %v", res, err)
	}
	clk := statetest.NewClock()
	st := openBolt(t, clk.Now)
	r = newRate(t, &inventory.Ratelimit{Overrides: map[string]inventory.Limits{"bob@example.com": {MessagesPerHour: 1}}}, st, clk)
	for i := 0; i < 5; i++ {
		rcpt(t, r, alice, fmt.Sprint(i), "", ReasonNoLimit)
	}
	rcpt(t, r, Sender{Login: "bob@example.com"}, "1", "", ReasonWithinLimit)
	rcpt(t, r, Sender{Login: "bob@example.com"}, "2", "450 4.7.1 Rate limit exceeded for <bob@example.com>, try again later", ReasonOverMessages)
}

// TestRateAtomic: many goroutines race for the last slots; exactly the limit
// is granted, on either store.
func TestRateAtomic(t *testing.T) {
	eachStore(t, func(t *testing.T, st Store, clk *statetest.Clock) {
		const limit, workers, each = 50, 8, 20
		r := newRate(t, &inventory.Ratelimit{RecipientsPerHour: limit}, st, clk)
		granted := make(chan int, workers)
		for w := 0; w < workers; w++ {
			go func(w int) {
				n := 0
				for i := 0; i < each; i++ {
					res, err := r.Check(context.Background(), alice, fmt.Sprintf("w%d", w))
					if err == nil && res.Action == "" {
						n++
					}
				}
				granted <- n
			}(w)
		}
		total := 0
		for w := 0; w < workers; w++ {
			total += <-granted
		}
		if total != limit {
			t.Fatalf("granted %d recipients, want exactly %d", total, limit)
		}
	})
}
