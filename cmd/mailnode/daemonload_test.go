package main

import (
	"runtime/debug"
	"testing"
)

// A load runs with the collector at loadGCPercent and a soft memory limit
// of at least loadMemoryLimit, and the daemon's own settings come back
// after it; a GOMEMLIMIT the operator set is left alone.
func TestLoadingGCSetsAndRestores(t *testing.T) {
	const percent, limit = 400, int64(256 << 20)
	defer debug.SetGCPercent(debug.SetGCPercent(percent))
	defer debug.SetMemoryLimit(debug.SetMemoryLimit(limit))

	t.Setenv("GOMEMLIMIT", "")
	restore := loadingGC(loadGCPercent)
	if got := debug.SetGCPercent(-1); got != loadGCPercent {
		t.Errorf("GOGC during the load is %d, want %d", got, loadGCPercent)
	}
	debug.SetGCPercent(loadGCPercent)
	if got := debug.SetMemoryLimit(-1); got < loadMemoryLimit || got == limit {
		t.Errorf("the memory limit during the load is %d, want at least %d", got, loadMemoryLimit)
	}
	restore()
	if got := debug.SetGCPercent(-1); got != percent {
		t.Errorf("GOGC after the load is %d, want %d", got, percent)
	}
	debug.SetGCPercent(percent)
	if got := debug.SetMemoryLimit(-1); got != limit {
		t.Errorf("the memory limit after the load is %d, want %d", got, limit)
	}

	// A load inside milterd's reload keeps the reload's lower setting,
	// during and after it.
	outer := loadingGC(reloadGCPercent)
	inner := loadingGC(loadGCPercent)
	if got := debug.SetGCPercent(reloadGCPercent); got != reloadGCPercent {
		t.Errorf("GOGC during a load inside a reload is %d, want %d", got, reloadGCPercent)
	}
	inner()
	if got := debug.SetGCPercent(reloadGCPercent); got != reloadGCPercent {
		t.Errorf("GOGC after a load inside a reload is %d, want %d", got, reloadGCPercent)
	}
	outer()
	if got := debug.SetGCPercent(percent); got != percent {
		t.Errorf("GOGC after the reload is %d, want %d", got, percent)
	}

	t.Setenv("GOMEMLIMIT", "1GiB")
	restore = loadingGC(loadGCPercent)
	if got := debug.SetMemoryLimit(-1); got != limit {
		t.Errorf("with GOMEMLIMIT set, the load changed the limit to %d", got)
	}
	restore()
}

// A daemon that already holds more than half the limit gets twice what it
// holds, so that its load does not run with the collector always on.
func TestLoadingLimitGrowsWithTheDaemon(t *testing.T) {
	if got := loadingLimit(); got < loadMemoryLimit {
		t.Fatalf("limit %d below %d", got, loadMemoryLimit)
	}
	hold := make([]byte, 96<<20)
	for i := range hold {
		hold[i] = 1
	}
	if got := loadingLimit(); got < 2*int64(len(hold)) {
		t.Errorf("holding %d bytes, the limit is %d", len(hold), got)
	}
	_ = hold[len(hold)-1]
}
