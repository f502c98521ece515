package state

import (
	"bytes"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"time"

	"golang.org/x/sys/unix"
)

// niceThread is a lowThread: one goroutine locked to its OS thread, whose
// priority it lowered. The goroutine never unlocks the thread: when it
// returns, the runtime ends the thread with it, so no other goroutine ever
// runs at that priority.
type niceThread struct {
	id    int
	work  chan func(check func() bool)
	back  chan time.Duration
	moved chan struct{} // the loop has locked a thread other than the main one
}

// startLowThread starts the thread nice steps below the process's priority
// (at most 19), or says why it cannot.
func startLowThread(nice int) (lowThread, error) {
	t := &niceThread{work: make(chan func(func() bool)), back: make(chan time.Duration), moved: make(chan struct{}, 1)}
	errc := make(chan error, 1)
	go t.loop(nice, errc)
	if err := <-errc; err != nil {
		return nil, err
	}
	return t, nil
}

func (t *niceThread) loop(nice int, errc chan<- error) {
	runtime.LockOSThread()
	if unix.Gettid() == unix.Getpid() {
		// The main thread, which the runtime never ends (it would keep the
		// lower priority, and ps shows its priority as the process's): the
		// loop starts again on a goroutine that cannot get this thread
		// while it is held here.
		go t.loop(nice, errc)
		<-t.moved
		runtime.UnlockOSThread()
		return
	}
	select {
	case t.moved <- struct{}{}:
	default:
	}
	t.id = unix.Gettid()
	// The raw system call returns 20 - nice.
	raw, err := unix.Getpriority(unix.PRIO_PROCESS, t.id)
	if err != nil {
		errc <- fmt.Errorf("getpriority: %w", err)
		return
	}
	if err := unix.Setpriority(unix.PRIO_PROCESS, t.id, min(20-raw+nice, 19)); err != nil {
		errc <- fmt.Errorf("setpriority: %w", err)
		return
	}
	f, err := os.Open(fmt.Sprintf("/proc/self/task/%d/schedstat", t.id))
	if err != nil {
		errc <- err
		return
	}
	defer f.Close()
	if _, err := runDelay(f); err != nil {
		errc <- err
		return
	}
	errc <- nil
	for job := range t.work {
		d0, _ := runDelay(f)
		start := time.Now()
		job(func() bool {
			d, err := runDelay(f)
			return err == nil && d-d0 > handDelay && d-d0 > time.Since(start)/2
		})
		d1, _ := runDelay(f)
		t.back <- max(d1-d0, 0)
	}
}

func (t *niceThread) run(f func(check func() bool)) time.Duration {
	t.work <- f
	return <-t.back
}

func (t *niceThread) tid() int { return t.id }

func (t *niceThread) close() { close(t.work) }

// runDelay reads a thread's schedstat: the time it spent on the CPU, the
// time it waited on a run queue, and its time slices; it returns the wait.
func runDelay(f *os.File) (time.Duration, error) {
	var buf [96]byte
	n, err := f.ReadAt(buf[:], 0)
	if n == 0 {
		return 0, fmt.Errorf("schedstat: %v", err)
	}
	fields := bytes.Fields(buf[:n])
	if len(fields) < 2 {
		return 0, fmt.Errorf("schedstat: %q", buf[:n])
	}
	ns, err := strconv.ParseInt(string(fields[1]), 10, 64)
	if err != nil {
		return 0, fmt.Errorf("schedstat: %w", err)
	}
	return time.Duration(ns), nil
}

// spinCPU keeps the calling thread busy until it has run for d (tests).
func spinCPU(d time.Duration) {
	var ts unix.Timespec
	now := func() time.Duration {
		unix.ClockGettime(unix.CLOCK_THREAD_CPUTIME_ID, &ts)
		return time.Duration(ts.Nano())
	}
	for end := now() + d; now() < end; {
	}
}
