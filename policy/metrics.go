package policy

import (
	"errors"
	"net/http"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/mailnode/mailnode/internal/daemon"
	"github.com/mailnode/mailnode/internal/drift"

	"github.com/mailnode/mailnode/state"
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
	greylist  *prometheus.CounterVec
	rateRefus *prometheus.CounterVec
	stateErrs *prometheus.CounterVec
	wouldRej  *prometheus.CounterVec
	// drift is the inventory drift (package internal/drift); its warning
	// is the line /healthz adds after "ok".
	drift *drift.Gauges

	// counters caches the decision counter of each label set: the vector's
	// own lookup hashes the label values on every call.
	counters sync.Map // counterKey -> prometheus.Counter
	// stateCounters caches the greylist and rate limit counters: stateKey -> prometheus.Counter.
	stateCounters sync.Map
	// wouldCounters caches the shadow mode counters: wouldKey -> prometheus.Counter.
	wouldCounters sync.Map
}

type stateKey struct {
	grey   bool // greylist, else rate limit refusal
	reason state.Reason
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
	m.decisions = newCounterVec("mailnode_policy_decisions_total",
		"Policy decisions by matrix cell (sender/auth->recipient, \"-\" outside RCPT), action and reason.",
		"cell", "action", "reason")
	m.latency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "mailnode_policy_decision_seconds",
		Help:    "Time from a complete request to its reply written.",
		Buckets: prometheus.ExponentialBuckets(5e-6, 2.5, 12), // 5µs .. ~1.2s
	})
	m.open = prometheus.NewGauge(prometheus.GaugeOpts{
		Name: "mailnode_policy_open_connections",
		Help: "Open policy protocol connections.",
	})
	m.malformed = newCounter("mailnode_policy_malformed_requests_total",
		"Requests closed without a reply because they broke the protocol or a limit.")
	m.reloads = newCounterVec("mailnode_policy_inventory_reloads_total",
		"Inventory reloads (SIGHUP) by result: ok, or failed (the old inventory stays).", "result")
	m.logDrops = newCounter("mailnode_policy_maillog_dropped_total",
		"Mail log lines dropped because the log destination stalled.")
	m.greylist = newCounterVec("mailnode_policy_greylist_total",
		"Greylisting outcomes for outside->local recipients by result: new and early-retry (deferred with 450), triplet-passed, client-awl, and the exemptions (null-sender, postmaster, client-whitelist, sender-whitelist).",
		"result")
	m.rateRefus = newCounterVec("mailnode_policy_ratelimit_refusals_total",
		"Recipients of authorized senders deferred with 450 by a rate limit, by reason: over-messages or over-recipients.",
		"reason")
	m.stateErrs = newCounterVec("mailnode_policy_state_errors_total",
		"Requests left without a reply (Postfix applies default_action 451 4.3.5) because the greylist or rate limit store failed, by check.",
		"check")
	for _, c := range []string{"greylist", "ratelimit"} {
		m.stateErrs.WithLabelValues(c)
	}
	m.wouldRej = newCounterVec("mailnode_policy_shadow_would_reject_total",
		"Shadow mode (policy.mode: shadow): recipients answered DUNNO that enforce mode would have refused, by matrix cell and reason (the matrix's, or greylist-<why>, ratelimit-<why> for a 450).",
		"cell", "reason")
	m.drift = drift.NewGauges("mailnode_policy", "policyd")
	m.Registry.MustRegister(m.drift.Collectors()...)
	m.Registry.MustRegister(m.decisions, m.latency, m.open, m.malformed, m.reloads, m.logDrops,
		m.greylist, m.rateRefus, m.stateErrs, m.wouldRej,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

func newCounter(name, help string) prometheus.Counter {
	return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
}

func newCounterVec(name, help string, labels ...string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
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
	if d.Greylist != "" {
		m.stateCounter(stateKey{grey: true, reason: d.Greylist}).Inc()
	}
	if d.RateLimit != "" && d.Action == Defer {
		m.stateCounter(stateKey{reason: d.RateLimit}).Inc()
	}
	if d.WouldReject != "" {
		m.wouldReject(d)
	}
	m.latency.Observe(took.Seconds())
}

func (m *Metrics) stateCounter(k stateKey) prometheus.Counter {
	if c, ok := m.stateCounters.Load(k); ok {
		return c.(prometheus.Counter)
	}
	var c prometheus.Counter
	if k.grey {
		c = m.greylist.WithLabelValues(string(k.reason))
	} else {
		c = m.rateRefus.WithLabelValues(string(k.reason))
	}
	got, _ := m.stateCounters.LoadOrStore(k, c)
	return got.(prometheus.Counter)
}

type wouldKey struct {
	cell   Cell
	reason string
}

func (m *Metrics) wouldReject(d Decision) {
	k := wouldKey{cell: d.Cell, reason: d.WouldReason()}
	c, ok := m.wouldCounters.Load(k)
	if !ok {
		c, _ = m.wouldCounters.LoadOrStore(k, m.wouldRej.WithLabelValues(d.Cell.String(), k.reason))
	}
	c.(prometheus.Counter).Inc()
}

// stateFailed counts a request left unanswered because the store failed.
func (m *Metrics) stateFailed(err error) {
	check := "internal"
	var se *StateError
	if errors.As(err, &se) {
		check = se.Check
	}
	m.stateErrs.WithLabelValues(check).Inc()
}

// Reloaded counts an inventory reload.
func (m *Metrics) Reloaded(ok bool) {
	if ok {
		m.reloads.WithLabelValues("ok").Inc()
	} else {
		m.reloads.WithLabelValues("failed").Inc()
	}
}

// Inventory records the digest of the running inventory and of the one the
// installed Postfix config comes from; warning, when not "", is the drift
// /healthz reports (still 200: policyd answers correctly by its inventory).
func (m *Metrics) Inventory(running, installed, warning string) {
	m.drift.Set(running, installed, warning)
}

// LogDropped counts a dropped mail log line.
func (m *Metrics) LogDropped() { m.logDrops.Inc() }

// Handler serves /metrics and /healthz. healthy says whether policyd is
// serving; /healthz answers 200 "ok" or 503. A 200 may add lines
// "warning: ..." (see Inventory).
func (m *Metrics) Handler(healthy func() bool) http.Handler {
	return daemon.MetricsHandler(m.Registry, healthy, m.drift)
}
