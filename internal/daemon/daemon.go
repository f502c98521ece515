// Package daemon is what policyd and milterd share as long-running
// processes, apart from their protocols: telling systemd their state
// (Notify), logging a status line on SIGUSR1 (StatusOnSIGUSR1), and serving
// their metrics, /healthz and status page on one HTTP listener
// (ServeMetrics). cmd/mailnode wires it; nothing here knows the inventory.
package daemon

import (
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"runtime"
	"runtime/metrics"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/mailnode/mailnode/internal/sdnotify"
)

// Notify tells systemd (Type=notify units) the daemon's state; outside
// systemd it does nothing. A failure is logged, never fatal.
func Notify(log *slog.Logger, daemon, state string) {
	if _, err := sdnotify.Notify(state); err != nil {
		log.Warn(daemon+": cannot notify systemd", "state", state, "err", err)
	}
}

// StatusOnSIGUSR1 makes a daemon log one status line each time it gets
// SIGUSR1: its goroutines, the heap in use, its open file descriptors and,
// when conns is not nil, the connections it serves. The soak test reads
// the daemons' figures this way. It returns the function that stops
// listening.
func StatusOnSIGUSR1(log *slog.Logger, daemon string, conns func() int) (stop func()) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGUSR1)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-ch:
				log.Info(daemon+": status", statusAttrs(conns)...)
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

// ServeMetrics serves metrics' /metrics and /healthz, and page at "/", on
// addr (HOST:PORT), and returns the function that stops it. The listener
// is open when it returns, so a bad address is an error at start.
func ServeMetrics(log *slog.Logger, daemon, addr string, metrics http.Handler, page http.Handler) (stop func(), err error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", metrics)
	mux.Handle("/healthz", metrics)
	mux.Handle("/", page)
	hs := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go hs.Serve(ln)
	log.Info(daemon+": metrics", "addr", ln.Addr().String())
	return func() { hs.Close() }, nil
}

// MetricsHandler serves a daemon's registry at /metrics and its health at
// /healthz: 503 "not serving" when healthy says so (draining), else 200
// "ok", with a line "warning: ..." while warning has one (the inventory
// drift: the daemon still works, so this is for the operator, not a load
// balancer). A nil healthy or warning is left out.
func MetricsHandler(reg *prometheus.Registry, healthy func() bool, warning func() string) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if healthy != nil && !healthy() {
			http.Error(w, "not serving", http.StatusServiceUnavailable)
			return
		}
		body := "ok\n"
		if warning != nil {
			if msg := warning(); msg != "" {
				body += "warning: " + msg + "\n"
			}
		}
		w.Write([]byte(body))
	})
	return mux
}
