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
//     process's priority (beside a busy loop on every core, every commit
//     is handed over: TestBoltCommitsYieldToBusyProcesses);
//   - a commit whose oldest update is already older than MaxLag/3 (the
//     last one ran long) runs at the process's priority (prioGate);
//   - a commit the low thread finished but that waited for a CPU longer
//     than MaxLag/10 and longer than half of its time (in bbolt's write,
//     after the batch) was starved: every commit runs at the process's
//     priority for a hold-off, 30 s, doubled each time the next low commit
//     is starved again, at most 10 min, and back to 30 s after one that was
//     not (TestBoltLowCommitsYieldToCPUHogs).

// commitNice is how many nice steps below the process the low thread runs.
const commitNice = 10

// The wait for a CPU that makes the low thread hand a commit over, and the
// hold-offs after a starved one.
const (
	handDelay   = 20 * time.Millisecond
	prioHoldMin = 30 * time.Second
	prioHoldMax = 10 * time.Minute
)

// lowThread runs functions on one OS thread at a lower priority.
type lowThread interface {
	// run calls f on the thread and returns how long the thread waited
	// for a CPU meanwhile; f's check says whether the thread has waited
	// long enough to hand its work over (handDelay).
	run(f func(check func() bool)) (delay time.Duration)
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

// ran records a low commit that took wall, of which it waited delay for a
// CPU, and says whether it was starved (the hold-off began).
func (g *prioGate) ran(now time.Time, wall, delay time.Duration) bool {
	if delay <= g.maxLag/10 || delay <= wall/2 {
		g.hold = 0
		return false
	}
	g.holdOff(now)
	return true
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
