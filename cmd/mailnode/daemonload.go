package main

import (
	"os"
	"runtime"
	"runtime/debug"
	"runtime/metrics"

	"github.com/mailnode/mailnode/inventory"
)

// loadGCPercent is the collector's setting while a daemon loads its
// inventory. A load of 100,000 mailboxes allocates some 280 MiB of
// short-lived text, trees and tables while the running inventory stays in
// use: at the default GOGC=100 (milterd runs at 400) the heap grows to
// twice (five times) what is live before the collector catches up, and
// the process keeps those pages. At 25 the load costs a few more
// collections, a fraction of a second of CPU once per reload.
const loadGCPercent = 25

// loadForDaemon loads the inventory at path for policyd or milterd as the
// tier node named node ("" for node.hostname, as loadAs),
// keeping only what keep says (all of it is validated), with the collector
// at loadGCPercent for the length of the load. It ends with a collection:
// the daemon's own setting then paces the heap from what is live after
// the load (the running and the new inventory), not from the load's last
// collection, which saw its tables half built beside the text.
func loadForDaemon(path, node string, keep inventory.Keep) (*inventory.Inventory, error) {
	defer loadingGC()()
	inv, err := inventory.LoadWith(path, inventory.LoadOptions{Node: node, Keep: keep})
	runtime.GC()
	return inv, err
}

// loadMemoryLimit is the least soft memory limit (GOMEMLIMIT) while a
// daemon loads: the steady size a daemon should keep within at 100,000
// mailboxes. Past it the collector runs more often (the runtime caps it at
// half the CPU) and hands freed pages back at once, so a reload's peak
// stays near what the load really holds live rather than what the heap
// last grew to: policyd's peak at 100,000 mailboxes 99-108 -> 83-84 MiB,
// the reload 0.81-0.83 -> 0.98-1.02 s. A daemon that holds more than half
// of it already (a larger inventory) gets twice what it holds, so that its
// load does not run with the collector always on.
const loadMemoryLimit = 64 << 20

// loadingGC sets the collector to loadGCPercent, and the soft memory limit
// to loadingLimit unless the environment sets GOMEMLIMIT, and returns what
// restores the settings before. loadForDaemon runs under it, and milterd's
// whole reload does: the inventory's load is not all of it there, loading
// the keys, checking their DNS and building the new filter allocate too,
// and at milterd's GOGC=400 the heap could grow to five times the two
// inventories held at the swap before a collection (its reload peak at
// 100,000 mailboxes went from 130 to 121 MiB).
func loadingGC() (restore func()) {
	old := debug.SetGCPercent(loadGCPercent)
	oldLimit := int64(-1)
	if os.Getenv("GOMEMLIMIT") == "" {
		oldLimit = debug.SetMemoryLimit(loadingLimit())
	}
	return func() {
		debug.SetGCPercent(old)
		if oldLimit >= 0 {
			debug.SetMemoryLimit(oldLimit)
		}
	}
}

// loadingLimit is the soft memory limit for a load: loadMemoryLimit, or
// twice the memory the runtime holds now if that is more.
func loadingLimit() int64 {
	s := []metrics.Sample{{Name: "/memory/classes/total:bytes"}, {Name: "/memory/classes/heap/released:bytes"}}
	metrics.Read(s)
	held := int64(s[0].Value.Uint64() - s[1].Value.Uint64())
	return max(loadMemoryLimit, 2*held)
}

// releaseMemory, once a daemon has swapped in what it loaded, collects the
// inventory it replaced and the load's garbage and hands the freed pages
// back to the system at once, rather than over the minutes Go's background
// scavenger takes: a reload then leaves the daemon's RSS where a fresh
// start would.
func releaseMemory() { debug.FreeOSMemory() }
