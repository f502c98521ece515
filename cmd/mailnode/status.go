package main

import (
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"runtime/metrics"
	"syscall"
)

// statusOnSIGUSR1 makes a daemon log one status line each time it gets
// SIGUSR1: its goroutines, the heap in use, its open file descriptors and,
// when conns is not nil, the connections it serves. The soak test reads
// milterd's figures this way (policyd also has go_goroutines on
// --metrics). It returns the function that stops listening.
func statusOnSIGUSR1(log *slog.Logger, name string, conns func() int) (stop func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGUSR1)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-ch:
				log.Info(name+": status", statusAttrs(conns)...)
			case <-done:
				return
			}
		}
	}()
	return func() { signal.Stop(ch); close(done) }
}

// statusAttrs reads the figures without stopping the world (runtime/metrics,
// not runtime.ReadMemStats).
func statusAttrs(conns func() int) []any {
	s := []metrics.Sample{{Name: "/memory/classes/heap/objects:bytes"}, {Name: "/memory/classes/heap/unused:bytes"}}
	metrics.Read(s)
	var heap uint64
	for _, x := range s {
		if x.Value.Kind() == metrics.KindUint64 {
			heap += x.Value.Uint64()
		}
	}
	attrs := []any{"goroutines", runtime.NumGoroutine(), "heap_inuse_bytes", heap, "open_fds", openFDs()}
	if conns != nil {
		attrs = append(attrs, "open_connections", conns())
	}
	return attrs
}

// openFDs counts the entries of /proc/self/fd (-1 where there is none).
func openFDs() int {
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return -1
	}
	return len(ents) - 1 // the directory being read
}
