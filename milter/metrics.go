package milter

import (
	"context"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"

	"github.com/mailnode/mailnode/internal/daemon"
	"github.com/mailnode/mailnode/internal/drift"
	"github.com/mailnode/mailnode/resolver"
)

// Metrics are milterd's Prometheus metrics, on their own registry, named
// and served as policyd's (policy.Metrics): mailnode_milter_*, with the Go
// runtime and process collectors, /metrics and /healthz. One Metrics lives
// as long as the process; every Filter a reload builds shares it.
type Metrics struct {
	Registry *prometheus.Registry

	messages  *prometheus.CounterVec
	signed    *prometheus.CounterVec
	results   *prometheus.CounterVec
	verdicts  *prometheus.CounterVec
	engine    *prometheus.HistogramVec
	avScans   *prometheus.CounterVec
	avTime    *prometheus.HistogramVec
	dns       *prometheus.HistogramVec
	errors    *prometheus.CounterVec
	wouldRej  *prometheus.CounterVec
	reloads   *prometheus.CounterVec
	removedAR prometheus.Counter
	arc       *arcMetrics // ARC sealing, see arc.go
	srs       *srsMetrics // forwarding.srs (srs.go)
	// drift is the inventory drift (package internal/drift); its warning
	// is the line /healthz adds after "ok".
	drift *drift.Gauges
}

// The kinds of mailnode_milter_errors_total.
const (
	ErrKindSign     = "sign"      // a signature could not be made: the message is tempfailed
	ErrKindEngine   = "engine"    // the spam engine failed (unreachable, slow, bad answer)
	ErrKindLimit    = "limit"     // a message over MaxHeaders/MaxHeaderBytes: connection closed
	ErrKindProtocol = "protocol"  // events out of order: connection closed
	ErrKindMTA      = "mta"       // the header changes or the hold could not be sent to the MTA
	ErrKindAV       = "antivirus" // the virus scanner failed: on_failure decided
)

// NewMetrics creates the metrics and registers them, with the Go runtime
// and process collectors, on a new registry.
func NewMetrics() *Metrics {
	m := &Metrics{Registry: prometheus.NewRegistry()}
	m.messages = counterVec("mailnode_milter_messages_total",
		"Messages finished by action: sign, verify, pass or refuse (Decide's, e.g. a foreign From: under sender_login strict).",
		"action")
	m.signed = counterVec("mailnode_milter_signatures_total",
		"DKIM signatures made, by signing domain, selector and algorithm.",
		"domain", "selector", "algorithm")
	m.results = counterVec("mailnode_milter_auth_results_total",
		"Verification results of spam-checked messages by method (spf, dkim, dmarc, arc) and result (pass, fail, none, temperror, ...): one per method result written to Authentication-Results.",
		"method", "result")
	m.verdicts = counterVec("mailnode_milter_spam_verdicts_total",
		"Verdicts of the inbound chain per action: deliver, tag, tempfail, quarantine, reject (what the verdict said; shadow mode still counts it here).",
		"action")
	m.engine = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "mailnode_milter_engine_seconds",
		Help:    "Time of one spam engine check (rspamd, spamd), by engine and result: ok or error.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2.5, 12), // 1ms .. ~24s
	}, []string{"engine", "result"})
	m.avScans = zeroed(counterVec("mailnode_milter_antivirus_scans_total",
		"Virus scans (spam.antivirus) by result: clean, virus (refused) or error (scanner down, slow or failing: on_failure tempfailed the message or let it pass unscanned).",
		"result"), AVClean, AVVirus, AVError)
	m.avTime = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "mailnode_milter_antivirus_seconds",
		Help:    "Time from the end of a message's stream to the virus scanner's answer, read once milterd's own end-of-message work (signature, checks), which the scan overlaps, is done; by engine (clamd) and result: ok (clean or virus) or error.",
		Buckets: prometheus.ExponentialBuckets(0.0002, 2.5, 14), // 200µs .. ~30s
	}, []string{"engine", "result"})
	m.dns = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "mailnode_milter_dns_seconds",
		Help:    "Time of one DNS lookup through node.resolver (SPF, DKIM keys, DMARC, DNSBL), by record type and result: ok, notfound (NXDOMAIN, no data) or error.",
		Buckets: prometheus.ExponentialBuckets(5e-5, 3, 12), // 50µs .. ~8.9s
	}, []string{"type", "result"})
	m.errors = counterVec("mailnode_milter_errors_total",
		"Trouble by kind: sign (message tempfailed), engine (spam engine failed), antivirus (virus scanner failed), limit and protocol (connection closed), mta (changes not sent).",
		"kind")
	for _, k := range []string{ErrKindSign, ErrKindEngine, ErrKindAV, ErrKindLimit, ErrKindProtocol, ErrKindMTA} {
		m.errors.WithLabelValues(k)
	}
	m.wouldRej = counterVec("mailnode_milter_shadow_would_reject_total",
		"Shadow mode (policy.mode: shadow): messages accepted that enforce mode would have refused, deferred or held, by matrix cell and what: reject (a 5xx), tempfail (a 4xx) or hold.",
		"cell", "what")
	m.reloads = counterVec("mailnode_milter_inventory_reloads_total",
		"Inventory reloads (SIGHUP) by result: ok, or failed (the running inventory and keys stay).", "result")
	m.removedAR = prometheus.NewCounter(prometheus.CounterOpts{Name: "mailnode_milter_forged_ar_removed_total",
		Help: "Authentication-Results headers with the node's authserv-id that came with a message and were removed."})
	m.drift = drift.NewGauges("mailnode_milter", "milterd")
	m.srs = newSRSMetrics(m.Registry)
	m.Registry.MustRegister(m.drift.Collectors()...)
	m.Registry.MustRegister(m.messages, m.signed, m.results, m.verdicts, m.engine, m.avScans, m.avTime, m.dns, m.errors,
		m.wouldRej, m.reloads, m.removedAR,
		collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	m.arc = newARCMetrics(m.Registry)
	return m
}

func counterVec(name, help string, labels ...string) *prometheus.CounterVec {
	return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
}

// zeroed creates c's series for each of values (of its one label), so that
// they are exported at 0 before the first count.
func zeroed(c *prometheus.CounterVec, values ...string) *prometheus.CounterVec {
	for _, v := range values {
		c.WithLabelValues(v)
	}
	return c
}

// observe counts one finished message. A nil Metrics counts nothing.
func (m *Metrics) observe(p Policy, res Result) {
	if m == nil {
		return
	}
	d := res.Decision
	m.messages.WithLabelValues(d.Action.String()).Inc()
	for _, s := range d.Signed {
		// "domain/selector/algorithm"
		parts := strings.SplitN(s, "/", 3)
		if len(parts) == 3 {
			m.signed.WithLabelValues(parts[0], parts[1], parts[2]).Inc()
		}
	}
	for _, r := range d.Results {
		method, result := resultValue(r)
		if method != "" {
			m.results.WithLabelValues(method, result).Inc()
		}
	}
	if d.Action == Verify && (d.Verdict.Scored || d.Verdict.Disposition != Deliver) {
		m.verdicts.WithLabelValues(d.Verdict.Disposition.String()).Inc()
	}
	if d.Err != "" {
		m.errors.WithLabelValues(ErrKindSign).Inc()
	}
	if d.Verdict.EngineErr != "" {
		m.errors.WithLabelValues(ErrKindEngine).Inc()
	}
	if d.RemovedAR > 0 {
		m.removedAR.Add(float64(d.RemovedAR))
	}
	switch {
	case d.WouldHold != "":
		m.wouldRej.WithLabelValues(cells(p, d), "hold").Inc()
	case strings.HasPrefix(d.WouldReject, "4"):
		m.wouldRej.WithLabelValues(cells(p, d), "tempfail").Inc()
	case d.WouldReject != "":
		m.wouldRej.WithLabelValues(cells(p, d), "reject").Inc()
	}
}

// resultValue splits "dkim=pass header.d=example.org" into dkim and pass.
func resultValue(r string) (method, result string) {
	f, _, _ := strings.Cut(r, " ")
	method, result, ok := strings.Cut(f, "=")
	if !ok {
		return "", ""
	}
	return strings.ToLower(method), strings.ToLower(result)
}

// Error counts one error of a kind (ErrKind*). A nil Metrics counts nothing.
func (m *Metrics) Error(kind string) {
	if m != nil {
		m.errors.WithLabelValues(kind).Inc()
	}
}

// Reloaded counts an inventory reload.
func (m *Metrics) Reloaded(ok bool) {
	if m == nil {
		return
	}
	if ok {
		m.reloads.WithLabelValues("ok").Inc()
	} else {
		m.reloads.WithLabelValues("failed").Inc()
	}
}

// ObserveEngine times one engine check (SpamCheck.ObserveEngine).
func (m *Metrics) ObserveEngine(engine string, took time.Duration, err error) {
	if m == nil {
		return
	}
	result := "ok"
	if err != nil {
		result = "error"
	}
	m.engine.WithLabelValues(engine, result).Observe(took.Seconds())
}

// observeAntivirus counts one virus scan and times clamd's answer.
func (m *Metrics) observeAntivirus(av AVResult) {
	if m == nil {
		return
	}
	m.avScans.WithLabelValues(av.Result).Inc()
	result := "ok"
	if av.Result == AVError {
		result = "error"
		m.errors.WithLabelValues(ErrKindAV).Inc()
	}
	m.avTime.WithLabelValues("clamd", result).Observe(av.Took.Seconds())
}

// observeDNSIn times one lookup made under ctx. A check tried
// from the resolver's cache first (resolver.CacheOnly) counts its answers
// only if it keeps them (resolver.Defer); one that missed the cache asks
// again in the background, and those lookups count.
func (m *Metrics) observeDNSIn(ctx context.Context, typ string, start time.Time, err error) {
	if resolver.IsNotCached(err) {
		return // not asked
	}
	took := time.Since(start)
	if resolver.Defer(ctx, func() { m.recordDNS(typ, took, err) }) {
		return
	}
	m.recordDNS(typ, took, err)
}

func (m *Metrics) recordDNS(typ string, took time.Duration, err error) {
	result := "ok"
	switch {
	case err == nil:
	case resolver.IsTemporary(err):
		result = "error"
	default:
		result = "notfound"
	}
	m.dns.WithLabelValues(typ, result).Observe(took.Seconds())
}

// Resolver wraps r so that every lookup is timed in
// mailnode_milter_dns_seconds. A nil Metrics returns r.
func (m *Metrics) Resolver(r resolver.Resolver) resolver.Resolver {
	if m == nil {
		return r
	}
	return timedResolver{r: r, m: m}
}

type timedResolver struct {
	r resolver.Resolver
	m *Metrics
}

// HonoursCacheOnly: as the resolver it wraps.
func (t timedResolver) HonoursCacheOnly() bool { return resolver.HonoursCacheOnly(t.r) }

func (t timedResolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	start := time.Now()
	v, err := t.r.LookupTXT(ctx, name)
	t.m.observeDNSIn(ctx, "TXT", start, err)
	return v, err
}

func (t timedResolver) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	start := time.Now()
	v, err := t.r.LookupMX(ctx, name)
	t.m.observeDNSIn(ctx, "MX", start, err)
	return v, err
}

func (t timedResolver) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	start := time.Now()
	v, err := t.r.LookupIPAddr(ctx, host)
	t.m.observeDNSIn(ctx, "A/AAAA", start, err)
	return v, err
}

func (t timedResolver) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	start := time.Now()
	v, err := t.r.LookupAddr(ctx, addr)
	t.m.observeDNSIn(ctx, "PTR", start, err)
	return v, err
}

func (t timedResolver) LookupA(ctx context.Context, name string) ([]netip.Addr, error) {
	start := time.Now()
	v, err := t.r.LookupA(ctx, name)
	t.m.observeDNSIn(ctx, "A", start, err)
	return v, err
}

// Inventory records the digest of the running inventory and of the one the
// installed Postfix config comes from; warning, when not "", is the drift
// /healthz reports (still 200: milterd works by the inventory it runs).
func (m *Metrics) Inventory(running, installed, warning string) {
	m.drift.Set(running, installed, warning)
}

// Handler serves /metrics and /healthz. healthy says whether milterd is
// serving; /healthz answers 200 "ok" (with a "warning: " line while the
// inventory drifts) or 503.
func (m *Metrics) Handler(healthy func() bool) http.Handler {
	return daemon.MetricsHandler(m.Registry, healthy, m.drift)
}
