package state

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailnode/mailnode/inventory"
	"github.com/mailnode/mailnode/state/statetest"
)

// node is what one policyd holds: its own connection pool, its own clock
// (here both read one fake time), its own Greylister and RateLimiter.
type node struct {
	g *Greylister
	r *RateLimiter
}

func newNode(t *testing.T, srv *statetest.Process, clk *statetest.Clock, rl *inventory.Ratelimit) node {
	st := openRedis(t, srv, "group1:")
	return node{g: newGrey(t, greyCfg(), st, clk), r: newRate(t, rl, st, clk)}
}

// TestRedisTwoNodes: two nodes share one Redis. A triplet greylisted through
// one passes through the other after the delay; a user's messages through
// both count against one limit.
func TestRedisTwoNodes(t *testing.T) {
	srv := statetest.Redis(t)
	clk := statetest.NewClock()
	rl := &inventory.Ratelimit{MessagesPerHour: 10}
	mx1, mx2 := newNode(t, srv, clk, rl), newNode(t, srv, clk, rl)

	expect(t, mx1.g, tr1, greyed300, ReasonNew)
	clk.Add(120 * time.Second)
	expect(t, mx2.g, tr1, "450 4.7.1 Greylisted, please try again in 180 seconds", ReasonEarly)
	clk.Add(180 * time.Second)
	expect(t, mx2.g, tr1, "", ReasonPassed)
	expect(t, mx1.g, tr1, "", ReasonPassed)

	// Messages alternate between the nodes, concurrently: 10 of 16 pass.
	var wg sync.WaitGroup
	var mu sync.Mutex
	granted := 0
	for i := 0; i < 16; i++ {
		n := []node{mx1, mx2}[i%2]
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			res, err := n.r.Check(context.Background(), alice, fmt.Sprintf("mx%d-msg%d", i%2+1, i))
			if err != nil {
				t.Error(err)
				return
			}
			if res.Action == "" {
				mu.Lock()
				granted++
				mu.Unlock()
			} else if res.Action != aliceOver {
				t.Errorf("action %q", res.Action)
			}
		}(i)
	}
	wg.Wait()
	if granted != 10 {
		t.Fatalf("%d messages passed through two nodes, want 10 (one shared limit)", granted)
	}
	res := rcpt(t, mx1.r, alice, "one-more", aliceOver, ReasonOverMessages)
	if res.Outcome.Messages != 10 {
		t.Fatalf("shared count = %d", res.Outcome.Messages)
	}
}

// TestRedisKeysExpire: Redis drops keys by itself (TTL), no sweeper needed.
func TestRedisKeysExpire(t *testing.T) {
	srv := statetest.Redis(t)
	st := openRedis(t, srv, "ttl:")
	ctx := context.Background()
	now := time.Now()
	if _, err := st.Greylist(ctx, GreyOp{Triplet: "grey/t/x", Client: "grey/c/x", Now: now,
		Delay: time.Second, RetryWindow: 2 * time.Second, Expire: time.Hour}); err != nil {
		t.Fatal(err)
	}
	e, ok, err := st.Get(ctx, "grey/t/x")
	if err != nil || !ok {
		t.Fatalf("Get: %v %v", ok, err)
	}
	if left := time.Until(e.ExpiresAt); left <= 0 || left > 2*time.Second+expiryMargin+time.Second {
		t.Fatalf("TTL of a new triplet = %s, want retry window + margin", left)
	}
	n := 0
	if err := st.Scan(ctx, "grey/", func(e Entry) error { n++; return nil }); err != nil || n != 1 {
		t.Fatalf("Scan: %d entries, %v", n, err)
	}
	if ok, err := st.Delete(ctx, "grey/t/x"); !ok || err != nil {
		t.Fatalf("Delete: %v %v", ok, err)
	}
	if _, ok, _ := st.Get(ctx, "grey/t/x"); ok {
		t.Fatal("still there after Delete")
	}
}

// TestStoreFailureIsAnError: when Redis goes away, Check returns an error
// and no action — the caller answers 4xx or nothing, never a pass.
func TestStoreFailureIsAnError(t *testing.T) {
	srv := statetest.Redis(t)
	clk := statetest.NewClock()
	st, err := OpenRedis(context.Background(), srv.URL(), RedisOptions{Timeout: 200 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	g := newGrey(t, greyCfg(), st, clk)
	r := newRate(t, &inventory.Ratelimit{MessagesPerHour: 5}, st, clk)
	expect(t, g, tr1, greyed300, ReasonNew)
	srv.Stop()
	res, err := g.Check(context.Background(), tr1)
	if err == nil || res.Action != "" || !strings.HasPrefix(err.Error(), "state: redis:") {
		t.Fatalf("greylist with Redis down: %+v, %v", res, err)
	}
	rres, err := r.Check(context.Background(), alice, "m")
	if err == nil || rres.Action != "" {
		t.Fatalf("rate with Redis down: %+v, %v", rres, err)
	}
	if _, err := OpenRedis(context.Background(), srv.URL(), RedisOptions{Timeout: 200 * time.Millisecond}); err == nil {
		t.Fatal("OpenRedis to a stopped server succeeded")
	}

	// bbolt: after Close, and when writes lag behind MaxLag.
	b, err := OpenBolt(t.TempDir()+"/s.db", BoltOptions{Clock: clk.Now, FlushInterval: time.Hour, MaxLag: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	g = newGrey(t, greyCfg(), b, clk)
	expect(t, g, tr1, greyed300, ReasonNew) // buffered, not committed (flush every hour)
	time.Sleep(60 * time.Millisecond)
	// An early retry writes nothing: it is answered from what is stored.
	expect(t, g, tr1, greyed300, ReasonEarly)
	tr2 := Triplet{Client: tr1.Client, Sender: "other@outside.test", Recipient: tr1.Recipient}
	if _, err := g.Check(context.Background(), tr2); !errors.Is(err, ErrBehind) {
		t.Fatalf("lagging bbolt, new triplet: err = %v, want ErrBehind", err)
	}
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	expect(t, g, tr2, greyed300, ReasonNew)
	b.Close()
	if _, err := g.Check(context.Background(), tr1); !errors.Is(err, ErrClosed) {
		t.Fatalf("closed bbolt: err = %v", err)
	}
}
