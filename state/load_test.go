package state

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/mailnode/mailnode/state/statetest"
)

// TestLoadedTripletsDecide: entries made by TripletEntry and loaded in bulk
// (LoadBolt, Redis.Load) are what the Greylister itself stores, and the
// Greylister decides on them as on its own.
func TestLoadedTripletsDecide(t *testing.T) {
	cfg := greyCfg()
	window, expire := cfg.RetryWindow.D(), cfg.Expire.D()
	tr := func(i int) Triplet {
		return Triplet{Client: fmt.Sprintf("203.0.113.%d", i), Sender: fmt.Sprintf("list%d@outside.test", i), Recipient: "alice@example.com"}
	}
	// entries as of now: passed, passed long ago (expired), unpassed
	// after the delay, unpassed within the delay, unpassed past the window.
	entries := func(now time.Time) []Entry {
		return []Entry{
			TripletEntry(tr(1), now.Add(-72*time.Hour), now.Add(-2*time.Hour), 3, window, expire),
			TripletEntry(tr(2), now.Add(-60*24*time.Hour), now.Add(-40*24*time.Hour), 1, window, expire),
			TripletEntry(tr(3), now.Add(-10*time.Minute), time.Time{}, 0, window, expire),
			TripletEntry(tr(4), now.Add(-100*time.Second), time.Time{}, 0, window, expire),
			TripletEntry(tr(5), now.Add(-49*time.Hour), time.Time{}, 0, window, expire),
		}
	}
	check := func(t *testing.T, g *Greylister) {
		expect(t, g, tr(1), "", ReasonPassed)
		expect(t, g, tr(2), greyed300, ReasonNew)
		expect(t, g, tr(3), "", ReasonPassed)
		expect(t, g, tr(4), "450 4.7.1 Greylisted, please try again in 200 seconds", ReasonEarly)
		expect(t, g, tr(5), greyed300, ReasonNew)
	}
	// same: the Greylister's own entry for a triplet first seen 400 s ago
	// and passed now equals TripletEntry's.
	same := func(t *testing.T, st Store, clk *statetest.Clock, g *Greylister, slack time.Duration) {
		t.Helper()
		x := Triplet{Client: "192.0.2.9", Sender: "bob+tag@outside.test", Recipient: "Carol@Example.com"}
		first := clk.Now()
		expect(t, g, x, greyed300, ReasonNew)
		key, _ := GreylistKeys(x)
		want := TripletEntry(x, first, time.Time{}, 0, window, expire)
		got, ok, err := st.Get(context.Background(), key)
		if err != nil || !ok || got.Key != want.Key || got.Value != want.Value || absDur(got.ExpiresAt.Sub(want.ExpiresAt)) > slack {
			t.Fatalf("first attempt stored %+v (%v, %v), TripletEntry makes %+v", got, ok, err, want)
		}
		clk.Add(400 * time.Second)
		expect(t, g, x, "", ReasonPassed)
		want = TripletEntry(x, first, clk.Now(), 1, window, expire)
		got, ok, err = st.Get(context.Background(), key)
		if err != nil || !ok || got.Value != want.Value || absDur(got.ExpiresAt.Sub(want.ExpiresAt)) > slack {
			t.Fatalf("pass stored %+v (%v, %v), TripletEntry makes %+v", got, ok, err, want)
		}
	}

	t.Run("bbolt", func(t *testing.T) {
		clk := statetest.NewClock()
		path := filepath.Join(t.TempDir(), "state.db")
		es := entries(clk.Now())
		i := 0
		n, err := LoadBolt(path, 2, func() (Entry, bool) {
			if i == len(es) {
				return Entry{}, false
			}
			i++
			return es[i-1], true
		})
		if err != nil || n != len(es) {
			t.Fatalf("LoadBolt = %d, %v", n, err)
		}
		b, err := OpenBolt(path, BoltOptions{Clock: clk.Now})
		if err != nil {
			t.Fatal(err)
		}
		defer b.Close()
		for _, e := range es {
			got, ok, err := b.Get(context.Background(), e.Key)
			if err != nil || !ok || got.Key != e.Key || got.Value != e.Value || !got.ExpiresAt.Equal(e.ExpiresAt) {
				t.Fatalf("Get(%s) = %+v, %v, %v; loaded %+v", e.Key, got, ok, err, e)
			}
		}
		g := newGrey(t, cfg, b, clk)
		check(t, g)
		same(t, b, clk, g, 0)
	})
	t.Run("redis", func(t *testing.T) {
		srv := statetest.Redis(t)
		clk := statetest.NewClock()
		clk.Add(time.Since(clk.Now())) // PXAT is absolute: Redis's clock
		r := openRedis(t, srv, "t:")
		es := entries(clk.Now())
		if err := r.Load(context.Background(), es); err != nil {
			t.Fatal(err)
		}
		// The expired entry is not stored at all.
		if _, ok, err := r.Get(context.Background(), es[1].Key); ok || err != nil {
			t.Fatalf("expired entry stored: %v, %v", ok, err)
		}
		for _, e := range []Entry{es[0], es[2], es[3]} {
			got, ok, err := r.Get(context.Background(), e.Key)
			if err != nil || !ok || got.Value != e.Value || absDur(got.ExpiresAt.Sub(e.ExpiresAt)) > 2*time.Second {
				t.Fatalf("Get(%s) = %+v, %v, %v; loaded %+v", e.Key, got, ok, err, e)
			}
		}
		g := newGrey(t, cfg, r, clk)
		check(t, g)
		same(t, r, clk, g, 2*time.Second+400*time.Second)
	})
}

func absDur(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

// TestBoltSweepPass: a pass over a file of several chunks deletes every
// expired entry and nothing else, while decisions go on: an expired
// triplet asked again during the pass is recorded anew and kept.
func TestBoltSweepPass(t *testing.T) {
	clk := statetest.NewClock()
	cfg := greyCfg()
	window, expire := cfg.RetryWindow.D(), cfg.Expire.D()
	now := clk.Now()
	const n = 3*sweepChunk + 123
	tr := func(i int) Triplet {
		return Triplet{Client: fmt.Sprintf("198.51.%d.%d", i/250%250, 1+i%250), Sender: fmt.Sprintf("s%d@outside.test", i), Recipient: "alice@example.com"}
	}
	dead := func(i int) bool { return i%3 != 0 }
	entry := func(i int) Entry {
		if dead(i) {
			return TripletEntry(tr(i), now.Add(-50*24*time.Hour), now.Add(-40*24*time.Hour), 2, window, expire)
		}
		return TripletEntry(tr(i), now.Add(-10*24*time.Hour), now.Add(-24*time.Hour), 2, window, expire)
	}
	path := filepath.Join(t.TempDir(), "state.db")
	i := 0
	if _, err := LoadBolt(path, 1000, func() (Entry, bool) {
		if i == n {
			return Entry{}, false
		}
		i++
		return entry(i - 1), true
	}); err != nil {
		t.Fatal(err)
	}
	b, err := OpenBolt(path, BoltOptions{Clock: clk.Now, SweepInterval: 5 * time.Millisecond, SweepPause: time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	g := newGrey(t, cfg, b, clk)
	// Decisions during the pass: expired ones are new again, live ones pass.
	asked := map[int]bool{}
	for i := 0; i < n; i += 97 {
		if dead(i) {
			expect(t, g, tr(i), greyed300, ReasonNew)
			asked[i] = true
		} else {
			expect(t, g, tr(i), "", ReasonPassed) // refreshes the entry
			asked[i] = true
		}
	}
	count := func() (total, expired int) {
		b.DB().View(func(tx *bolt.Tx) error {
			fileKeys(tx, "", func(_, v []byte) {
				total++
				if _, exp, _ := decodeRec(v); exp.Before(clk.Now()) {
					expired++
				}
			})
			return nil
		})
		return total, expired
	}
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(10 * time.Millisecond) {
		if _, e := count(); e == 0 {
			break
		}
		if time.Now().After(deadline) {
			total, e := count()
			t.Fatalf("after 20 s the file still holds %d expired entries of %d", e, total)
		}
	}
	b.Flush()
	want := 0
	for i := 0; i < n; i++ {
		key, _ := GreylistKeys(tr(i))
		e, ok, err := b.Get(context.Background(), key)
		switch {
		case err != nil:
			t.Fatal(err)
		case !dead(i) || asked[i]:
			want++
			if !ok || (!asked[i] && e.Value != entry(i).Value) {
				t.Fatalf("entry %d: %+v, %v; want it kept", i, e, ok)
			}
		case ok:
			t.Fatalf("expired entry %d kept: %+v", i, e)
		}
	}
	if total, _ := count(); total != want+clientKeys(t, b) {
		t.Fatalf("the file holds %d entries, want %d triplets and the client keys", total, want)
	}
	if err := b.DB().View(func(tx *bolt.Tx) error {
		for err := range tx.Check() {
			return err
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// clientKeys counts the auto-whitelist entries in the file.
func clientKeys(t *testing.T, b *Bolt) int {
	t.Helper()
	n := 0
	b.DB().View(func(tx *bolt.Tx) error {
		fileKeys(tx, PrefixClient, func(_, _ []byte) { n++ })
		return nil
	})
	return n
}
