package state

import (
	"os"
	"sync/atomic"
	"time"
)

// Keeping the file's pages in memory.
//
// Decisions read the bbolt file through its mapping. A page that is not in
// the page cache, or only partly valid there, is read from the disk inside
// the decision's page fault, queued behind whatever the disk is writing for
// the last commit: policyd at 5,000 decisions/s on a 10 M file took 90 such
// faults a second, each waiting in the kernel for a read (perf:
// folio_wait_bit_common under filemap_read_folio, from bbolt's page lookups
// in decisions). The file had been written by a bulk load; after a restart
// of the machine none of it is in the cache, and every decision faults.
//
// So the store reads its file once from start to end when it opens, in the
// background, and after each commit reads what the file grew by (bbolt
// extends it and writes single pages into the new region, which leaves
// partly valid page-cache folios with the large folios of recent kernels,
// here Linux 6.18 on ext4). A read(2) leaves the folios it covers whole and
// valid. After a cold start (mailnode-bench greylist-scale --cold, 10 M
// entries) the code before faulted in every decision and held p99 at 6–32
// ms from 2,000 to 10,000 decisions/s; with the read (0.4 s from the cache,
// longer from the disk) the rounds are as on a warm file. Some faults
// remain under load (0–95 a second at 5,000–10,000/s on a warm file, old
// code and new alike), not explained here: the kernel counts a fault that
// had to wait and retry, as for a page a commit is writing, as major too.
// The pages read are page cache, which the kernel drops first under memory
// pressure, not policyd's heap; a node's decisions need them anyway.
//
// The warm-up reads without read-ahead (readSmall), so the cache holds the
// file in folios of one page. Read ahead from start to end, Linux 6.18 on
// ext4 caches the file in large folios (some 380 pages each), and every
// 4 KiB page a commit writes then walks all the blocks of its folio, in the
// write and again in the writeback the fsync starts: 8,000 random new keys
// in a 10 M file took 353-389 ms of CPU a transaction against 220-223 ms in
// single pages, and reading the whole file from the disk 3.4-3.9 s against
// 1.9-2.3 s (TestBoltWarmsInSinglePages; docs/scaling.md). bbolt's own
// mapping is advised random, so pages faulted in through it are single
// pages too.

// warmChunk is the size of one read.
const warmChunk = 256 << 10

// warmer reads the file into the page cache: all of it once, then each
// region the file grows by.
type warmer struct {
	f    *os.File
	kick chan struct{} // after each commit: look for growth
	stop chan struct{}
	done chan struct{}
	to   atomic.Int64 // bytes from the file's start read so far
}

// warmHead is how much of the file newWarmer reads before bbolt opens it.
const warmHead = 1 << 20

// newWarmer opens path for reading and reads its first warmHead bytes, so
// that bbolt's own first read of the file (its meta page, through a handle
// that reads ahead) finds them in the cache and starts no read-ahead: the
// folios such a read-ahead marks make every later read of the file, the
// warm-up's included, read ahead too, in ever larger folios (10 M file:
// 99.6 % of it in large folios after the warm-up with that mark set,
// 0.03 % with the head read first). Reading is only an optimisation: a file that
// cannot be opened for it (not there yet) is read by page faults as
// before. start begins the rest in the background.
func newWarmer(path string) *warmer {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	readSmall(f)
	w := &warmer{f: f, kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	buf := make([]byte, warmChunk)
	for w.to.Load() < warmHead {
		if n, err := w.read(buf); err != nil || n < len(buf) {
			break // the whole file is shorter
		}
	}
	return w
}

// start reads the rest of the file, and each region it grows by, in the
// background.
func (w *warmer) start() {
	if w != nil {
		go w.run()
	}
}

// discard closes a warmer that was never started.
func (w *warmer) discard() {
	if w != nil {
		w.f.Close()
	}
}

func (w *warmer) run() {
	defer close(w.done)
	defer w.f.Close()
	for {
		if !w.catchUp() {
			return
		}
		select {
		case <-w.stop:
			return
		case <-w.kick:
		}
	}
}

// catchUp reads from where the last read ended to the file's end, leaving
// the disk at least half of its time: a chunk that took long (read from
// the disk, not the cache) is followed by a pause as long. It reports
// false when stopped. Its buffer lives only while it reads: the file
// grows rarely.
func (w *warmer) catchUp() bool {
	fi, err := w.f.Stat()
	if err != nil || w.to.Load() >= fi.Size() {
		return true
	}
	buf := make([]byte, warmChunk)
	for off := w.to.Load(); off < fi.Size(); off = w.to.Load() {
		select {
		case <-w.stop:
			return false
		default:
		}
		t0 := time.Now()
		n, err := w.read(buf[:min(int64(len(buf)), fi.Size()-off)])
		if err != nil || n == 0 {
			return true // shorter than it was (another handle truncated it): the next commit looks again
		}
		if d := time.Since(t0); d > time.Millisecond {
			select {
			case <-w.stop:
				return false
			case <-time.After(d):
			}
		}
	}
	return true
}

// read reads the next len(buf) bytes of the file from where the last read
// ended, and counts them.
func (w *warmer) read(buf []byte) (int, error) {
	off := w.to.Load()
	n, err := w.f.ReadAt(buf, off)
	w.to.Store(off + int64(n))
	boltWarmed.Add(int64(n))
	return n, err
}

// committed tells the warmer that a commit ended (the file may have grown).
func (w *warmer) committed() {
	if w == nil {
		return
	}
	select {
	case w.kick <- struct{}{}:
	default:
	}
}

// close stops the warmer and waits for it.
func (w *warmer) close() {
	if w == nil {
		return
	}
	close(w.stop)
	<-w.done
}
