package statuspage

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

func TestPage(t *testing.T) {
	reg := prometheus.NewRegistry()
	c := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "mailnode_milter_messages_total", Help: "x"}, []string{"action"})
	h := prometheus.NewHistogram(prometheus.HistogramOpts{Name: "mailnode_milter_dns_seconds", Help: "x"})
	other := prometheus.NewCounter(prometheus.CounterOpts{Name: "go_something_total", Help: "x"})
	reg.MustRegister(c, h, other)
	c.WithLabelValues("sign").Add(3)
	h.Observe(0.5)
	h.Observe(1.5)

	now := time.Date(2026, 12, 6, 4, 0, 0, 0, time.UTC)
	p := New("milterd", "1.2.3", reg, "mailnode_milter_")
	p.Now = func() time.Time { return now }
	p.started = now.Add(-90 * time.Minute)
	p.Set("mode", "enforce")
	p.Set("last reload", "<script>alert(1)</script>")
	p.Set("mode", "shadow") // replaced in place

	rec := httptest.NewRecorder()
	p.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
	body := rec.Body.String()
	if rec.Code != 200 || rec.Header().Get("Content-Type") != "text/html; charset=utf-8" {
		t.Fatalf("GET /: %d %q", rec.Code, rec.Header())
	}
	for _, want := range []string{
		"<h1>mailnode milterd</h1>",
		"<tr><td>version</td><td>1.2.3</td></tr>",
		"<tr><td>uptime</td><td>1h30m0s</td></tr>",
		"<tr><td>mode</td><td>shadow</td></tr>\n<tr><td>last reload</td>",
		"&lt;script&gt;alert(1)&lt;/script&gt;",
		`<code>mailnode_milter_dns_seconds</code></td><td>2 observed, mean 1s</td>`,
		`<code>mailnode_milter_messages_total{action=&#34;sign&#34;}</code></td><td>3</td>`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %q:\n%s", want, body)
		}
	}
	if strings.Contains(body, "go_something") || strings.Contains(body, "<script>") {
		t.Errorf("page shows another prefix's metric or unescaped text:\n%s", body)
	}
	for _, c := range []struct {
		method, path string
		code         int
	}{
		{"POST", "/", http.StatusMethodNotAllowed},
		{"DELETE", "/", http.StatusMethodNotAllowed},
		{"GET", "/admin", http.StatusNotFound},
		{"HEAD", "/", http.StatusOK},
	} {
		rec := httptest.NewRecorder()
		p.ServeHTTP(rec, httptest.NewRequest(c.method, c.path, nil))
		if rec.Code != c.code {
			t.Errorf("%s %s: %d, want %d", c.method, c.path, rec.Code, c.code)
		}
	}
}
