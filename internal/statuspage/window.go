package statuspage

import (
	"sync"
	"sync/atomic"
	"time"
)

// Outcome is what became of one decision, as the page counts it.
type Outcome int

// The outcomes the page counts: the recipient accepted (DUNNO), refused
// with a 5xx, deferred by greylisting, deferred otherwise (rate limits).
const (
	Accepted Outcome = iota
	Rejected
	Greylisted
	Deferred
	NumOutcomes
)

var outcomeNames = [NumOutcomes]string{"accepted", "rejected", "greylisted", "deferred"}

func (o Outcome) String() string {
	if o < 0 || o >= NumOutcomes {
		return "unknown"
	}
	return outcomeNames[o]
}

// Minutes is the span of a Window: the current minute and the 59 before.
const Minutes = 60

// Window counts outcomes per series (policyd: per matrix cell) over the
// last hour in one-minute buckets. Its memory is fixed at creation
// (Minutes x series x NumOutcomes counters); Add neither allocates nor
// locks except once per bucket and minute, to clear the bucket an hour
// old. Any number of goroutines may Add and View at once.
type Window struct {
	series int
	mu     sync.Mutex            // taken only to clear a bucket for a new minute
	stamp  [Minutes]atomic.Int64 // the bucket's minute (unix minutes + 1); 0: never used
	counts []atomic.Uint32       // [bucket][series][outcome]
}

// NewWindow makes a window of series series (each 0..series-1).
func NewWindow(series int) *Window {
	if series < 1 {
		series = 1
	}
	return &Window{series: series, counts: make([]atomic.Uint32, Minutes*series*int(NumOutcomes))}
}

// Series is the number of series the window counts.
func (w *Window) Series() int { return w.series }

func (w *Window) index(slot int64, series int, o Outcome) int {
	return (int(slot)*w.series+series)*int(NumOutcomes) + int(o)
}

// Add counts one outcome of series at t. Out-of-range series or outcomes,
// and times before 1970, are ignored; so is a time more than an hour
// older than the bucket's current minute (it left the window). A count
// whose goroutine stalled for an hour between reading the bucket's minute
// and adding could land in the next hour's bucket: the page's figures are
// for a person, not for billing.
func (w *Window) Add(t time.Time, series int, o Outcome) {
	if series < 0 || series >= w.series || o < 0 || o >= NumOutcomes {
		return
	}
	m := t.Unix() / 60
	if m < 0 {
		return
	}
	slot := m % Minutes
	if s := w.stamp[slot].Load(); s != m+1 {
		if s > m+1 || !w.roll(slot, m) {
			return
		}
	}
	w.counts[w.index(slot, series, o)].Add(1)
}

// roll clears bucket slot for minute m unless another goroutine did (or
// moved it on further); it reports whether the bucket is m's.
func (w *Window) roll(slot, m int64) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := w.stamp[slot].Load()
	if s == m+1 {
		return true
	}
	if s > m+1 {
		return false
	}
	base := w.index(slot, 0, 0)
	for i := range w.series * int(NumOutcomes) {
		w.counts[base+i].Store(0)
	}
	// Stored after the counts are cleared: whoever sees the new stamp
	// counts into a clean bucket.
	w.stamp[slot].Store(m + 1)
	return true
}

// WindowView is what a Window counted in the hour up to a moment.
type WindowView struct {
	Start   time.Time                 // start of the oldest minute
	Minutes [Minutes][NumOutcomes]int // per minute, oldest first; the last is the current minute
	Series  [][NumOutcomes]int        // per series, over the hour
	Total   [NumOutcomes]int          // over the hour
}

// View sums up the hour ending in now's minute.
func (w *Window) View(now time.Time) WindowView {
	cur := now.Unix() / 60
	v := WindowView{Start: time.Unix((cur-Minutes+1)*60, 0), Series: make([][NumOutcomes]int, w.series)}
	per := make([][NumOutcomes]int, w.series)
	for i := range Minutes {
		m := cur - Minutes + 1 + int64(i)
		if m < 0 {
			continue
		}
		slot := m % Minutes
		if w.stamp[slot].Load() != m+1 {
			continue
		}
		clear(per)
		for s := range w.series {
			for o := range NumOutcomes {
				per[s][o] = int(w.counts[w.index(slot, s, o)].Load())
			}
		}
		// A bucket cleared for a newer minute while it was read is not
		// this hour's.
		if w.stamp[slot].Load() != m+1 {
			continue
		}
		for s := range w.series {
			for o := range NumOutcomes {
				n := per[s][o]
				v.Minutes[i][o] += n
				v.Series[s][o] += n
				v.Total[o] += n
			}
		}
	}
	return v
}
