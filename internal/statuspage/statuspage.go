// Package statuspage is the read-only status page policyd and milterd
// serve at "/" beside /metrics and /healthz: what the daemon runs with
// (version, uptime, mode, inventory, listeners, last reload) and the
// current values of its own metrics, for a person with a browser or curl.
// It changes nothing and serves only GET and HEAD; it shows no secrets
// (no passwords, no keys, no message content: the metrics have none).
//
// Besides, as the daemon fills them in: both daemons up with their
// inventory digests (the other one probed at its /healthz), and for
// policyd the decisions per matrix cell over the last hour (a table and an
// inline SVG chart), the latest rejections, each linking to /why (the
// story `mailnode why` tells, from the mail log), and the greylist's size;
// for milterd the DKIM selectors with what DNS shows of them. Everything
// is rendered on the server and escaped; the page loads nothing, and its
// Content-Security-Policy lets nothing load.
package statuspage

import (
	"context"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
)

// Page is one daemon's status page.
type Page struct {
	Daemon   string // policyd, milterd
	Version  string
	Registry *prometheus.Registry // its metrics; those named Prefix* are listed
	Prefix   string               // e.g. "mailnode_milter_"
	Now      func() time.Time     // time.Now when nil

	// Digest, when set, is the digest of the inventory the daemon runs
	// and the installed config's (drift.Gauges.Digests).
	Digest func() (running, installed string)
	// Peer, when set, gives the other daemon, probed at each page load
	// (asked each time: a reload may move it).
	Peer func() *Peer

	// Decisions, when set, are the last hour's decisions per series (the
	// matrix cells, named by Series); Rejections the latest refusals.
	Decisions  *Window
	Series     []string
	Rejections *Ring
	// Why, when set, serves /why; the rejections link to it.
	Why *Why
	// Greylist, when set, gives the rows of the greylist's size; the page
	// asks at most every CacheFor (a shared store must not be hammered).
	Greylist func(ctx context.Context) ([]Row, error)
	// Selectors, when set, are the DKIM selectors and their DNS state.
	Selectors func() []Selector
	// CacheFor is how long Greylist's answer is kept; 5s when 0.
	CacheFor time.Duration

	mu      sync.Mutex
	started time.Time
	keys    []string
	info    map[string]string

	greyMu   sync.Mutex
	greyAt   time.Time
	greyRows []Row
	greyErr  error
}

// Selector is one DKIM selector on milterd's page.
type Selector struct {
	Domain, Selector, Algorithm string
	DNS                         string // published, not-published, mismatch, unknown
	Signing                     bool
	Why                         string
}

// CSP is the page's Content-Security-Policy: nothing loads from anywhere,
// no script runs; the inline style and data: images are all it has.
const CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; form-action 'none'; frame-ancestors 'none'; base-uri 'none'"

// New starts a page at the current time.
func New(daemon, version string, reg *prometheus.Registry, prefix string) *Page {
	p := &Page{Daemon: daemon, Version: version, Registry: reg, Prefix: prefix, info: map[string]string{}}
	p.started = p.now()
	return p
}

func (p *Page) now() time.Time {
	if p.Now != nil {
		return p.Now()
	}
	return time.Now()
}

// Set shows value under key (rows keep the order of their first Set).
func (p *Page) Set(key, value string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if _, ok := p.info[key]; !ok {
		p.keys = append(p.keys, key)
	}
	p.info[key] = value
}

// Row is one line of a table on the page.
type Row struct{ Name, Value string }

type view struct {
	Daemon  string
	Info    []Row
	Metrics []Row

	Daemons    []DaemonState
	HasWindow  bool
	Chart      template.HTML
	Cells      []CellRow
	Total      CellRow
	Since      string
	HasRing    bool
	Rejections []RejectionRow
	HasGrey    bool
	Greylist   []Row
	GreyErr    string
	HasSel     bool
	Selectors  []Selector
}

// CellRow is one line of the decisions table.
type CellRow struct {
	Cell   string
	Counts [NumOutcomes]int
	Total  int
}

// RejectionRow is one line of the rejections table.
type RejectionRow struct {
	Rejection
	At, Why string // the time shown; the /why link ("" without Why)
}

var page = template.Must(template.New("status").Parse(`<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>mailnode {{.Daemon}}</title>
<style>body{font-family:sans-serif;margin:2em;max-width:1150px}table{border-collapse:collapse;margin-bottom:1em}td,th{padding:2px 12px 2px 0;vertical-align:top;text-align:left}td:first-child{color:#555}td.n,th.n{text-align:right}code{font-size:90%}.bad{color:#b00;font-weight:bold}.ok{color:#070}</style>
</head><body>
<h1>mailnode {{.Daemon}}</h1>
<table id="info">
{{range .Info}}<tr><td>{{.Name}}</td><td>{{.Value}}</td></tr>
{{end}}</table>
{{with .Daemons}}<h2>Daemons</h2>
<table id="daemons"><tr><th>daemon</th><th>state</th><th>inventory digest</th><th></th></tr>
{{range .}}<tr data-daemon="{{.Name}}"><td>{{.Name}}</td><td class="{{if .Up}}ok{{else}}bad{{end}}">{{.State}}</td><td><code>{{.Digest}}</code></td><td{{if .Mismatch}} class="bad"{{end}}>{{.Note}}</td></tr>
{{end}}</table>
{{end}}{{if .HasWindow}}<h2>Decisions in the last hour</h2>
<p>Per minute since {{.Since}}, stacked by outcome:</p>
{{.Chart}}
<table id="decisions"><tr><th>matrix cell</th><th class="n">accepted</th><th class="n">rejected</th><th class="n">greylisted</th><th class="n">deferred</th><th class="n">total</th></tr>
{{range .Cells}}<tr data-cell="{{.Cell}}"><td>{{.Cell}}</td>{{range .Counts}}<td class="n">{{.}}</td>{{end}}<td class="n">{{.Total}}</td></tr>
{{else}}<tr><td colspan="6">no decisions in the last hour</td></tr>
{{end}}{{with .Total}}<tr data-cell="total"><th>total</th>{{range .Counts}}<th class="n">{{.}}</th>{{end}}<th class="n">{{.Total}}</th></tr>
{{end}}</table>
{{end}}{{if .HasRing}}<h2>Latest rejections</h2>
<table id="rejections"><tr><th>time</th><th>client</th><th>sender</th><th>recipient</th><th>cell</th><th>reply</th><th></th></tr>
{{range .Rejections}}<tr><td>{{.At}}</td><td>{{.Client}}</td><td>{{.Sender}}</td><td class="rcpt">{{.Recipient}}</td><td>{{.Cell}}</td><td>{{.Reply}}</td><td>{{if .Why}}<a href="{{.Why}}">why</a>{{end}}</td></tr>
{{else}}<tr><td colspan="7">none since the start</td></tr>
{{end}}</table>
{{end}}{{if .HasGrey}}<h2>Greylist</h2>
{{if .GreyErr}}<p class="bad" id="greylist-error">{{.GreyErr}}</p>
{{end}}<table id="greylist">
{{range .Greylist}}<tr><td>{{.Name}}</td><td class="n">{{.Value}}</td></tr>
{{end}}</table>
{{end}}{{if .HasSel}}<h2>DKIM selectors</h2>
<table id="selectors"><tr><th>domain</th><th>selector</th><th>algorithm</th><th>DNS</th><th>signing</th><th>why</th></tr>
{{range .Selectors}}<tr data-selector="{{.Domain}}/{{.Selector}}"><td>{{.Domain}}</td><td>{{.Selector}}</td><td>{{.Algorithm}}</td><td class="{{if eq .DNS "published"}}ok{{else}}bad{{end}}">{{.DNS}}</td><td>{{if .Signing}}yes{{else}}no{{end}}</td><td>{{.Why}}</td></tr>
{{else}}<tr><td colspan="6">no DKIM keys loaded</td></tr>
{{end}}</table>
{{end}}<h2>Metrics</h2>
<p><a href="/metrics">/metrics</a> · <a href="/healthz">/healthz</a></p>
<table id="metrics">
{{range .Metrics}}<tr><td><code>{{.Name}}</code></td><td>{{.Value}}</td></tr>
{{end}}</table>
</body></html>
`))

// ServeHTTP serves the page at "/" and, with Why, /why (anything else is
// 404), GET and HEAD only.
func (p *Page) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Content-Security-Policy", CSP)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
	if r.URL.Path != "/" && (r.URL.Path != "/why" || p.Why == nil) {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "read-only", http.StatusMethodNotAllowed)
		return
	}
	if r.URL.Path == "/why" {
		p.Why.ServeHTTP(w, r)
		return
	}
	v := view{Daemon: p.Daemon, Info: p.Info()}
	var err error
	if v.Metrics, err = p.Metrics(); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	p.fill(r.Context(), &v)
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	page.Execute(w, v)
}

// fill adds the sections the daemon set up.
func (p *Page) fill(ctx context.Context, v *view) {
	now := p.now()
	if p.Digest != nil {
		v.Daemons = p.daemons(ctx)
	}
	if p.Decisions != nil {
		v.HasWindow = true
		wv := p.Decisions.View(now)
		v.Since = wv.Start.UTC().Format("15:04 MST")
		v.Chart = Chart(wv, time.UTC)
		for i, c := range wv.Series {
			row := CellRow{Cell: p.seriesName(i), Counts: c}
			for _, n := range c {
				row.Total += n
			}
			if row.Total > 0 {
				v.Cells = append(v.Cells, row)
			}
		}
		v.Total.Counts = wv.Total
		for _, n := range wv.Total {
			v.Total.Total += n
		}
	}
	if p.Rejections != nil {
		v.HasRing = true
		for _, x := range p.Rejections.Latest() {
			row := RejectionRow{Rejection: x, At: x.Time.UTC().Format("2006-01-02 15:04:05")}
			if p.Why != nil {
				row.Why = "/why?" + url.Values{"q": {x.Query()}}.Encode()
			}
			v.Rejections = append(v.Rejections, row)
		}
	}
	if p.Greylist != nil {
		v.HasGrey = true
		rows, err := p.greylist(ctx)
		v.Greylist = rows
		if err != nil {
			v.GreyErr = "the greylist store did not answer: " + err.Error()
		}
	}
	if p.Selectors != nil {
		v.HasSel = true
		v.Selectors = p.Selectors()
	}
}

func (p *Page) seriesName(i int) string {
	if i < len(p.Series) {
		return p.Series[i]
	}
	return fmt.Sprintf("series %d", i)
}

// greylist asks Greylist at most every CacheFor; page loads meanwhile
// share its answer (and wait for one question in flight).
func (p *Page) greylist(ctx context.Context) ([]Row, error) {
	p.greyMu.Lock()
	defer p.greyMu.Unlock()
	ttl := p.CacheFor
	if ttl <= 0 {
		ttl = 5 * time.Second
	}
	now := time.Now()
	if !p.greyAt.IsZero() && now.Sub(p.greyAt) < ttl {
		return p.greyRows, p.greyErr
	}
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	p.greyRows, p.greyErr = p.Greylist(ctx)
	p.greyAt = time.Now()
	return p.greyRows, p.greyErr
}

// Info returns the page's first table: version, start, uptime, then the
// rows Set.
func (p *Page) Info() []Row {
	p.mu.Lock()
	defer p.mu.Unlock()
	now := p.now()
	rows := []Row{
		{"version", p.Version},
		{"started", p.started.UTC().Format(time.RFC3339)},
		{"uptime", now.Sub(p.started).Truncate(time.Second).String()},
	}
	for _, k := range p.keys {
		rows = append(rows, Row{k, p.info[k]})
	}
	return rows
}

// Metrics returns the current value of every series of the page's metrics
// (name{labels}), sorted: counters and gauges as they are, histograms as
// their count and mean.
func (p *Page) Metrics() ([]Row, error) {
	if p.Registry == nil {
		return nil, nil
	}
	mfs, err := p.Registry.Gather()
	if err != nil {
		return nil, fmt.Errorf("statuspage: %w", err)
	}
	var rows []Row
	for _, mf := range mfs {
		if !strings.HasPrefix(mf.GetName(), p.Prefix) {
			continue
		}
		for _, m := range mf.GetMetric() {
			name := mf.GetName() + labels(m)
			switch {
			case m.GetCounter() != nil:
				rows = append(rows, Row{name, number(m.GetCounter().GetValue())})
			case m.GetGauge() != nil:
				rows = append(rows, Row{name, number(m.GetGauge().GetValue())})
			case m.GetHistogram() != nil:
				h := m.GetHistogram()
				v := fmt.Sprintf("%d observed", h.GetSampleCount())
				if h.GetSampleCount() > 0 {
					v += fmt.Sprintf(", mean %.3gs", h.GetSampleSum()/float64(h.GetSampleCount()))
				}
				rows = append(rows, Row{name, v})
			}
		}
	}
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].Name < rows[j].Name })
	return rows, nil
}

func labels(m *dto.Metric) string {
	if len(m.GetLabel()) == 0 {
		return ""
	}
	var l []string
	for _, lp := range m.GetLabel() {
		l = append(l, fmt.Sprintf("%s=%q", lp.GetName(), lp.GetValue()))
	}
	return "{" + strings.Join(l, ",") + "}"
}

func number(f float64) string {
	return strings.TrimSuffix(strings.TrimRight(fmt.Sprintf("%.3f", f), "0"), ".")
}
