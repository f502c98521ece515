package state

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// resident is the share of path's pages in the page cache (mincore).
func resident(t *testing.T, path string) float64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	m, err := unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Munmap(m)
	pg := os.Getpagesize()
	vec := make([]byte, (len(m)+pg-1)/pg)
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&vec[0]))); e != 0 {
		t.Fatal(e)
	}
	in := 0
	for _, v := range vec {
		in += int(v & 1)
	}
	return float64(in) / float64(len(vec))
}

// evict drops path's clean pages from the page cache.
func evict(t *testing.T, path string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		t.Fatal(err)
	}
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		t.Fatal(err)
	}
}

func waitWarm(t *testing.T, b *Bolt, path string) {
	t.Helper()
	for deadline := time.Now().Add(20 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if b.warm.to.Load() >= fi.Size() {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("warmer read %d of %d bytes in 20 s", b.warm.to.Load(), fi.Size())
		}
	}
}

// TestBoltWarmsItsFile: a file whose pages are not in the page cache (as
// after a restart of the machine, or a bulk load) is read into it when the
// store opens, and so is each region the file grows by, so that decisions
// do not wait for the disk in a page fault.
func TestBoltWarmsItsFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "state.db")
	now := time.Now()
	i := 0
	if _, err := LoadBolt(path, 0, func() (Entry, bool) {
		if i == 40_000 {
			return Entry{}, false
		}
		i++
		return Entry{Key: fmt.Sprintf("grey/t/warm/%08d/sender@outside.test/alice@example.com", i*7919%40_000), Value: "1,1,0", ExpiresAt: now.Add(time.Hour)}, true
	}); err != nil {
		t.Fatal(err)
	}
	evict(t, path)
	if r := resident(t, path); r > 0.5 {
		t.Skipf("the page cache kept %.0f%% of the file after FADV_DONTNEED (this file system does not evict): nothing to show", 100*r)
	}
	read0 := BoltTotals().Read
	b, err := OpenBolt(path, BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	waitWarm(t, b, path)
	if fi, _ := os.Stat(path); BoltTotals().Read-read0 < fi.Size() {
		t.Errorf("BoltTotals counted %d bytes read, the file has %d", BoltTotals().Read-read0, fi.Size())
	}
	if r := resident(t, path); r < 0.95 {
		t.Fatalf("after opening, %.0f%% of the file is in the page cache, want all", 100*r)
	}

	// Growth: enough new keys that bbolt extends the file.
	fi0, _ := os.Stat(path)
	ctx := context.Background()
	for n := 0; ; n++ {
		fi, _ := os.Stat(path)
		if fi.Size() > fi0.Size() {
			break
		}
		if n == 200 {
			t.Fatalf("the file did not grow past %d bytes", fi0.Size())
		}
		for k := 0; k < 2000; k++ {
			if _, err := b.Rate(ctx, RateOp{Key: fmt.Sprintf("rate/grow/%d/%d", n, k), Now: now, Messages: 1, Recipients: 1}); err != nil {
				t.Fatal(err)
			}
		}
		if err := b.Flush(); err != nil {
			t.Fatal(err)
		}
	}
	waitWarm(t, b, path)
}
