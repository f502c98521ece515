package state

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/mailnode/mailnode/state/statetest"
)

// A transaction opened before a commit is not lent to a read that looked at
// the buffer after the commit ended: the read would miss what the commit
// moved from the buffer to the file.
func TestReadPoolLendsOnlyCurrentTransactions(t *testing.T) {
	p := &readPool{gen: 3, idle: []*pooledTx{{gen: 3}}}
	if got := p.get(4); got != nil {
		t.Fatalf("a read after commit 4 borrowed a transaction of commit 3")
	}
	got := p.get(3)
	if got == nil {
		t.Fatalf("a read after commit 3 found no transaction")
	}
	if p.get(3) != nil {
		t.Fatalf("one transaction lent twice")
	}
	p.gen = 4
	p.put(got) // returned after the next commit: retired, not lent again
	if len(p.idle) != 0 || len(p.retired) != 1 {
		t.Fatalf("a stale transaction went back idle: idle %d retired %d", len(p.idle), len(p.retired))
	}
}

// Rate counts are read-modify-write steps: a read through a transaction
// that misses a commit loses increments. Eight writers on 4,096 keys, with
// commits back to back, must lose none, and the reads that went to the
// file must have borrowed transactions.
func TestBoltBorrowedReadsLoseNoUpdate(t *testing.T) {
	clk := statetest.NewClock()
	// The idle transactions, opened before a commit, stay in the pool for
	// a millisecond after it: reads in between must not borrow them.
	b := openBoltWith(t, BoltOptions{Clock: clk.Now, poolDelay: time.Millisecond})
	ctx := context.Background()
	const workers, keys, commitsWanted = 8, 4096, 150
	var counts [keys]atomic.Int64
	stop := make(chan struct{})
	flushed := make(chan error, 1)
	go func() {
		defer close(stop)
		deadline := time.Now().Add(30 * time.Second)
		for n := 0; n < commitsWanted && time.Now().Before(deadline); n++ {
			if err := b.Flush(); err != nil {
				flushed <- err
				return
			}
			time.Sleep(time.Millisecond) // the writers read between commits
		}
		flushed <- nil
	}()
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				k := (w*7919 + i*31) % keys
				if _, err := b.Rate(ctx, RateOp{Key: fmt.Sprintf("rate:k%d", k), Now: clk.Now(), Messages: 1}); err != nil {
					t.Error(err)
					return
				}
				counts[k].Add(1)
			}
		}()
	}
	wg.Wait()
	if err := <-flushed; err != nil {
		t.Fatal(err)
	}
	for k := range keys {
		out, err := b.Rate(ctx, RateOp{Key: fmt.Sprintf("rate:k%d", k), Now: clk.Now()})
		if err != nil {
			t.Fatal(err)
		}
		if want := int(counts[k].Load()); out.Messages != want {
			t.Errorf("rate:k%d counts %d messages, want %d", k, out.Messages, want)
		}
	}
	b.mu.Lock()
	commits := b.gen
	b.mu.Unlock()
	if commits < commitsWanted/2 || b.rp.lent.Load() < 1000 {
		t.Errorf("%d commits, %d reads borrowed: the test did not read through borrowed transactions between commits", commits, b.rp.lent.Load())
	}
	t.Logf("%d commits, %d reads borrowed, %d opened their own", commits, b.rp.lent.Load(), b.rp.missed.Load())
}

// With the file mapped small, the file outgrows its mapping while
// readers borrow transactions: bbolt must remap, which waits for every open
// read transaction. The pool must have stopped lending and closed its own
// before such a commit, or the commit (and every writer behind it) would
// wait for ever.
func TestBoltRemapWhileLending(t *testing.T) {
	clk := statetest.NewClock()
	path := filepath.Join(t.TempDir(), "state.db")
	const mapSize = 8 << 20
	b, err := OpenBolt(path, BoltOptions{Clock: clk.Now, FlushInterval: 2 * time.Millisecond, mapSize: mapSize})
	if err != nil {
		t.Fatal(err)
	}
	// Not closed when the writes stall: Close would wait for them too.
	stop := make(chan struct{})
	var readers sync.WaitGroup
	var reads atomic.Int64
	for r := range 4 {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for i := 0; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := b.read(fmt.Sprintf("big:%d:%d", r, i%500), "absent"); err != nil {
					t.Error(err)
					return
				}
				reads.Add(1)
			}
		}()
	}
	// About 24 MiB of values, in commits of 40 keys: three times the mapping.
	big := strings.Repeat("v", 1500)
	done := make(chan error, 1)
	go func() {
		for i := range 16000 {
			k := fmt.Sprintf("big:%d:%d", i%4, i)
			b.buffer(clk.Now(), []string{k}, []*write{{val: big, ttl: time.Hour}})
			if i%40 == 39 {
				if err := b.Flush(); err != nil {
					done <- err
					return
				}
			}
		}
		done <- b.Flush()
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(time.Minute):
		buf := make([]byte, 1<<20)
		t.Fatalf("the writes did not end (a commit waiting for a lent transaction?):\n%s", buf[:runtime.Stack(buf, true)])
	}
	close(stop)
	readers.Wait()
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Size() <= mapSize {
		t.Fatalf("the file is %d bytes: it never outgrew the %d-byte mapping", fi.Size(), mapSize)
	}
	if b.rp.lent.Load() == 0 || b.rp.directCommits.Load() == 0 {
		t.Fatalf("lent %d, commits with lending stopped %d: both should happen", b.rp.lent.Load(), b.rp.directCommits.Load())
	}
	vals, err := b.read("big:3:15999", "big:0:0")
	if err != nil || vals[0] != big || vals[1] != big {
		t.Fatalf("after the remap: %d, %d bytes read, %v", len(vals[0]), len(vals[1]), err)
	}
	if err := b.Close(); err != nil {
		t.Fatal(err)
	}
	t.Logf("file %d MiB, %d reads (%d borrowed), %d commits with lending stopped", fi.Size()>>20, reads.Load(), b.rp.lent.Load(), b.rp.directCommits.Load())
}

// Where the address space is limited (RLIMIT_AS) the file cannot be mapped
// at poolMapSize: the store opens all the same, mapped at the file's size,
// and reads open their own transactions.
func TestBoltOpensWithoutRoomForTheMapping(t *testing.T) {
	if poolMapSize == 0 {
		t.Skip("no lending on this platform")
	}
	status, err := os.ReadFile("/proc/self/status")
	if err != nil {
		t.Skip(err)
	}
	var vmKB int64
	for _, line := range strings.Split(string(status), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmSize:"); ok {
			fmt.Sscan(rest, &vmKB)
		}
	}
	if vmKB == 0 {
		t.Skip("no VmSize in /proc/self/status")
	}
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_AS, &old); err != nil {
		t.Skip(err)
	}
	limit := syscall.Rlimit{Cur: uint64(vmKB)<<10 + 4<<30, Max: old.Max}
	if limit.Cur >= old.Cur || limit.Cur >= uint64(poolMapSize) {
		t.Skipf("address space already limited to %d", old.Cur)
	}
	if err := syscall.Setrlimit(syscall.RLIMIT_AS, &limit); err != nil {
		t.Skip(err)
	}
	clk := statetest.NewClock()
	path := filepath.Join(t.TempDir(), "state.db")
	b, err := OpenBolt(path, BoltOptions{Clock: clk.Now})
	restore := syscall.Setrlimit(syscall.RLIMIT_AS, &old)
	if restore != nil {
		t.Fatalf("restoring RLIMIT_AS: %v", restore)
	}
	if err != nil {
		t.Fatalf("OpenBolt with %d MiB of address space to spare: %v", 4<<10, err)
	}
	defer b.Close()
	if b.mapSize != 0 {
		t.Fatalf("mapSize %d: the fallback did not happen", b.mapSize)
	}
	b.buffer(clk.Now(), []string{"k"}, []*write{{val: "v", ttl: time.Hour}})
	if err := b.Flush(); err != nil {
		t.Fatal(err)
	}
	vals, err := b.read("k")
	if err != nil || vals[0] != "v" {
		t.Fatalf("read %q, %v", vals, err)
	}
	if b.rp.lent.Load() != 0 {
		t.Fatalf("%d reads borrowed a transaction with the file mapped at its size", b.rp.lent.Load())
	}
}
