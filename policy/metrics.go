package policy

import (
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics are policyd's Prometheus metrics, on their own registry.
type Metrics struct {
	Registry *prometheus.Registry

	decisions *prometheus.CounterVec
	latency   prometheus.Histogram
	open      prometheus.Gauge
	malformed prometheus.Counter
	reloads   *prometheus.CounterVec
	logDrops  prometheus.Counter

	// counters caches the decision counter of each label set: the vector's
	// own lookup hashes the label values on every call.
	counters sync.Map // counterKey -> prometheus.Counter
}

type counterKey struct {
	cell   Cell
	stage  bool // decided at RCPT
	action Action
	reason Reason
}

// NewMetrics creates the metrics and registers them, with the Go runtime
// and process collectors, on a new registry.
func NewMetrics() *Metrics {
	m := &Metrics{Registry: prometheus.NewRegistry()}
	m.decisions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mailnode_policy_decisions_total",
		Help: "Policy decisions by matrix cell (sender/auth->recipient, \"-\" outside RCPT), action and reason.",
	}, []string{"cell", "action", "reason"})
	m.latency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "mailnode_policy_decision_seconds",
		Help:    "Time from a complete request to its reply written.",
		Buckets: prometheus.ExponentialBuckets(5e-6, 2.5, 12), // 5µs .. ~1.2s
	})
	m.open = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "mailnode_policy_open_connections",
		Help: "Open policy protocol connections.",
	})
	m.malformed = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "mailnode_policy_malformed_requests_total",
		Help: "Requests closed without a reply because they broke the protocol or a limit.",
	})
	m.reloads = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "mailnode_policy_inventory_reloads_total",
		Help: "Inventory reloads (SIGHUP) by result: ok, or failed (the old inventory stays).",
	}, []string{"result"})
	m.logDrops = prometheus.NewCounter(prometheus.CounterOpts{
		Name: "mailnode_policy_maillog_dropped_total",
		Help: "Mail log lines dropped because the log destination stalled.",
	})
	m.Registry.MustRegister(m.decisions, m.latency, m.open, m.malformed, m.reloads, m.logDrops,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func (m *Metrics) observe(d Decision, took time.Duration) {
	k := counterKey{cell: d.Cell, stage: d.Reason != ReasonNotRcpt, action: d.Action, reason: d.Reason}
	c, ok := m.counters.Load(k)
	if !ok {
		cell := "-"
		if k.stage {
			cell = d.Cell.String()
		}
		c, _ = m.counters.LoadOrStore(k, m.decisions.WithLabelValues(cell, d.Action.String(), string(d.Reason)))
	}
	c.(prometheus.Counter).Inc()
	m.latency.Observe(took.Seconds())
}

// Reloaded counts an inventory reload.
func (m *Metrics) Reloaded(ok bool) {
	if ok {
		m.reloads.WithLabelValues("ok").Inc()
	} else {
		m.reloads.WithLabelValues("failed").Inc()
	}
}

// LogDropped counts a dropped mail log line.
func (m *Metrics) LogDropped() { m.logDrops.Inc() }

// Handler serves /metrics and /healthz. healthy says whether policyd is
// serving; /healthz answers 200 "ok" or 503.
func (m *Metrics) Handler(healthy func() bool) http.Handler {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("/healthz", func(w http.ResponseWriter, r *http.Request) {
		if healthy != nil && !healthy() {
			http.Error(w, "not serving", http.StatusServiceUnavailable)
			return
		}
		w.Write([]byte("ok\n"))
	})
	return mux
}
