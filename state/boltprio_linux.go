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
	work  chan lowJob
	back  chan time.Duration
	moved chan struct{} // the loop has locked a thread other than the main one
	stat  *os.File      // /proc/stat, open for the thread's life (nil: not readable)
}

// lowJob is a function for the low thread and when it was handed over.
type lowJob struct {
	f    func(check func() bool)
	sent time.Time
}

// startLowThread starts the thread nice steps below the process's priority
// (at most 19), or says why it cannot.
func startLowThread(nice int) (lowThread, error) {
	t := &niceThread{work: make(chan lowJob), back: make(chan time.Duration), moved: make(chan struct{}, 1)}
	errc := make(chan error, 1)
	go t.loop(nice, errc)
	if err := <-errc; err != nil {
		return nil, err
	}
	t.stat, _ = os.Open("/proc/stat")
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
	// d0 is the wait so far when the thread last had nothing to do: it
	// waits for no CPU while it sleeps, so what the wait grew by from there
	// includes the wake-up that took the next job.
	d0, err := runDelay(f)
	if err != nil {
		errc <- err
		return
	}
	errc <- nil
	for job := range t.work {
		job.f(func() bool {
			d, err := runDelay(f)
			return err == nil && d-d0 > handDelay && d-d0 > time.Since(job.sent)/2
		})
		d1, _ := runDelay(f)
		t.back <- max(d1-d0, 0)
		d0, _ = runDelay(f)
	}
}

func (t *niceThread) run(f func(check func() bool)) lowRun {
	c0, ok0 := readCPUTimes(t.stat)
	t.work <- lowJob{f: f, sent: time.Now()}
	r := lowRun{delay: <-t.back, foreign: 1}
	if c1, ok1 := readCPUTimes(t.stat); ok0 && ok1 {
		r.foreign = foreignShare(c0, c1)
	}
	return r
}

// cpuTimes are the CPU time of the machine so far, busy and in all (every
// core), and the process's own.
type cpuTimes struct{ busy, all, own time.Duration }

// readCPUTimes reads the machine's times from stat, /proc/stat kept open
// (its first line, in ticks of 10 ms; the kernel writes it anew for each
// read from the start), and the process's from getrusage.
func readCPUTimes(stat *os.File) (cpuTimes, bool) {
	var c cpuTimes
	if stat == nil {
		return c, false
	}
	var buf [512]byte
	n, _ := stat.ReadAt(buf[:], 0)
	line, _, _ := bytes.Cut(buf[:n], []byte("\n"))
	fields := bytes.Fields(line)
	// cpu user nice system idle iowait irq softirq steal (guest and
	// guest_nice are counted in user and nice already)
	if len(fields) < 9 || string(fields[0]) != "cpu" {
		return c, false
	}
	for i, fd := range fields[1:9] {
		v, err := strconv.ParseInt(string(fd), 10, 64)
		if err != nil {
			return c, false
		}
		d := time.Duration(v) * 10 * time.Millisecond
		c.all += d
		if i != 3 && i != 4 { // idle, iowait
			c.busy += d
		}
	}
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return c, false
	}
	c.own = time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
	return c, true
}

// foreignShare is the share of the machine's CPU time from a to b that
// other processes took (0 to 1).
func foreignShare(a, b cpuTimes) float64 {
	all := b.all - a.all
	if all <= 0 {
		return 0
	}
	other := (b.busy - a.busy) - (b.own - a.own)
	return min(max(float64(other)/float64(all), 0), 1)
}

func (t *niceThread) tid() int { return t.id }

// close ends the thread; the store calls it once no commit can come.
func (t *niceThread) close() {
	close(t.work)
	if t.stat != nil {
		t.stat.Close()
	}
}

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
