// Package daemon is what policyd and milterd share as long-running
// processes, apart from their protocols: telling systemd their state
// (Notify), logging a status line on SIGUSR1 (StatusOnSIGUSR1), and serving
// their metrics, /healthz and status page on one HTTP listener
// (ServeMetrics). cmd/mailnode wires it; nothing here knows the inventory.
package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
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
	if ta, ok := ln.Addr().(*net.TCPAddr); ok && !ta.IP.IsLoopback() {
		log.Warn(daemon+": the metrics listener and its status page have no authentication and listen beyond loopback; keep them on a management network", "addr", ln.Addr().String())
	}
	return func() { hs.Close() }, nil
}

// Inventory is what /healthz says about the inventory a daemon runs
// (drift.Gauges): its digest, the installed config's, and the drift
// warning ("" when there is none).
type Inventory interface {
	Digests() (running, installed string)
	Warning() string
}

// Health is /healthz?format=json.
type Health struct {
	Status    string `json:"status"`                     // "ok" or "not serving"
	Digest    string `json:"digest,omitempty"`           // of the inventory the daemon runs
	Installed string `json:"installed_digest,omitempty"` // in the installed Postfix config
	Warning   string `json:"warning,omitempty"`          // the inventory drift
}

// MetricsHandler serves a daemon's registry at /metrics and its health at
// /healthz: 503 "not serving" when healthy says so (draining), else 200
// "ok", with a line "warning: ..." while inv has one (the inventory
// drift: the daemon still works, so this is for the operator, not a load
// balancer). /healthz?format=json answers the same as a Health, with the
// digests (the status pages of the other daemon read it). A nil healthy
// or inv is left out.
func MetricsHandler(reg *prometheus.Registry, healthy func() bool, inv Inventory) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		h := Health{Status: "ok"}
		code := http.StatusOK
		if healthy != nil && !healthy() {
			h.Status, code = "not serving", http.StatusServiceUnavailable
		}
		if inv != nil {
			h.Digest, h.Installed = inv.Digests()
			h.Warning = inv.Warning()
		}
		switch f := r.URL.Query().Get("format"); f {
		case "json":
			w.Header().Set("Content-Type", "application/json")
			w.Header().Set("Cache-Control", "no-store")
			w.WriteHeader(code)
			json.NewEncoder(w).Encode(h)
			return
		case "", "text":
		default:
			http.Error(w, fmt.Sprintf("format %q: json or text", f), http.StatusBadRequest)
			return
		}
		if code != http.StatusOK {
			http.Error(w, h.Status, code)
			return
		}
		body := "ok\n"
		if h.Warning != "" {
			body += "warning: " + h.Warning + "\n"
		}
		w.Write([]byte(body))
	})
	return mux
}

// ProbeHealth asks the daemon whose metrics listener is addr (HOST:PORT)
// for /healthz?format=json. A daemon that answers 503 is reported with its
// Health and no error; one that cannot be reached, or answers something
// else, is an error.
func ProbeHealth(ctx context.Context, client *http.Client, addr string) (Health, error) {
	var h Health
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+"/healthz?format=json", nil)
	if err != nil {
		return h, err
	}
	resp, err := client.Do(req)
	if err != nil {
		return h, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusServiceUnavailable {
		return h, fmt.Errorf("/healthz answered %s", resp.Status)
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 64<<10)).Decode(&h); err != nil {
		return h, fmt.Errorf("/healthz: %s, not its JSON: %w", resp.Status, err)
	}
	return h, nil
}

// Every calls f every interval until ctx ends: the periodic checks of the
// daemons (inventory drift, DKIM publication).
func Every(ctx context.Context, interval time.Duration, f func()) {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			f()
		}
	}
}
