package state

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"

	"github.com/mailnode/mailnode/state/statetest"
)

func TestBoltPersistsAcrossReopen(t *testing.T) {
	clk := statetest.NewClock()
	path := filepath.Join(t.TempDir(), "state.db")
	b, err := OpenBolt(path, BoltOptions{Clock: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	g := newGrey(t, greyCfg(), b, clk)
	expect(t, g, tr1, greyed300, ReasonNew)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	// A second opener waits for the lock and gives up with a clear error.
	b, err = OpenBolt(path, BoltOptions{Clock: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := OpenBolt(path, BoltOptions{LockTimeout: 100 * time.Millisecond}); err == nil || !strings.Contains(err.Error(), "in use") {
		t.Fatalf("second OpenBolt: %v", err)
	}
	g = newGrey(t, greyCfg(), b, clk)
	clk.Add(300 * time.Second)
	expect(t, g, tr1, "", ReasonPassed)
	b.Close()
}

func TestBoltScanDeleteSweep(t *testing.T) {
	clk := statetest.NewClock()
	b := openBoltWith(t, BoltOptions{Clock: clk.Now, SweepInterval: time.Millisecond})
	ctx := context.Background()
	g := newGrey(t, greyCfg(), b, clk)
	for i := 0; i < 3; i++ {
		expect(t, g, Triplet{Client: "198.51.100.1", Sender: fmt.Sprintf("s%d@x.test", i), Recipient: "a@example.com"}, greyed300, ReasonNew)
	}
	count := func() int {
		n := 0
		if err := b.Scan(ctx, PrefixTriplet, func(Entry) error { n++; return nil }); err != nil {
			t.Fatal(err)
		}
		return n
	}
	if n := count(); n != 3 { // buffered entries are seen
		t.Fatalf("Scan before flush: %d", n)
	}
	b.Flush()
	if n := count(); n != 3 {
		t.Fatalf("Scan after flush: %d", n)
	}
	if ok, err := b.Delete(ctx, "grey/t/198.51.100.0/24/s0@x.test/a@example.com"); !ok || err != nil {
		t.Fatalf("Delete: %v %v", ok, err)
	}
	if n := count(); n != 2 {
		t.Fatalf("Scan after Delete: %d", n)
	}
	// Past the retry window (plus margin) the sweeper deletes unpassed triplets from the file.
	clk.Add(48*time.Hour + 2*time.Minute)
	if n := count(); n != 0 {
		t.Fatalf("Scan shows %d expired entries", n)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		var n int
		b.DB().View(func(tx *bolt.Tx) error { n = fileKeyN(tx); return nil })
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sweeper left %d keys in the file", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// The crash test re-executes the test binary as a writer (crashChild) that
// hammers a bbolt file with greylist and rate updates and reports each
// acknowledged update on stdout. The parent SIGKILLs it mid-run, reopens the
// file, runs bbolt's consistency check and requires every update
// acknowledged more than crashBound before the kill to be there.
const (
	crashChildEnv = "MAILNODE_STATE_CRASH_CHILD"
	crashBound    = time.Second // BoltOptions.MaxLag default: the documented window
)

func crashChild() {
	path, round := os.Getenv(crashChildEnv), os.Getenv("MAILNODE_STATE_CRASH_ROUND")
	b, err := OpenBolt(path, BoltOptions{})
	if err != nil {
		fmt.Fprintln(os.Stderr, "child:", err)
		os.Exit(2)
	}
	var seq atomic.Int64
	var mu sync.Mutex
	out := func(s string) {
		mu.Lock()
		os.Stdout.WriteString(s)
		mu.Unlock()
	}
	ctx := context.Background()
	for w := 0; w < 4; w++ {
		go func() {
			for {
				i := seq.Add(1)
				now := time.Now()
				_, err := b.Greylist(ctx, GreyOp{
					Triplet: fmt.Sprintf("grey/t/crash/%s/%d", round, i), Client: "grey/c/crash",
					Now: now, Delay: time.Minute, RetryWindow: time.Hour, Expire: 24 * time.Hour, AWLAfter: 5,
				})
				if err != nil {
					out("E " + err.Error() + "\n")
					time.Sleep(time.Millisecond)
					continue
				}
				out("g " + strconv.FormatInt(i, 10) + "\n")
				if i%4 == 0 {
					if _, err := b.Rate(ctx, RateOp{Key: "rate/u/crash" + round, Now: now, Messages: 1, Recipients: 1}); err == nil {
						out("r " + strconv.FormatInt(i, 10) + "\n")
					}
				}
			}
		}()
	}
	select {} // until killed
}

type ack struct {
	kind string
	seq  int64
	at   time.Time // when the parent read it: never before the child acknowledged it
}

func runCrashRound(t *testing.T, path string, round int, runFor time.Duration) (acks []ack, killed time.Time) {
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), crashChildEnv+"="+path, "MAILNODE_STATE_CRASH_ROUND="+strconv.Itoa(round))
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	done := make(chan struct{})
	go func() {
		defer close(done)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			now := time.Now()
			f := strings.SplitN(sc.Text(), " ", 2)
			if f[0] == "E" {
				t.Errorf("child: %s", f[1])
				continue
			}
			n, _ := strconv.ParseInt(f[1], 10, 64)
			mu.Lock()
			acks = append(acks, ack{f[0], n, now})
			mu.Unlock()
		}
	}()
	time.Sleep(runFor)
	mu.Lock()
	killed = time.Now()
	cmd.Process.Signal(syscall.SIGKILL)
	mu.Unlock()
	<-done
	cmd.Wait()
	return acks, killed
}

func TestBoltCrash(t *testing.T) {
	if testing.Short() {
		t.Skip("crash test runs a writer process for seconds")
	}
	path := filepath.Join(t.TempDir(), "state.db")
	for round, runFor := range []time.Duration{1300 * time.Millisecond, 1750 * time.Millisecond, 1500 * time.Millisecond} {
		acks, killed := runCrashRound(t, path, round, runFor)
		db, err := bolt.Open(path, 0o600, &bolt.Options{Timeout: time.Second})
		if err != nil {
			t.Fatalf("round %d: reopen after SIGKILL: %v", round, err)
		}
		var stored map[string]bool
		var rateVal string
		err = db.View(func(tx *bolt.Tx) error {
			for err := range tx.Check() {
				t.Errorf("round %d: bbolt consistency: %v", round, err)
			}
			stored = map[string]bool{}
			pfx := fmt.Sprintf("grey/t/crash/%d/", round)
			fileKeys(tx, pfx, func(k, _ []byte) { stored[strings.TrimPrefix(string(k), pfx)] = true })
			if v := txTrees(tx).get([]byte(fmt.Sprintf("rate/u/crash%d", round))); v != nil {
				rateVal, _, _ = decodeRec(v)
			}
			return nil
		})
		db.Close()
		if err != nil {
			t.Fatal(err)
		}
		var nGrey, lost, rateAcked, rateSafe int
		var oldestLost time.Duration
		for _, a := range acks {
			age := killed.Sub(a.at)
			switch a.kind {
			case "g":
				nGrey++
				if !stored[strconv.FormatInt(a.seq, 10)] {
					lost++
					if age > oldestLost {
						oldestLost = age
					}
					if age > crashBound {
						t.Errorf("round %d: update %d acknowledged %s before the kill is lost (bound %s)", round, a.seq, age, crashBound)
					}
				}
			case "r":
				rateAcked++
				if age > crashBound {
					rateSafe++
				}
			}
		}
		var counted int
		for _, bk := range parseBuckets(rateVal) {
			counted += int(bk.m)
		}
		if counted < rateSafe || counted > rateAcked {
			t.Errorf("round %d: rate counter %d, want between %d (acked > %s before kill) and %d (all acked)", round, counted, rateSafe, crashBound, rateAcked)
		}
		if nGrey < 1000 {
			t.Errorf("round %d: only %d updates acknowledged: not a load run", round, nGrey)
		}
		t.Logf("round %d: killed after %s; %d greylist updates acknowledged, %d lost, oldest lost acknowledged %s before the kill (bound %s); rate %d/%d kept",
			round, runFor, nGrey, lost, oldestLost.Round(time.Millisecond), crashBound, counted, rateAcked)
	}
	// The store opens on the crashed file and works.
	clk := statetest.NewClock()
	b, err := OpenBolt(path, BoltOptions{Clock: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	g := newGrey(t, greyCfg(), b, clk)
	expect(t, g, tr1, greyed300, ReasonNew)
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
}

// TestBoltCommitPace: commits are timed from the oldest buffered update, so
// with commits of 90 ms and an interval of 100 ms (the shape of a file of
// ten million entries under thousands of new triplets a second: 150 ms and
// 200 ms) an update is at most 190 ms old when its commit ends, short of the
// writers' brake at MaxLag/2 (240 ms), and no decision waits. Timed from the
// end of the last commit, an update could wait a commit, the interval and
// its own commit (280 ms), and the end of every commit met the brake.
func TestBoltCommitPace(t *testing.T) {
	b := openBoltWith(t, BoltOptions{
		FlushInterval: 100 * time.Millisecond, MaxLag: 480 * time.Millisecond, commitDelay: 90 * time.Millisecond,
		noLow: true, // the pace only: a busy test machine could delay a commit at nice +10 (boltprio.go)
	})
	ctx := context.Background()
	braked0 := BoltTotals().Braked
	var wg sync.WaitGroup
	var ops atomic.Int64
	end := time.Now().Add(1500 * time.Millisecond)
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; time.Now().Before(end); i++ {
				_, err := b.Greylist(ctx, GreyOp{
					Triplet: fmt.Sprintf("grey/t/pace/%d/%d", w, i), Client: "grey/c/pace",
					Now: time.Now(), Delay: time.Minute, RetryWindow: time.Hour, Expire: 24 * time.Hour,
				})
				if err != nil {
					t.Error(err)
					return
				}
				ops.Add(1)
				time.Sleep(time.Millisecond)
			}
		}()
	}
	wg.Wait()
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	var stored int
	b.DB().View(func(tx *bolt.Tx) error { stored = fileKeyN(tx); return nil })
	if stored < int(ops.Load()) || ops.Load() < 100 {
		t.Fatalf("%d operations, %d keys in the file", ops.Load(), stored)
	}
	if n := BoltTotals().Braked - braked0; n != 0 {
		t.Errorf("%d of %d operations waited at the writers' brake", n, ops.Load())
	}
}

// TestBoltDropsRefreshesWhileBehind: while the disk is behind, a pass that
// would only push back its entry's expiry is answered at once and its write
// dropped; an update that matters (a new triplet) waits at the brake instead.
func TestBoltDropsRefreshesWhileBehind(t *testing.T) {
	clk := statetest.NewClock()
	b := openBoltWith(t, BoltOptions{Clock: clk.Now, FlushInterval: time.Hour, MaxLag: 200 * time.Millisecond})
	cfg := greyCfg()
	cfg.AutoWhitelistAfter = 0
	g := newGrey(t, cfg, b, clk)
	ctx := context.Background()
	tk, _ := g.Keys(tr1)
	c0 := BoltTotals()
	counts := func() (dropped, braked int64) {
		c := BoltTotals()
		return c.Dropped - c0.Dropped, c.Braked - c0.Braked
	}
	expect(t, g, tr1, greyed300, ReasonNew)
	clk.Add(300 * time.Second)
	expect(t, g, tr1, "", ReasonPassed)
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	clk.Add(2 * time.Hour) // the next pass refreshes the entry
	stored, _, _ := b.Get(ctx, tk)

	// Behind: an update buffered and not committed for over MaxLag/2.
	tr2 := Triplet{Client: "203.0.113.9", Sender: "a@outside.test", Recipient: "alice@example.com"}
	expect(t, g, tr2, greyed300, ReasonNew)
	time.Sleep(110 * time.Millisecond)
	res := expect(t, g, tr1, "", ReasonPassed)
	if res.Outcome.Passes != 2 {
		t.Errorf("passes = %d, want 2 in the answer", res.Outcome.Passes)
	}
	if n, w := counts(); n != 1 || w != 0 {
		t.Fatalf("refresh while behind: %d dropped, %d waited at the brake; want 1, 0", n, w)
	}
	if e, _, _ := b.Get(ctx, tk); e.Value != stored.Value {
		t.Fatalf("dropped refresh stored: %q -> %q", stored.Value, e.Value)
	}

	// A new triplet waits for the disk (the brake starts a commit) and is kept.
	tr3 := Triplet{Client: "203.0.113.10", Sender: "b@outside.test", Recipient: "alice@example.com"}
	expect(t, g, tr3, greyed300, ReasonNew)
	if _, w := counts(); w == 0 {
		t.Fatal("a new triplet while behind did not wait at the brake")
	}
	// Caught up: the refresh is written.
	expect(t, g, tr1, "", ReasonPassed)
	if e, _, _ := b.Get(ctx, tk); !strings.HasSuffix(e.Value, ",2") {
		t.Fatalf("refresh after catching up: %q", e.Value)
	}
	if n, _ := counts(); n != 1 {
		t.Fatalf("%d refreshes dropped after catching up, want the one before", n)
	}
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, tr := range []Triplet{tr2, tr3} {
		expect(t, g, tr, greyed300, ReasonEarly)
	}
}

// where says which of the file's trees hold key: "kept", "brief", both
// ("kept+brief") or none ("").
func where(t *testing.T, b *Bolt, key string) string {
	t.Helper()
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	var in []string
	b.DB().View(func(tx *bolt.Tx) error {
		tr := txTrees(tx)
		if tr.kept.Get([]byte(key)) != nil {
			in = append(in, "kept")
		}
		if tr.brief.Get([]byte(key)) != nil {
			in = append(in, "brief")
		}
		return nil
	})
	return strings.Join(in, "+")
}

// TestBoltBriefTree: a triplet waiting for its retry and a rate counter
// live in the brief tree, a passed triplet and a client's count in the kept
// tree; a key moves as its entry changes and lives in one tree at a time,
// a deletion leaves neither, and a file written before the brief tree (every
// key in the kept tree) decides as before and moves its entries as they are
// written.
func TestBoltBriefTree(t *testing.T) {
	clk := statetest.NewClock()
	path := filepath.Join(t.TempDir(), "state.db")
	cfg := greyCfg()
	tk, ck := GreylistKeys(tr1)
	// The old layout: one tree, holding a triplet that waits for its retry.
	old := TripletEntry(tr1, clk.Now(), clk.Now(), 0, cfg.RetryWindow.D(), cfg.Expire.D())
	done := false
	if _, err := LoadBolt(path, 0, func() (Entry, bool) {
		if done {
			return Entry{}, false
		}
		done = true
		return old, true
	}); err != nil {
		t.Fatal(err)
	}
	b, err := OpenBolt(path, BoltOptions{Clock: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	g := newGrey(t, cfg, b, clk)
	if w := where(t, b, tk); w != "kept" {
		t.Fatalf("loaded triplet in %q, want kept", w)
	}
	clk.Add(100 * time.Second)
	expect(t, g, tr1, "450 4.7.1 Greylisted, please try again in 200 seconds", ReasonEarly)
	clk.Add(48*time.Hour + 2*time.Minute) // past its retry window: new again
	expect(t, g, tr1, greyed300, ReasonNew)
	if w := where(t, b, tk); w != "brief" {
		t.Fatalf("triplet waiting for its retry in %q, want brief", w)
	}
	clk.Add(300 * time.Second)
	expect(t, g, tr1, "", ReasonPassed)
	if w := where(t, b, tk); w != "kept" {
		t.Fatalf("passed triplet in %q, want kept", w)
	}
	if w := where(t, b, ck); w != "kept" {
		t.Fatalf("client's count in %q, want kept", w)
	}
	clk.Add(36 * 24 * time.Hour) // expired: new again
	expect(t, g, tr1, greyed300, ReasonNew)
	if w := where(t, b, tk); w != "brief" {
		t.Fatalf("triplet new again in %q, want brief", w)
	}
	ctx := context.Background()
	if _, err := b.Rate(ctx, RateOp{Key: "rate/u/x", Now: clk.Now(), Messages: 1, Recipients: 1, MaxMessages: 10}); err != nil {
		t.Fatal(err)
	}
	if w := where(t, b, "rate/u/x"); w != "brief" {
		t.Fatalf("rate counter in %q, want brief", w)
	}
	// Both trees are listed (the client's count has expired), and a
	// deletion leaves neither.
	var listed []string
	if err := b.Scan(ctx, "", func(e Entry) error { listed = append(listed, e.Key); return nil }); err != nil {
		t.Fatal(err)
	}
	want := []string{tk, "rate/u/x"}
	sort.Strings(listed)
	sort.Strings(want)
	if !slices.Equal(listed, want) {
		t.Fatalf("Scan lists %q, want %q", listed, want)
	}
	for _, k := range want {
		if ok, err := b.Delete(ctx, k); err != nil || !ok {
			t.Fatalf("Delete(%s) = %v, %v", k, ok, err)
		}
		if w := where(t, b, k); w != "" {
			t.Fatalf("deleted %s still in %q", k, w)
		}
	}
}

// TestBoltNewTripletsWriteTheBriefTree: a commit of new triplets on a file
// whose kept tree holds many passed ones rewrites pages of the brief tree
// only: with 2,000 new triplets and 200,000 kept entries, one tree would
// rewrite a page or more for nearly each of them.
func TestBoltNewTripletsWriteTheBriefTree(t *testing.T) {
	clk := statetest.NewClock()
	path := filepath.Join(t.TempDir(), "state.db")
	cfg := greyCfg()
	tr := func(i int, who string) Triplet {
		return Triplet{Client: fmt.Sprintf("10.%d.%d.1", i/250%250, i%250), Sender: fmt.Sprintf("%s%d@outside.test", who, i), Recipient: "alice@example.com"}
	}
	const kept, fresh = 200_000, 2_000
	i := 0
	if _, err := LoadBolt(path, 0, func() (Entry, bool) {
		if i == kept {
			return Entry{}, false
		}
		i++
		return TripletEntry(tr(i, "k"), clk.Now().Add(-48*time.Hour), clk.Now().Add(-time.Hour), 3, cfg.RetryWindow.D(), cfg.Expire.D()), true
	}); err != nil {
		t.Fatal(err)
	}
	b, err := OpenBolt(path, BoltOptions{Clock: clk.Now, FlushInterval: time.Hour, MaxLag: 2 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	g := newGrey(t, cfg, b, clk)
	// Pages a commit allocates: every page it rewrites (copy on write),
	// the free list and the meta page's are not counted.
	writes := func() int64 { st := b.DB().Stats(); return st.TxStats.GetPageAlloc() / int64(b.pageSize) }
	before := writes()
	for i := range fresh {
		// Each next to kept ones, scattered over the whole tree.
		expect(t, g, tr(i*(kept/fresh), "n"), greyed300, ReasonNew)
	}
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	written := writes() - before
	t.Logf("%d new triplets on %d kept entries: %d pages written", fresh, kept, written)
	if written > fresh/10 {
		t.Fatalf("a commit of %d new triplets wrote %d pages: they did not go to the brief tree", fresh, written)
	}
}
