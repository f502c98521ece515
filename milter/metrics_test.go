package milter

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/mailnode/mailnode/dns/dnstest"
	"github.com/mailnode/mailnode/internal/promtest"
	"github.com/mailnode/mailnode/milter/miltertest"
	"github.com/mailnode/mailnode/resolver"
	"github.com/mailnode/mailnode/spam"
)

// metricsFilter is spamFilter with Metrics wired as the Builder wires
// them: the engine timed, every DNS question timed.
func metricsFilter(t *testing.T, eng spam.Engine) (*Filter, *Metrics) {
	t.Helper()
	m := NewMetrics()
	f := spamFilter(t, eng, nil)
	f.Metrics = m
	for _, c := range f.Checks {
		switch c := c.(type) {
		case *SpamCheck:
			c.ObserveEngine = m.ObserveEngine
			c.Resolver = m.Resolver(c.Resolver.(resolver.Resolver))
		case *SPFCheck:
			c.Resolver = m.Resolver(c.Resolver.(resolver.Resolver))
		case *DMARCCheck:
			lookup := c.LookupTXT
			c.LookupTXT = func(ctx context.Context, name string) ([]string, error) {
				start := time.Now()
				v, err := lookup(ctx, name)
				m.observeDNSIn(ctx, "TXT", start, err)
				return v, err
			}
		}
	}
	return f, m
}

// counter reads one series of a metric from the registry: a counter's
// value, or a histogram's sample count. labels are name, value pairs.
func counter(t *testing.T, m *Metrics, name string, labels ...string) float64 {
	t.Helper()
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	v, _, err := promtest.Value(m.Registry, name, want)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// TestMetricsInbound drives inbound messages through the chain and reads
// the verification, verdict, engine and DNS metrics.
func TestMetricsInbound(t *testing.T) {
	eng := &fakeEngine{rep: &spam.Report{Score: 1, Action: "no action"}}
	f, m := metricsFilter(t, eng)
	if r := (spamMsg{}).run(f); r.Reject {
		t.Fatalf("ham rejected: %+v", r)
	}
	if r := (spamMsg{body: "x\r\n" + spam.GTUBE + "\r\n"}).run(f); !r.Reject {
		t.Fatalf("GTUBE not rejected: %+v", r)
	}
	eng.err = errors.New("connection refused")
	(spamMsg{}).run(f)

	for _, c := range []struct {
		name   string
		labels []string
		want   float64
	}{
		{"mailnode_milter_messages_total", []string{"action", "verify"}, 3},
		{"mailnode_milter_auth_results_total", []string{"method", "spf", "result", "pass"}, 3},
		{"mailnode_milter_auth_results_total", []string{"method", "dkim", "result", "none"}, 3},
		{"mailnode_milter_auth_results_total", []string{"method", "dmarc", "result", "pass"}, 3},
		{"mailnode_milter_spam_verdicts_total", []string{"action", "deliver"}, 2},
		{"mailnode_milter_spam_verdicts_total", []string{"action", "reject"}, 1},
		{"mailnode_milter_errors_total", []string{"kind", "engine"}, 1},
		{"mailnode_milter_errors_total", []string{"kind", "sign"}, 0},
		{"mailnode_milter_engine_seconds", []string{"engine", "fake", "result", "ok"}, 2},
		{"mailnode_milter_engine_seconds", []string{"engine", "fake", "result", "error"}, 1},
		// SPF (TXT of sender.test) and DMARC (TXT of _dmarc.sender.test) per message.
		{"mailnode_milter_dns_seconds", []string{"type", "TXT", "result", "ok"}, 6},
		// The DNSBL: 198.51.100.7 is not listed in bl.test.
		{"mailnode_milter_dns_seconds", []string{"type", "A", "result", "notfound"}, 3},
	} {
		if got := counter(t, m, c.name, c.labels...); got != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, got, c.want)
		}
	}
}

// TestMetricsSignedAndShadow: signatures by domain, selector and
// algorithm through a real milter connection; shadow mode's would-rejects.
func TestMetricsSignedAndShadow(t *testing.T) {
	f, _ := testFilter(t)
	m := NewMetrics()
	f.Metrics = m
	path := startServer(t, f, nil)
	for i := 0; i < 2; i++ {
		if _, err := miltertest.Submit(miltertest.NewClient("unix", path), localMessage("alice@example.com")); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		labels []string
		want   float64
	}{
		{[]string{"domain", "example.com", "selector", "mx2026r", "algorithm", "rsa"}, 2},
		{[]string{"domain", "example.com", "selector", "mx2026e", "algorithm", "ed25519"}, 2},
	} {
		if got := counter(t, m, "mailnode_milter_signatures_total", c.labels...); got != c.want {
			t.Errorf("signatures%v = %v, want %v", c.labels, got, c.want)
		}
	}
	if got := counter(t, m, "mailnode_milter_messages_total", "action", "sign"); got != 2 {
		t.Errorf("signed messages %v, want 2", got)
	}

	sf, sm := metricsFilter(t, nil)
	sf.Shadow = true
	if r := (spamMsg{body: "x\r\n" + spam.GTUBE + "\r\n"}).run(sf); r.Reject {
		t.Fatalf("shadow mode rejected: %+v", r)
	}
	if got := counter(t, sm, "mailnode_milter_shadow_would_reject_total", "cell", "outside/none->local", "what", "reject"); got != 1 {
		t.Errorf("shadow would-reject %v, want 1", got)
	}
	if got := counter(t, sm, "mailnode_milter_spam_verdicts_total", "action", "reject"); got != 1 {
		t.Errorf("shadow verdict reject %v, want 1", got)
	}
}

// TestMetricsLimitError: a message over the header limit closes the
// connection and counts as a limit error.
func TestMetricsLimitError(t *testing.T) {
	f, _ := testFilter(t)
	m := NewMetrics()
	f.Metrics = m
	path := startServer(t, f, nil)
	msg := localMessage("alice@example.com")
	for i := 0; i <= MaxHeaders; i++ {
		msg.Headers = append(msg.Headers, hdrs("X-Filler", "x")...)
	}
	miltertest.Submit(miltertest.NewClient("unix", path), msg)
	deadline := time.Now().Add(5 * time.Second)
	for counter(t, m, "mailnode_milter_errors_total", "kind", "limit") != 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if got := counter(t, m, "mailnode_milter_errors_total", "kind", "limit"); got != 1 {
		t.Errorf("limit errors %v, want 1", got)
	}
}

// TestMetricsProtocolError: events out of order count as protocol errors.
func TestMetricsProtocolError(t *testing.T) {
	f, _ := testFilter(t)
	m := NewMetrics()
	f.Metrics = m
	b := &backend{f: f}
	if _, err := b.RcptTo("bob@example.com", "", nil); err == nil {
		t.Fatal("RCPT before MAIL accepted")
	}
	if _, err := b.BodyChunk([]byte("x"), nil); err == nil {
		t.Fatal("body before MAIL accepted")
	}
	if got := counter(t, m, "mailnode_milter_errors_total", "kind", "protocol"); got != 2 {
		t.Errorf("protocol errors %v, want 2", got)
	}
}

// A question left unasked because its check tried the cache first
// (resolver.CacheOnly) is no lookup: it is not timed or counted. Nor are
// the cached answers of an attempt that missed (the check asks them again
// for real, and those count); an attempt that kept its answers counts
// them when it commits.
func TestMetricsCacheFirst(t *testing.T) {
	d := dnstest.Start(t, ". 3600 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 60\n"+
		`sender.test. 3600 IN TXT "v=spf1 -all"`+"\n")
	m := NewMetrics()
	r := m.Resolver(resolver.NewClient(d.Addr, time.Second))
	if !resolver.HonoursCacheOnly(r) {
		t.Fatal("the timed resolver hides that the Client honours CacheOnly")
	}
	ctx := context.Background()
	ok := func() float64 { return counter(t, m, "mailnode_milter_dns_seconds", "type", "TXT", "result", "ok") }
	if _, err := r.LookupTXT(ctx, "sender.test"); err != nil { // asked: 1
		t.Fatal(err)
	}
	// An attempt that hits, then misses: neither counts.
	cached, probe := resolver.CacheOnly(ctx)
	if _, err := r.LookupTXT(cached, "sender.test"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.LookupTXT(cached, "other.test"); !resolver.IsNotCached(err) || !probe.Missed() {
		t.Fatalf("from the cache only: %v", err)
	}
	if got := ok(); got != 1 {
		t.Errorf("%v TXT answers counted after an attempt that missed, want 1", got)
	}
	// An attempt that hits only counts once committed.
	cached, probe = resolver.CacheOnly(ctx)
	if _, err := r.LookupTXT(cached, "sender.test"); err != nil || probe.Missed() {
		t.Fatal(err)
	}
	if got := ok(); got != 1 {
		t.Errorf("%v counted before the commit, want 1", got)
	}
	probe.Commit()
	if got := ok(); got != 2 {
		t.Errorf("%v counted after the commit, want 2", got)
	}
}
