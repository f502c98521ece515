package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"runtime/debug"
	"runtime/metrics"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"
	"golang.org/x/sys/unix"

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

// reloadGCPercent is milterd's collector setting for the part of a reload
// it runs itself (the helper loads at loadGCPercent): opening the
// snapshot, loading the keys, asking DNS about each selector and building
// the filter, while the running filter serves. At 100,000 mailboxes its
// peak over its steady size went from 1.25-1.28x at 25 to 1.17-1.18x; with
// the pages handed back after each step, a reload takes 1.48-1.66 s
// against 1.30-1.50 before both (the collections of a heap of some 10 MiB
// take a few milliseconds each).
const reloadGCPercent = 10

// loadForDaemon loads the inventory at path for policyd or milterd as the
// tier node named node ("" for node.hostname, as loadAs),
// keeping only what keep says (all of it is validated), with the collector
// at loadGCPercent for the length of the load. It ends with a collection:
// the daemon's own setting then paces the heap from what is live after
// the load (the running and the new inventory), not from the load's last
// collection, which saw its tables half built beside the text.
//
// Run as the mailnode binary (useLoadHelper), the load itself runs in a
// helper process, mailnode load-inventory, which writes the snapshot of
// what the daemon keeps into memory it shares (loadInHelper). If the
// helper cannot run, the daemon loads the inventory itself.
// running is the inventory the daemon runs (a reload; nil at start): a
// snapshot whose domains are the same shares them (OpenSnapshot).
// The report says how the load went, for the daemon's log.
func loadForDaemon(path, node string, keep inventory.Keep, running *inventory.Inventory) (*inventory.Inventory, loadReport, error) {
	var rep loadReport
	if useLoadHelper {
		inv, r, err, ok := loadInHelper(path, node, keep, running)
		if ok {
			return inv, r, err
		}
		rep.Fallback = err.Error()
	}
	defer loadingGC(loadGCPercent)()
	inv, err := inventory.LoadWith(path, inventory.LoadOptions{Node: node, Keep: keep})
	runtime.GC()
	return inv, rep, err
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

// loadingGC sets the collector to percent (unless it is lower already: a
// load inside milterd's reload), and the soft memory limit to
// loadingLimit unless the environment sets GOMEMLIMIT, and returns what
// restores the settings before. loadForDaemon runs under it, and milterd's
// whole reload does: the inventory's load is not all of it there, loading
// the keys, checking their DNS and building the new filter allocate too,
// and at milterd's GOGC=400 the heap could grow to five times the two
// inventories held at the swap before a collection (its reload peak at
// 100,000 mailboxes went from 130 to 121 MiB).
func loadingGC(percent int) (restore func()) {
	old := debug.SetGCPercent(percent)
	if old >= 0 && old < percent { // already lower (nested): stays
		debug.SetGCPercent(old)
	}
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

// useLoadHelper is set by main: the daemons run as the mailnode binary,
// which has the load-inventory command. Tests that run a daemon's code in
// their own process load in process.
var useLoadHelper bool

// helperExecutable is the mailnode binary that runs load-inventory: the
// daemon's own.
var helperExecutable = os.Executable

// helperTimeout bounds a load-inventory run (100,000 mailboxes take 2-3 s
// on two cores): a helper stuck on an unreadable file is killed, and the
// reload fails, the running inventory kept, rather than the daemon
// waiting without end.
var helperTimeout = 5 * time.Minute

// loadReport is how a daemon's load went, for its log.
type loadReport struct {
	Helper   bool          // loaded by mailnode load-inventory
	Fallback string        // why the helper was not used, if it was not
	Peak     int64         // the helper's peak RSS, bytes
	Took     time.Duration // the helper's run
}

// attrs are the load's log attributes.
func (r loadReport) attrs() []any {
	switch {
	case r.Helper:
		return []any{"loaded_by", "load-inventory", "helper_peak_mib", fmt.Sprintf("%.1f", float64(r.Peak)/(1<<20)), "helper_seconds", fmt.Sprintf("%.2f", r.Took.Seconds())}
	case r.Fallback != "":
		return []any{"loaded_by", "in process", "helper_failed", r.Fallback}
	}
	return []any{"loaded_by", "in process"}
}

// The helper's exit status when the inventory has problems: they are on
// its standard output as JSON.
const helperProblems = 3

// loadInHelper runs mailnode load-inventory with two memfds as its file
// descriptors 3 (the snapshot's head) and 4 (its tables) and opens the
// snapshot it wrote there. ok is false when the helper could not give an
// answer (it could not start, or died): err then says why and the caller
// loads in process.
func loadInHelper(path, node string, keep inventory.Keep, running *inventory.Inventory) (inv *inventory.Inventory, rep loadReport, err error, ok bool) {
	exe, err := helperExecutable()
	if err != nil {
		return nil, rep, err, false
	}
	memfd := func(name string) (*os.File, error) {
		fd, err := unix.MemfdCreate(name, unix.MFD_CLOEXEC)
		if err != nil {
			return nil, fmt.Errorf("memfd_create: %w", err)
		}
		return os.NewFile(uintptr(fd), "memfd:"+name), nil
	}
	headFile, err := memfd("mailnode-inventory-head")
	if err != nil {
		return nil, rep, err, false
	}
	defer headFile.Close()
	mem, err := memfd("mailnode-inventory-tables")
	if err != nil {
		return nil, rep, err, false
	}
	defer mem.Close()
	keepName, where := "decisions", inventory.TablesMapped
	if keep == inventory.KeepDomains {
		keepName, where = "domains", inventory.TablesInHeap
	}
	ctx, cancel := context.WithTimeout(context.Background(), helperTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, exe, "load-inventory", "--inventory", path, "--node", node, "--keep", keepName)
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	cmd.ExtraFiles = []*os.File{headFile, mem}
	cmd.WaitDelay = 5 * time.Second // after a kill, do not wait on output a stray child holds open
	start := time.Now()
	runErr := cmd.Run()
	took := time.Since(start)
	var peak int64
	if ps := cmd.ProcessState; ps != nil {
		if ru, ok := ps.SysUsage().(*syscall.Rusage); ok {
			peak = ru.Maxrss << 10 // KiB
		}
	}
	var ee *exec.ExitError
	switch {
	case ctx.Err() != nil:
		// Not loaded in process either: what kept the helper would keep
		// the daemon.
		return nil, rep, fmt.Errorf("%s: mailnode load-inventory did not finish in %v; killed", path, helperTimeout), true
	case runErr == nil:
	case errors.As(runErr, &ee) && ee.ExitCode() == helperProblems:
		var ps inventory.Problems
		if err := json.Unmarshal(out.Bytes(), &ps); err != nil || len(ps) == 0 {
			return nil, rep, fmt.Errorf("load-inventory: unreadable problems: %q", out.String()), false
		}
		return nil, loadReport{Helper: true, Peak: peak, Took: took}, ps, true
	default:
		return nil, rep, fmt.Errorf("load-inventory: %v: %s", runErr, bytes.TrimSpace(errOut.Bytes())), false
	}
	// The head is read into the heap and its memory freed with the file;
	// the tables stay where the helper wrote them.
	st, err := headFile.Stat()
	if err != nil {
		return nil, rep, err, false
	}
	head := make([]byte, st.Size())
	if _, err := headFile.ReadAt(head, 0); err != nil {
		return nil, rep, err, false
	}
	headFile.Close()
	defer loadingGC(loadGCPercent)()
	inv, err = inventory.OpenSnapshot(head, mem, where, running)
	head = nil
	if err != nil {
		return nil, rep, err, false
	}
	runtime.GC()
	return inv, loadReport{Helper: true, Peak: peak, Took: took}, nil, true
}

func loadInventoryCommand() *cli.Command {
	return &cli.Command{
		Name:   "load-inventory",
		Hidden: true,
		Usage:  "load an inventory as policyd or milterd keeps it and write its snapshot to file descriptors 3 (head) and 4 (tables) (the daemons run it at start and on every reload)",
		Description: `policyd and milterd load their inventory through this command, in a process
of its own: the inventory's text, its decoded domains and the tables being built
are freed when it exits, and the daemon opens the snapshot it leaves in memory
the two share. On problems it prints them as JSON on standard output and exits
with status 3.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "inventory", Required: true, Usage: "the inventory `FILE`"},
			nodeFlag(),
			&cli.StringFlag{Name: "keep", Value: "decisions", Usage: "what to keep: decisions (policyd) or domains (milterd)"},
		},
		Action: func(c *cli.Context) error {
			var keep inventory.Keep
			switch c.String("keep") {
			case "decisions":
				keep = inventory.KeepDecisions
			case "domains":
				keep = inventory.KeepDomains
			default:
				return cli.Exit(fmt.Sprintf("load-inventory: --keep %q: want decisions or domains", c.String("keep")), 2)
			}
			loadingGC(loadGCPercent) // for the rest of the process's short life
			inv, err := inventory.LoadWith(c.String("inventory"), inventory.LoadOptions{Node: c.String("node"), Keep: keep})
			if err != nil {
				if b, jerr := json.Marshal(inventory.AsProblems(err)); jerr == nil {
					os.Stdout.Write(b)
					os.Exit(helperProblems)
				}
				return cli.Exit(fmt.Sprintf("load-inventory: %v", err), 1)
			}
			headOut, tablesOut := os.NewFile(3, "head"), os.NewFile(4, "tables")
			// Files open for writing (the daemons give it memfds): when the
			// caller left 3 and 4 closed, the Go runtime opens its cgroup
			// files there, read-only.
			for _, f := range []*os.File{headOut, tablesOut} {
				fl, err := unix.FcntlInt(f.Fd(), unix.F_GETFL, 0)
				if err != nil || fl&unix.O_ACCMODE == unix.O_RDONLY {
					return cli.Exit("load-inventory: the snapshot is written to file descriptors 3 and 4, which must be open for writing (the daemons give it memfds)", 2)
				}
			}
			hw, tw := bufio.NewWriterSize(headOut, 1<<20), bufio.NewWriterSize(tablesOut, 1<<20)
			err = inv.WriteSnapshot(hw, tw)
			if err == nil {
				err = hw.Flush()
			}
			if err == nil {
				err = tw.Flush()
			}
			if err != nil {
				return cli.Exit(fmt.Sprintf("load-inventory: write the snapshot: %v", err), 1)
			}
			return nil
		},
	}
}
