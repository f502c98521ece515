package state

import (
	"context"
	"fmt"
	"math/rand"
	"testing"
	"time"

	"github.com/mailnode/mailnode/state/statetest"
)

// TestStoresAgree runs one random sequence of greylist and rate steps
// through the Go rules (bbolt) and the Lua rules (Redis) and requires the
// same answer every time: the two transcriptions of the rules are one.
func TestStoresAgree(t *testing.T) {
	srv := statetest.Redis(t)
	clk := statetest.NewClock()
	stores := []Store{openBolt(t, clk.Now), openRedis(t, srv, "agree:")}
	rnd := rand.New(rand.NewSource(7))
	ctx := context.Background()
	steps := []time.Duration{0, time.Millisecond, time.Second, 2 * time.Minute, 5 * time.Minute,
		10 * time.Minute, time.Hour, 20 * time.Hour, 3 * 24 * time.Hour}
	for i := 0; i < 3000; i++ {
		clk.Add(steps[rnd.Intn(len(steps))])
		if rnd.Intn(3) > 0 {
			op := GreyOp{
				Triplet: fmt.Sprintf("grey/t/n%d/s%d/r", rnd.Intn(3), rnd.Intn(4)),
				Client:  fmt.Sprintf("grey/c/c%d", rnd.Intn(3)),
				Now:     clk.Now(), Delay: 5 * time.Minute, RetryWindow: 8 * time.Hour,
				Expire: 5 * 24 * time.Hour, AWLAfter: rnd.Intn(2) * 3,
			}
			agree(t, ctx, i, op, stores, Store.Greylist)
		} else {
			op := RateOp{
				Key: fmt.Sprintf("rate/u/u%d", rnd.Intn(2)), Now: clk.Now(),
				Messages: rnd.Intn(2), Recipients: rnd.Intn(3),
				MaxMessages: rnd.Intn(6), MaxRecipts: rnd.Intn(12),
			}
			agree(t, ctx, i, op, stores, Store.Rate)
		}
	}
}

// agree runs step i, op, on every store (bbolt, then Redis) and fails when
// their outcomes differ.
func agree[Op any, Out comparable](t *testing.T, ctx context.Context, i int, op Op, stores []Store,
	run func(Store, context.Context, Op) (Out, error)) {
	t.Helper()
	var first Out
	for j, st := range stores {
		out, err := run(st, ctx, op)
		if err != nil {
			t.Fatal(err)
		}
		if j == 0 {
			first = out
		} else if out != first {
			t.Fatalf("step %d %+v:\n bbolt %+v\n redis %+v", i, op, first, out)
		}
	}
}

// TestStoresIgnoreFutureBuckets: counts written by a node whose clock is
// far ahead do not block a sender; one bucket ahead (small skew) counts.
func TestStoresIgnoreFutureBuckets(t *testing.T) {
	srv := statetest.Redis(t)
	clk := statetest.NewClock()
	rs := openRedis(t, srv, "future:")
	bs := openBolt(t, clk.Now)
	ctx := context.Background()
	cur := clk.Now().UnixMilli() / ms(rateBucket)
	val := fmt.Sprintf("%d:1:1;%d:50:50", cur+1, cur+40)
	if err := rs.c.Set(ctx, "future:rate/u/x", val, time.Hour).Err(); err != nil {
		t.Fatal(err)
	}
	bs.buffer(clk.Now(), []string{"rate/u/x"}, []*write{{val: val, ttl: time.Hour}})
	for name, st := range map[string]Store{"redis": rs, "bbolt": bs} {
		out, err := st.Rate(ctx, RateOp{Key: "rate/u/x", Now: clk.Now(), Messages: 1, Recipients: 1, MaxMessages: 3})
		if err != nil {
			t.Fatal(err)
		}
		if !out.Allowed || out.Messages != 2 {
			t.Errorf("%s: %+v, want allowed with 2 messages (1 a bucket ahead + this one)", name, out)
		}
	}
}
