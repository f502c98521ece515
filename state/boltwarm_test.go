package state

import (
	"context"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// mapCached maps path read-only and returns the mapping and, per page,
// whether it is in the page cache (mincore); unmap ends the mapping.
func mapCached(t *testing.T, path string) (m, cached []byte, unmap func()) {
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
	m, err = unix.Mmap(int(f.Fd()), 0, int(fi.Size()), unix.PROT_READ, unix.MAP_SHARED)
	if err != nil {
		t.Fatal(err)
	}
	unmap = func() { unix.Munmap(m) }
	// No read-ahead when the caller touches a page.
	if err := unix.Madvise(m, unix.MADV_RANDOM); err != nil {
		unmap()
		t.Fatal(err)
	}
	pg := os.Getpagesize()
	cached = make([]byte, (len(m)+pg-1)/pg)
	if _, _, e := unix.Syscall(unix.SYS_MINCORE, uintptr(unsafe.Pointer(&m[0])), uintptr(len(m)), uintptr(unsafe.Pointer(&cached[0]))); e != 0 {
		unmap()
		t.Fatal(e)
	}
	for i := range cached {
		cached[i] &= 1
	}
	return m, cached, unmap
}

// resident is the share of path's pages in the page cache.
func resident(t *testing.T, path string) float64 {
	t.Helper()
	_, cached, unmap := mapCached(t, path)
	defer unmap()
	in := 0
	for _, v := range cached {
		in += int(v)
	}
	return float64(in) / float64(len(cached))
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

// warmFile bulk-loads n triplets into a new file, in an order that is not
// the keys'.
func warmFile(t *testing.T, n int) (path string, now time.Time) {
	t.Helper()
	path = filepath.Join(t.TempDir(), "state.db")
	now = time.Now()
	i := 0
	if _, err := LoadBolt(path, 0, func() (Entry, bool) {
		if i == n {
			return Entry{}, false
		}
		i++
		return Entry{Key: fmt.Sprintf("grey/t/warm/%08d/sender@outside.test/alice@example.com", i*7919%n), Value: "1,1,0", ExpiresAt: now.Add(time.Hour)}, true
	}); err != nil {
		t.Fatal(err)
	}
	return path, now
}

// TestBoltWarmsItsFile: a file whose pages are not in the page cache (as
// after a restart of the machine, or a bulk load) is read into it when the
// store opens, and so is each region the file grows by, so that decisions
// do not wait for the disk in a page fault.
func TestBoltWarmsItsFile(t *testing.T) {
	path, now := warmFile(t, 40_000)
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

// largeFolios is the share of path's pages in the page cache that belong to
// folios larger than one page: it maps the file (no read-ahead), touches
// each cached page, and reads the page's frame from /proc/self/pagemap and
// the frame's flags (compound head or tail) from /proc/kpageflags. It skips
// the test where the frames are hidden (not root).
func largeFolios(t *testing.T, path string) float64 {
	t.Helper()
	m, vec, unmap := mapCached(t, path)
	defer unmap()
	pg := os.Getpagesize()
	pagemap, err := os.Open("/proc/self/pagemap")
	if err != nil {
		t.Skipf("no page map: %v", err)
	}
	defer pagemap.Close()
	kflags, err := os.Open("/proc/kpageflags")
	if err != nil {
		t.Skipf("page frame flags not readable: %v", err)
	}
	defer kflags.Close()
	const present, head, tail = 1 << 63, 1 << 15, 1 << 16 // pagemap; KPF_COMPOUND_HEAD, _TAIL
	first := uintptr(unsafe.Pointer(&m[0])) / uintptr(pg)
	var touched byte
	cached, large := 0, 0
	b := make([]byte, 8)
	for i, v := range vec {
		if v == 0 {
			continue
		}
		touched += m[i*pg]
		if _, err := pagemap.ReadAt(b, int64(first+uintptr(i))*8); err != nil {
			t.Fatal(err)
		}
		e := binary.LittleEndian.Uint64(b)
		pfn := e & (1<<55 - 1)
		if e&present == 0 {
			continue
		}
		if pfn == 0 {
			t.Skip("page frames hidden from this user (needs CAP_SYS_ADMIN)")
		}
		if _, err := kflags.ReadAt(b, int64(pfn)*8); err != nil {
			t.Fatal(err)
		}
		cached++
		if binary.LittleEndian.Uint64(b)&(head|tail) != 0 {
			large++
		}
	}
	runtime.KeepAlive(touched)
	if cached == 0 {
		t.Fatalf("none of %s's pages mapped", path)
	}
	return float64(large) / float64(cached)
}

// TestBoltWarmsInSinglePages: the warm-up read leaves the file in the page
// cache in folios of one page. Read ahead, the kernel caches a file read
// from start to end in large folios (Linux 6.18 on ext4: ~380 pages each),
// and a commit's 4 KiB write into one of them walks every block of the
// folio, as its writeback does: 8,000 random keys into a 10 M file took
// 353-389 ms of CPU a transaction, against 220-223 ms with the same file in
// single pages (docs/scaling.md). Two things are needed: the warm-up's own handle
// reads without read-ahead (readSmall), and it reads the file's head before
// bbolt opens it, since bbolt's first read, through a handle that reads
// ahead, marks folios that make any later read read ahead (without the
// head, 89-92 % of this 48 MB file ended in large folios; without
// readSmall, 89 %). The file must be larger than that first read-ahead.
func TestBoltWarmsInSinglePages(t *testing.T) {
	path, _ := warmFile(t, 200_000)
	// The control: the kernel forms large folios for this file when it is
	// read as any program reads it.
	evict(t, path)
	if r := resident(t, path); r > 0.5 {
		t.Skipf("the page cache kept %.0f%% of the file after FADV_DONTNEED: nothing to show", 100*r)
	}
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, warmChunk)
	for off := int64(0); ; off += int64(len(buf)) {
		if n, _ := f.ReadAt(buf, off); n == 0 {
			break
		}
	}
	f.Close()
	if l := largeFolios(t, path); l < 0.5 {
		t.Skipf("read from start to end, %.0f%% of the file was cached in large folios: this kernel or file system keeps single pages, nothing to show", 100*l)
	} else {
		t.Logf("read ahead: %.0f%% of the file in large folios", 100*l)
	}

	evict(t, path)
	b, err := OpenBolt(path, BoltOptions{})
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	waitWarm(t, b, path)
	if r := resident(t, path); r < 0.95 {
		t.Fatalf("after opening, %.0f%% of the file is in the page cache, want all", 100*r)
	}
	if l := largeFolios(t, path); l > 0.01 {
		t.Fatalf("after the store's warm-up read, %.0f%% of the file is cached in large folios, want single pages", 100*l)
	}
}
