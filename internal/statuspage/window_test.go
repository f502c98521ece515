package statuspage

import (
	"sync"
	"testing"
	"time"
)

var t0 = time.Date(2026, 12, 6, 4, 0, 0, 0, time.UTC)

// Buckets roll over by the minute; what is an hour old leaves the view,
// and a bucket reused an hour later starts from zero.
func TestWindowRollover(t *testing.T) {
	w := NewWindow(3)
	w.Add(t0, 0, Accepted)
	w.Add(t0.Add(59*time.Second), 0, Accepted)
	w.Add(t0.Add(time.Minute), 1, Rejected)
	w.Add(t0.Add(61*time.Second), 2, Greylisted)
	w.Add(t0.Add(30*time.Minute), 2, Deferred)

	v := w.View(t0.Add(30*time.Minute + 10*time.Second))
	if v.Total != [NumOutcomes]int{2, 1, 1, 1} {
		t.Errorf("total %v", v.Total)
	}
	if v.Series[0] != [NumOutcomes]int{2, 0, 0, 0} || v.Series[1] != [NumOutcomes]int{0, 1, 0, 0} || v.Series[2] != [NumOutcomes]int{0, 0, 1, 1} {
		t.Errorf("series %v", v.Series)
	}
	// The hour ends with now's minute: 04:00 is index 29 of 03:31..04:30.
	if !v.Start.Equal(t0.Add(-29*time.Minute)) || v.Minutes[29] != [NumOutcomes]int{2, 0, 0, 0} || v.Minutes[30] != [NumOutcomes]int{0, 1, 1, 0} || v.Minutes[59] != [NumOutcomes]int{0, 0, 0, 1} {
		t.Errorf("start %v, minutes %v", v.Start, v.Minutes)
	}

	// The hour boundary: at 04:59:59 04:00 is still in, at 05:00:00 it is out.
	if v := w.View(t0.Add(59*time.Minute + 59*time.Second)); v.Total[Accepted] != 2 {
		t.Errorf("at 04:59:59: %v", v.Total)
	}
	if v := w.View(t0.Add(time.Hour)); v.Total != [NumOutcomes]int{0, 1, 1, 1} {
		t.Errorf("at 05:00: %v", v.Total)
	}
	// 05:00 reuses 04:00's bucket: it starts from zero.
	w.Add(t0.Add(time.Hour), 0, Rejected)
	v = w.View(t0.Add(time.Hour))
	if v.Series[0] != [NumOutcomes]int{0, 1, 0, 0} || v.Minutes[59] != [NumOutcomes]int{0, 1, 0, 0} {
		t.Errorf("after reuse: %v %v", v.Series[0], v.Minutes[59])
	}
	// A late count for the minute the bucket left is dropped, not added
	// to the new minute.
	w.Add(t0.Add(10*time.Second), 0, Accepted)
	if v := w.View(t0.Add(time.Hour)); v.Series[0] != [NumOutcomes]int{0, 1, 0, 0} {
		t.Errorf("late count: %v", v.Series[0])
	}
	// Two hours later everything is gone.
	if v := w.View(t0.Add(3 * time.Hour)); v.Total != [NumOutcomes]int{} {
		t.Errorf("3h later: %v", v.Total)
	}
	// Out of range: ignored, no panic.
	w.Add(t0, 3, Accepted)
	w.Add(t0, -1, Accepted)
	w.Add(t0, 0, NumOutcomes)
	w.Add(time.Unix(-120, 0), 0, Accepted)
	if v := w.View(time.Unix(0, 0)); v.Total != [NumOutcomes]int{} {
		t.Errorf("at the epoch: %v", v.Total)
	}
}

// Many goroutines count at once, across minute boundaries, while others
// read: nothing is lost (run with -race).
func TestWindowConcurrent(t *testing.T) {
	w := NewWindow(27)
	const workers, each = 8, 3000
	var wg sync.WaitGroup
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
				w.View(t0.Add(5 * time.Minute))
			}
		}
	}()
	for g := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				// Three minutes' worth, the boundaries crossed by all at once.
				at := t0.Add(time.Duration(i%3) * time.Minute)
				w.Add(at, (g+i)%27, Outcome(i%int(NumOutcomes)))
			}
		}()
	}
	wg.Wait()
	close(stop)
	v := w.View(t0.Add(5 * time.Minute))
	sum := 0
	for _, n := range v.Total {
		sum += n
	}
	if sum != workers*each {
		t.Errorf("counted %d of %d", sum, workers*each)
	}
	for m := 54; m < 57; m++ { // t0 is 5 minutes before the last
		if n := v.Minutes[m][Accepted] + v.Minutes[m][Rejected] + v.Minutes[m][Greylisted] + v.Minutes[m][Deferred]; n != workers*each/3 {
			t.Errorf("minute %d: %d", m, n)
		}
	}
}

// Add is what policyd calls per decision: no allocation.
func TestWindowAddAllocs(t *testing.T) {
	w := NewWindow(27)
	at := t0
	if n := testing.AllocsPerRun(1000, func() { at = at.Add(time.Second); w.Add(at, 5, Rejected) }); n != 0 {
		t.Errorf("%v allocations per Add", n)
	}
}

func TestRing(t *testing.T) {
	r := NewRing(3)
	if got := r.Latest(); len(got) != 0 {
		t.Errorf("empty ring: %v", got)
	}
	for _, rc := range []string{"a@x", "b@x"} {
		r.Add(Rejection{Recipient: rc})
	}
	if got := r.Latest(); len(got) != 2 || got[0].Recipient != "b@x" || got[1].Recipient != "a@x" {
		t.Errorf("two: %v", got)
	}
	for _, rc := range []string{"c@x", "d@x", "e@x"} {
		r.Add(Rejection{Recipient: rc})
	}
	got := r.Latest()
	if len(got) != 3 || got[0].Recipient != "e@x" || got[1].Recipient != "d@x" || got[2].Recipient != "c@x" {
		t.Errorf("wrapped: %v", got)
	}
	for _, c := range []struct {
		r    Rejection
		want string
	}{
		{Rejection{QueueID: "4ABCDEF", Recipient: "a@x"}, "4ABCDEF"},
		{Rejection{Recipient: "a@x", Sender: "s@y"}, "a@x"},
		{Rejection{Sender: "s@y"}, "s@y"},
		{Rejection{}, "<>"},
	} {
		if q := c.r.Query(); q != c.want {
			t.Errorf("Query of %+v: %q, want %q", c.r, q, c.want)
		}
	}
}

// BenchmarkWindowAdd is policyd's cost per decision for the page's window,
// alone and from every core at once.
func BenchmarkWindowAdd(b *testing.B) {
	w := NewWindow(27)
	now := time.Now()
	b.Run("serial", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			w.Add(now, i%27, Outcome(i%int(NumOutcomes)))
		}
	})
	b.Run("parallel", func(b *testing.B) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			i := 0
			for pb.Next() {
				w.Add(now, i%27, Outcome(i%int(NumOutcomes)))
				i++
			}
		})
	})
}
