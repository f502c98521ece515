package state

import "time"

// Commits at a lower CPU priority.
//
// A commit at ten million entries is one goroutine busy for tens to
// hundreds of milliseconds (bbolt rewrites every leaf a batch touched). At
// the decisions' priority the kernel lets it finish its time slice before a
// decision that wakes gets the core. policyd gives the commits a Go
// processor of their own (commitProcs), and the store runs each commit on
// one OS thread kept nice +commitNice below the process, so that waking
// decisions preempt it (docs/scaling.md, "Commits at a lower priority").
//
// That priority alone would starve the commits where other processes keep
// every core busy at the normal priority (a virus scan, rspamd): at nice
// +10 a commit gets about a tenth of a contended core, the oldest update
// reaches the writers' brake and then MaxLag, and decisions get 4xx. An
// unprivileged policyd cannot raise a thread's priority back once lowered.
// So:
//   - while the low thread writes a commit's batch into the transaction it
//     reads, every fillCheck keys, how long it has waited for a CPU (the
//     kernel's run-queue wait of the thread, /proc/self/task/N/schedstat);
//     over handDelay and over half of the time so far, it hands the
//     transaction to the commit goroutine, which finishes it at the
//     process's priority (beside busy loops on every core, commits are
//     handed over: TestBoltCommitsYieldToBusyProcesses);
//   - a commit whose oldest update is already older than MaxLag/3 (the
//     last one ran long) runs at the process's priority (prioGate);
//   - a commit the low thread finished but that waited for a CPU longer
//     than MaxLag/10 and longer than half of its time (in bbolt's write,
//     after the batch) was starved if other processes took half of the
//     machine's CPU time or more meanwhile, or if its oldest update had
//     reached the writers' brake (MaxLag/2) when it ended: every commit
//     runs at the process's priority for a hold-off, 30 s, doubled each
//     time the next low commit is starved again, at most 10 min, and back
//     to 30 s after one that was not (TestBoltLowCommitsYieldToCPUHogs).
//     One that waited as long while policyd's own work kept the cores busy
//     and made no writer wait is crowded, and begins no hold-off: a burst
//     of decisions that writes slows itself at the brake once the commits
//     fall behind, and a hold-off would cost the decisions the lower
//     priority for minutes after it (an unpaced stream of the bench began
//     one; TestBoltOwnLoadStarvesNoCommit).
//
// The low thread's wait is counted from the moment a commit is handed to
// it, so a wake-up that waits for a CPU counts too.

// commitNice is how many nice steps below the process the low thread runs.
const commitNice = 10

// The wait for a CPU that makes the low thread hand a commit over, the
// share of the machine's CPU time other processes must take for a long
// wait to count as starvation, and the hold-offs after a starved commit.
const (
	handDelay     = 20 * time.Millisecond
	foreignStarve = 0.5
	prioHoldMin   = 30 * time.Second
	prioHoldMax   = 10 * time.Minute
)

// lowRun is what a function run on the low thread met: how long the thread
// waited for a CPU from the moment it was handed the function to its end,
// and the share of the machine's CPU time (all cores) that other processes
// took meanwhile (1 when it cannot be read: every long wait then counts).
type lowRun struct {
	delay   time.Duration
	foreign float64
}

// lowThread runs functions on one OS thread at a lower priority.
type lowThread interface {
	// run calls f on the thread and says what it met; f's check says
	// whether the thread has waited long enough to hand its work over
	// (handDelay).
	run(f func(check func() bool)) lowRun
	// tid is the thread's id (tests).
	tid() int
	close()
}

// prioGate decides, commit by commit, where a commit runs.
type prioGate struct {
	maxLag time.Duration
	until  time.Time     // commits run at the process's priority until then
	hold   time.Duration // the last hold-off (0: none since a good low commit)
}

// low says whether a commit whose oldest update is age old may go to the
// low thread at now.
func (g *prioGate) low(now time.Time, age time.Duration) bool {
	return age <= g.maxLag/3 && !now.Before(g.until)
}

// What prioGate.ran found of a low commit.
const (
	ranOK      = iota // it did not wait long for a CPU
	ranCrowded        // it waited long while policyd's own work kept the cores busy, and held no writer back
	ranStarved        // it waited long while other processes did: the hold-off began
)

// ran records a low commit that took wall and met r, whose oldest update
// was age old when it ended, and says what it was.
func (g *prioGate) ran(now time.Time, wall, age time.Duration, r lowRun) int {
	switch {
	case r.delay <= g.maxLag/10 || r.delay <= wall/2:
		g.hold = 0
		return ranOK
	case r.foreign < foreignStarve && age <= g.maxLag/2:
		// The next starved commit's hold-off is as long as it would have
		// been without this one.
		return ranCrowded
	}
	g.holdOff(now)
	return ranStarved
}

// holdOff sends the commits to the process's priority for the next
// hold-off.
func (g *prioGate) holdOff(now time.Time) {
	if g.hold == 0 {
		g.hold = prioHoldMin
	} else {
		g.hold = min(2*g.hold, prioHoldMax)
	}
	g.until = now.Add(g.hold)
}
