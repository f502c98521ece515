// Package statuspage is the read-only status page policyd and milterd
// serve at "/" beside /metrics and /healthz: what the daemon runs with
// (version, uptime, mode, inventory, listeners, last reload) and the
// current values of its own metrics, for a person with a browser or curl.
// It changes nothing and serves only GET and HEAD; it shows no secrets
// (no passwords, no keys, no message content: the metrics have none).
package statuspage

import (
	"fmt"
	"html/template"
	"net/http"
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

	mu      sync.Mutex
	started time.Time
	keys    []string
	info    map[string]string
}

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
}

var page = template.Must(template.New("status").Parse(`<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>mailnode {{.Daemon}}</title>
<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}td{padding:2px 12px 2px 0;vertical-align:top}td:first-child{color:#555}code{font-size:90%}</style>
</head><body>
<h1>mailnode {{.Daemon}}</h1>
<table>
{{range .Info}}<tr><td>{{.Name}}</td><td>{{.Value}}</td></tr>
{{end}}</table>
<h2>Metrics</h2>
<p><a href="/metrics">/metrics</a> · <a href="/healthz">/healthz</a></p>
<table>
{{range .Metrics}}<tr><td><code>{{.Name}}</code></td><td>{{.Value}}</td></tr>
{{end}}</table>
</body></html>
`))

// ServeHTTP serves the page at "/" (anything else is 404), GET and HEAD only.
func (p *Page) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != "/" {
		http.NotFound(w, r)
		return
	}
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "read-only", http.StatusMethodNotAllowed)
		return
	}
	v := view{Daemon: p.Daemon, Info: p.Info()}
	var err error
	if v.Metrics, err = p.Metrics(); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	page.Execute(w, v)
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
