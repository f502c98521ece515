package state

import (
	"os"
	"sync/atomic"
	"time"
)

// Keeping the file's pages in memory.
//
// Decisions read the bbolt file through its mapping. A page that is not in
// the page cache, or that is only partly valid there, is read from the disk
// inside the decision's page fault, behind whatever the disk is writing for
// the last commit (its fdatasync): policyd at 5,000 decisions/s on a 10 M
// file took 90 such faults a second, every one waiting in the kernel for a
// read (`perf`: folio_wait_bit_common under filemap_read_folio, from
// bbolt's page lookups in decisions). Two kinds of pages were found:
//
//   - a file not read since the machine started, or written by another
//     process (a bulk load), is partly or not at all in the cache;
//   - where the file grows, bbolt extends it and writes single pages into
//     the new region; with the large page-cache folios of recent kernels
//     (here Linux 6.18, ext4) a folio holding such a page stays partly
//     valid, and a read of any page of it goes to the disk. The
//     file of the 10 M bench grows by some 100 MiB in a minute of load,
//     so the faults never stopped.
//
// So the store reads its file once from start to end when it opens, in the
// background, and after each commit reads whatever the file grew by: a
// read(2) leaves every folio it covers whole and valid, and a later write
// into a valid folio keeps it so. On that bench the faults went from 90 a
// second to none. The pages are page cache (the kernel drops them first
// under memory pressure), not policyd's heap; a node's decisions need them
// in memory anyway.

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

// startWarmer starts reading path in the background. Reading is only an
// optimisation: a file that cannot be opened for it is read by page faults
// as before.
func startWarmer(path string) *warmer {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	w := &warmer{f: f, kick: make(chan struct{}, 1), stop: make(chan struct{}), done: make(chan struct{})}
	go w.run()
	return w
}

func (w *warmer) run() {
	defer close(w.done)
	defer w.f.Close()
	buf := make([]byte, warmChunk)
	for {
		if !w.catchUp(buf) {
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
// false when stopped.
func (w *warmer) catchUp(buf []byte) bool {
	fi, err := w.f.Stat()
	if err != nil {
		return true
	}
	for off := w.to.Load(); off < fi.Size(); {
		select {
		case <-w.stop:
			return false
		default:
		}
		t0 := time.Now()
		n, err := w.f.ReadAt(buf[:min(int64(len(buf)), fi.Size()-off)], off)
		off += int64(n)
		w.to.Store(off)
		boltWarmed.Add(int64(n))
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
