package statuspage

import (
	"context"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailnode/mailnode/internal/daemon"
)

type digests struct{ running, installed, warning string }

func (d *digests) Digests() (string, string) { return d.running, d.installed }
func (d *digests) Warning() string           { return d.warning }

// The sections a daemon sets up: its peer probed, decisions per cell with
// the chart, rejections linking to /why, the greylist asked once per
// CacheFor, the selectors; everything escaped, the CSP on.
func TestPageSections(t *testing.T) {
	peerInv := &digests{running: "sha256:bbb"}
	peer := httptest.NewServer(daemon.MetricsHandler(prometheus.NewRegistry(), nil, peerInv))
	defer peer.Close()

	now := time.Now()
	p := New("policyd", "1", nil, "")
	p.Digest = func() (string, string) { return "sha256:aaa", "sha256:aaa" }
	p.Peer = func() *Peer { return &Peer{Name: "milterd", Addr: strings.TrimPrefix(peer.URL, "http://")} }
	p.Decisions = NewWindow(2)
	p.Series = []string{"outside/none->local", "outside/none->outside"}
	p.Decisions.Add(now, 0, Accepted)
	p.Decisions.Add(now, 0, Greylisted)
	p.Decisions.Add(now, 1, Rejected)
	p.Decisions.Add(now, 1, Rejected)
	p.Rejections = NewRing(5)
	p.Rejections.Add(Rejection{Time: now, Client: "mx[192.0.2.1]", Sender: "s@y.test", Recipient: "<img src=x>@evil.test", Cell: "outside/none->outside", Reply: "550 5.7.1 Sorry"})
	p.Why = &Why{Logs: []string{"/nonexistent"}}
	asked := 0
	p.Greylist = func(context.Context) ([]Row, error) {
		asked++
		return []Row{{"triplets", "7"}}, nil
	}
	p.Selectors = func() []Selector {
		return []Selector{{Domain: "example.com", Selector: "mx2026r", Algorithm: "rsa", DNS: "published", Signing: true},
			{Domain: "example.com", Selector: "new<1>", Algorithm: "ed25519", DNS: "not-published", Why: "record & key"}}
	}
	get := func() (string, string) {
		rec := httptest.NewRecorder()
		p.ServeHTTP(rec, httptest.NewRequest("GET", "/", nil))
		if rec.Code != 200 {
			t.Fatalf("GET /: %d", rec.Code)
		}
		return rec.Body.String(), rec.Header().Get("Content-Security-Policy")
	}
	body, csp := get()
	if csp != CSP || !strings.Contains(csp, "default-src 'none'") {
		t.Errorf("CSP %q", csp)
	}
	for _, want := range []string{
		`<tr data-daemon="policyd"><td>policyd</td><td class="ok">up (this page)</td><td><code>sha256:aaa</code></td><td></td></tr>`,
		`<tr data-daemon="milterd"><td>milterd</td><td class="ok">ok</td><td><code>sha256:bbb</code></td><td class="bad">runs another inventory than policyd; reload both</td></tr>`,
		`<svg xmlns="http://www.w3.org/2000/svg" id="decisions-chart"`,
		`<tr data-cell="outside/none-&gt;local"><td>outside/none-&gt;local</td><td class="n">1</td><td class="n">0</td><td class="n">1</td><td class="n">0</td><td class="n">2</td></tr>`,
		`<tr data-cell="outside/none-&gt;outside"><td>outside/none-&gt;outside</td><td class="n">0</td><td class="n">2</td><td class="n">0</td><td class="n">0</td><td class="n">2</td></tr>`,
		`<tr data-cell="total"><th>total</th><th class="n">1</th><th class="n">2</th><th class="n">1</th><th class="n">0</th><th class="n">4</th></tr>`,
		`<td class="rcpt">&lt;img src=x&gt;@evil.test</td>`,
		`<a href="/why?q=%3Cimg&#43;src%3Dx%3E%40evil.test">why</a>`,
		`<tr><td>triplets</td><td class="n">7</td></tr>`,
		`<tr data-selector="example.com/mx2026r"><td>example.com</td><td>mx2026r</td><td>rsa</td><td class="ok">published</td><td>yes</td><td></td></tr>`,
		`<td>new&lt;1&gt;</td><td>ed25519</td><td class="bad">not-published</td><td>no</td><td>record &amp; key</td>`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %s\n%s", want, body)
		}
	}
	if strings.Contains(body, "<img") || strings.Contains(body, "<script") || strings.Contains(body, "http://") && !strings.Contains(body, `xmlns="http://www.w3.org/2000/svg"`) {
		t.Errorf("page has unescaped or external content:\n%s", body)
	}
	get()
	if asked != 1 {
		t.Errorf("greylist asked %d times for two loads within CacheFor", asked)
	}
	p.greyAt = time.Now().Add(-time.Minute)
	p.Greylist = func(context.Context) ([]Row, error) { return nil, errors.New("redis: connection refused") }
	// The peer down, the store failing: the page says so.
	peer.Close()
	body, _ = get()
	for _, want := range []string{
		`<tr data-daemon="milterd"><td>milterd</td><td class="bad">down</td>`,
		`<p class="bad" id="greylist-error">the greylist store did not answer: redis: connection refused</p>`,
	} {
		if !strings.Contains(body, want) {
			t.Errorf("page lacks %s\n%s", want, body)
		}
	}
	// No peer address: not probed, the note says why.
	p.Peer = func() *Peer { return &Peer{Name: "milterd", Note: "milter.metrics_listen is not set"} }
	body, _ = get()
	if !strings.Contains(body, `<td class="bad">unknown</td><td><code></code></td><td>milter.metrics_listen is not set</td>`) {
		t.Errorf("unprobed peer:\n%s", body)
	}
}
