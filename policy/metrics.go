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
	"github.com/mailnode/mailnode/internal/statuspage"
	"github.com/mailnode/mailnode/inventory"

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

	// recent counts the RCPT decisions per matrix cell over the last hour
	// and rejections keeps the latest refusals: the status page's.
	recent     *statuspage.Window
	rejections *statuspage.Ring
}

// The matrix cells, numbered for the status page's window: sender class,
// authorization and recipient class, three values each.
const numCells = 27

func cellIndex(c Cell) int {
	if c.Sender < 0 || c.Sender > 2 || c.Auth < 0 || c.Auth > 2 || c.Recipient < 0 || c.Recipient > 2 {
		return -1
	}
	return (int(c.Sender)*3+int(c.Auth))*3 + int(c.Recipient)
}

// cellNames are the cells' names by cellIndex, made once: the window and
// the rejections ring store them without building a string per decision.
var cellNames = func() []string {
	names := make([]string, numCells)
	for s := range 3 {
		for a := range 3 {
			for r := range 3 {
				c := Cell{Sender: inventory.Class(s), Auth: inventory.Auth(a), Recipient: inventory.Class(r)}
				names[cellIndex(c)] = c.String()
			}
		}
	}
	return names
}()

// CellNames names the series of Recent, the matrix cells.
func CellNames() []string { return cellNames }

// RingSize is how many refusals Rejections keeps.
const RingSize = 50

// Recent is the last hour's RCPT decisions per matrix cell (CellNames) by
// outcome: accepted (DUNNO, shadow mode's too), rejected (550),
// greylisted and deferred (a rate limit's 450).
func (m *Metrics) Recent() *statuspage.Window { return m.recent }

// Rejections are the latest recipients refused with a 550.
func (m *Metrics) Rejections() *statuspage.Ring { return m.rejections }

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
	m := &Metrics{Registry: prometheus.NewRegistry(), recent: statuspage.NewWindow(numCells), rejections: statuspage.NewRing(RingSize)}
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
	// The bbolt store's counts of the whole process (state.BoltTotals).
	var bolt []prometheus.Collector
	for _, c := range []struct {
		name, help string
		v          func(state.BoltCounts) int64
	}{
		{"brake_waits_total", "Greylist and rate limit updates that waited because the bbolt file's commits were more than half of their crash bound (1 s) behind.",
			func(c state.BoltCounts) int64 { return c.Braked }},
		{"refreshes_dropped_total", "Refreshes of passing greylist entries (a later expiry) not written because the bbolt file's commits were behind; the pass was answered at once.",
			func(c state.BoltCounts) int64 { return c.Dropped }},
		{"file_read_bytes_total", "Bytes of the bbolt state file read into the page cache: the whole file once after it opens (in the background), then what it grows by.",
			func(c state.BoltCounts) int64 { return c.Read }},
		{"low_priority_commits_total", "bbolt commits run on the store's thread at a lower CPU priority (nice +10), so that decisions preempt them; the others ran at policyd's priority.",
			func(c state.BoltCounts) int64 { return c.Low }},
		{"raised_commits_total", "bbolt commits the low-priority thread began and policyd finished at its own priority, as the thread waited for a CPU while it wrote the batch (the cores were busy).",
			func(c state.BoltCounts) int64 { return c.Raised }},
		{"starved_commits_total", "bbolt commits the low-priority thread finished that waited too long for a CPU while other processes took half of the machine's CPU time or more; each sends the commits to policyd's priority for 30 s to 10 min.",
			func(c state.BoltCounts) int64 { return c.Starved }},
		{"crowded_commits_total", "bbolt commits the low-priority thread finished that waited as long for a CPU while policyd's own work kept the cores busy; no hold-off (its decisions wait at the writers' brake instead).",
			func(c state.BoltCounts) int64 { return c.Crowded }},
	} {
		bolt = append(bolt, prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "mailnode_policy_state_" + c.name, Help: c.help},
			func() float64 { return float64(c.v(state.BoltTotals())) }))
	}
	m.drift = drift.NewGauges("mailnode_policy", "policyd")
	m.Registry.MustRegister(m.drift.Collectors()...)
	m.Registry.MustRegister(m.decisions, m.latency, m.open, m.malformed, m.reloads, m.logDrops,
		m.greylist, m.rateRefus, m.stateErrs, m.wouldRej,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.Registry.MustRegister(bolt...)
	return m
}

func newCounter(name, help string) prometheus.Counter {
	return prometheus.NewCounter(prometheus.CounterOpts{Name: name, Help: help})
}

func newCounterVec(name, help string, labels ...string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
}

func (m *Metrics) observe(req *Request, d Decision, start time.Time) {
	took := time.Since(start)
	if d.Reason != ReasonNotRcpt {
		m.recentDecision(req, d, start)
	}
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

// recentDecision counts a RCPT decision for the status page in fixed
// memory: nothing is allocated but a rejection's client name[address]
// (its other strings are the request's own).
func (m *Metrics) recentDecision(req *Request, d Decision, at time.Time) {
	cell := cellIndex(d.Cell)
	if cell < 0 {
		return
	}
	o := statuspage.Accepted
	switch {
	case d.Action == Reject:
		o = statuspage.Rejected
		m.rejections.Add(statuspage.Rejection{
			Time: at, QueueID: req.QueueID, Client: clientName(req), Sender: req.Sender, Recipient: req.Recipient,
			Cell: cellNames[cell], Reply: d.Reply,
		})
	case d.Action == Defer && (d.Greylist == state.ReasonNew || d.Greylist == state.ReasonEarly):
		o = statuspage.Greylisted
	case d.Action == Defer:
		o = statuspage.Deferred
	}
	m.recent.Add(at, cell, o)
}

// clientName is name[address] as Postfix logs it; the address alone when
// Postfix sent no name.
func clientName(req *Request) string {
	if req.ClientName == "" {
		return req.ClientAddress
	}
	return req.ClientName + "[" + req.ClientAddress + "]"
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
