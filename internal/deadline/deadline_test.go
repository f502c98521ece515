package deadline

import (
	"testing"
	"time"
)

// TestArmLeavesTheTimerAlone: a deadline is set again only when the one set
// would end before the wait asks or more than 1/Slack of it later.
func TestArmLeavesTheTimerAlone(t *testing.T) {
	var armed, last time.Time
	sets := 0
	set := func(dl time.Time) error { sets++; last = dl; return nil }
	const wait = time.Hour
	Arm(&armed, wait, set)
	if sets != 1 || last.Before(time.Now().Add(wait)) || last.After(time.Now().Add(wait+wait/Slack)) {
		t.Fatalf("first wait: %d sets, deadline %v from now", sets, time.Until(last))
	}
	for range 1000 {
		Arm(&armed, wait, set) // the same wait again and again: the deadline set still fits
	}
	if sets != 1 {
		t.Fatalf("%d sets for waits the first deadline covers", sets)
	}
	Arm(&armed, time.Minute, set) // a shorter wait: the deadline set would end far too late
	if sets != 2 || last.Before(time.Now().Add(time.Minute)) || last.After(time.Now().Add(time.Minute+time.Minute/Slack)) {
		t.Fatalf("shorter wait: %d sets, deadline %v from now", sets, time.Until(last))
	}
	Arm(&armed, wait, set) // a longer one again: the deadline set would end too early
	if sets != 3 || last.Before(time.Now().Add(wait)) {
		t.Fatalf("longer wait: %d sets, deadline %v from now", sets, time.Until(last))
	}
	armed = time.Now().Add(wait - time.Second) // set a while ago: now ends before the wait
	Arm(&armed, wait, set)
	if sets != 4 {
		t.Fatalf("a deadline ending before the wait was left: %d sets", sets)
	}
}
