package test

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
	"golang.org/x/net/html"

	"github.com/mailnode/mailnode/dkim"
	"github.com/mailnode/mailnode/dns/dnstest"
	"github.com/mailnode/mailnode/internal/testpeer"
	"github.com/mailnode/mailnode/test/harness"
)

// chromiumBin is Debian's chromium, which CI installs.
const chromiumBin = "/usr/bin/chromium"

// TestStatusPageInBrowser: a real node (Postfix, policyd, milterd) gets
// known traffic: three authenticated submissions, two relay attempts from
// outside, one greylisted delivery. Headless chromium then loads policyd's
// and milterd's status pages from their loopback metrics listeners, and the
// DOM it built holds exactly those figures: the counts per matrix cell and
// in the chart, the refused recipients with links to /why (whose story,
// loaded in the browser too, has the refusal's lines), the greylist's
// size, both daemons up with one inventory digest, the DKIM selectors with
// their DNS state. Screenshots of both pages are kept as test artifacts.
// When policyd alone reloads an edited inventory, milterd's page flags the
// two digests.
func TestStatusPageInBrowser(t *testing.T) {
	browser := chromium(t)
	t.Setenv("MAILNODE_DKIM_CHECK_INTERVAL", "200ms")
	auth := dnstest.Start(t, "")
	ports := make([]int, 2)
	for i := range ports {
		p, err := harness.FreePort()
		if err != nil {
			t.Fatal(err)
		}
		ports[i] = p
	}
	policyAddr, milterAddr := "127.0.0.1:"+strconv.Itoa(ports[0]), "127.0.0.1:"+strconv.Itoa(ports[1])
	// The node's tree is made here, so that policyd can be told where its
	// logs will be: /why reads them as `mailnode why` does (TestWhyEndToEnd).
	dir, err := os.MkdirTemp("/tmp", "mn")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	var whyArgs []string
	for _, l := range []string{"maillog", "policyd.log", "milterd*.log"} {
		whyArgs = append(whyArgs, "--why-maillog", filepath.Join(dir, "log", l))
	}
	n := harness.StartNode(t, harness.Options{Policy: true, Milter: true, DKIMKeys: true, Dir: dir,
		Edit: func(doc map[string]any) {
			harness.Set(doc, "node.resolver", auth.Addr)
			harness.Set(doc, "policy.metrics_listen", policyAddr)
			harness.Set(doc, "milter.metrics_listen", milterAddr)
		},
		DaemonArgs: map[string][]string{"policyd": whyArgs},
	})
	// example.com's zone but for mx2026e's record: one selector
	// published, one held back.
	zone, err := os.ReadFile(filepath.Join(n.Dir, "dns", "example.com.zone"))
	if err != nil {
		t.Fatal(err)
	}
	if err := auth.Add(string(zone)); err != nil {
		t.Fatal(err)
	}
	auth.Remove(dkim.RecordName("mx2026e", "example.com"), mdns.TypeTXT)
	if log, ok := n.DaemonLogWith("milterd", "domain=example.com selector=mx2026r dns=published signing=yes"); !ok {
		t.Fatalf("milterd does not see mx2026r published:\n%s", log)
	}

	// The traffic. Three submissions, alice to bob: local/auth->local, accepted.
	for i := range 3 {
		wantFinal(t, send(t, n.Submission, harness.Envelope{StartTLS: true, AuthUser: "alice@example.com", AuthPass: "alicepass",
			From: "alice@example.com", To: []string{"bob@example.com"},
			Data: harness.NewMessage("alice@example.com", "bob@example.com", fmt.Sprintf("submission %d", i+1), "hello")}))
	}
	// Two relay attempts from outside: outside/none->outside, 550.
	refused := []string{"x@elsewhere.test", "y@elsewhere.test"}
	for _, rcpt := range refused {
		if tr := send(t, n.SMTP, harness.Envelope{LocalAddr: harness.OutsideClient, From: "news@sender.test", To: []string{rcpt}}); tr.Rcpt[0].Code != 550 {
			t.Fatalf("relay to %s: %v", rcpt, tr.Rcpt)
		}
	}
	// One delivery from outside: outside/none->local, greylisted (450).
	if tr := send(t, n.SMTP, harness.Envelope{LocalAddr: harness.OutsideClient, Helo: "mx.sender.test", From: "news@sender.test", To: []string{"alice@example.com"},
		Data: harness.NewMessage("news@sender.test", "alice@example.com", "greylisted", "comes back")}); tr.Rcpt[0].Code != 450 {
		t.Fatalf("greylisting: %v", tr.Rcpt)
	}
	n.WaitMaildir(t, "bob@example.com", 3)

	// Read-only, nothing loads from elsewhere, junk is refused: over HTTP.
	resp, err := http.Get("http://" + policyAddr + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.HasPrefix(csp, "default-src 'none'; style-src 'unsafe-inline'; img-src data:") {
		t.Errorf("policyd's page: Content-Security-Policy %q", csp)
	}
	for _, c := range []struct {
		method, path string
		code         int
	}{{"POST", "/", 405}, {"GET", "/why?q=" + url.QueryEscape("<script>"), 400}, {"GET", "/why", 400}, {"GET", "/why?q=a%00@b", 400}} {
		req, _ := http.NewRequest(c.method, "http://"+policyAddr+c.path, nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != c.code {
			t.Errorf("%s %s: %d, want %d", c.method, c.path, resp.StatusCode, c.code)
		}
	}

	// policyd's page in the browser.
	pageURL := "http://" + policyAddr + "/"
	doc := dumpDOM(t, browser, pageURL)
	digest := n.Inv.Digest
	checkDaemons(t, doc, map[string][2]string{"policyd": {"up (this page)", digest}, "milterd": {"ok", digest}})
	cells := rowsByAttr(t, doc, "decisions", "data-cell")
	wantCells := map[string]string{
		"local/auth->local":     "3 0 0 0 3",
		"outside/none->outside": "0 2 0 0 2",
		"outside/none->local":   "0 0 1 0 1",
		"total":                 "3 2 1 0 6",
	}
	for cell, want := range wantCells {
		if got, ok := cells[cell]; !ok || strings.Join(got[1:], " ") != want {
			t.Errorf("decisions of %s: %q, want %s (accepted rejected greylisted deferred total)", cell, got, want)
		}
	}
	if len(cells) != len(wantCells) {
		t.Errorf("decisions table has %d rows, want %d: %v", len(cells), len(wantCells), cells)
	}
	// The chart's bars (one per minute, a title each) add up to the same.
	chart := byID(doc, "decisions-chart")
	if chart == nil {
		t.Fatal("no chart")
	}
	sums := map[string]int{}
	walk(chart, func(e *html.Node) {
		if e.Data == "g" {
			for _, m := range regexp.MustCompile(`(\d+) (accepted|rejected|greylisted|deferred)`).FindAllStringSubmatch(textOf(e), -1) {
				k, _ := strconv.Atoi(m[1])
				sums[m[2]] += k
			}
		}
	})
	if fmt.Sprint(sums) != "map[accepted:3 greylisted:1 rejected:2]" {
		t.Errorf("chart bars add up to %v", sums)
	}
	// The rejections, newest first, each with its why link.
	rej := byID(doc, "rejections")
	if rej == nil {
		t.Fatal("no rejections table")
	}
	var links []string
	var rcpts []string
	walk(rej, func(e *html.Node) {
		if e.Data != "tr" {
			return
		}
		c := cellsOf(e)
		if len(c) != 7 || c[0] == "time" {
			return
		}
		rcpts = append(rcpts, c[3])
		if c[1] != "localhost[127.0.0.1]" || c[2] != "news@sender.test" || c[4] != "outside/none->outside" || !strings.HasPrefix(c[5], "550 5.7.1 Sorry, relay for <"+c[3]+"> not permitted") {
			t.Errorf("rejection row %q", c)
		}
		walk(e, func(a *html.Node) {
			if a.Data == "a" {
				links = append(links, attr(a, "href"))
			}
		})
	})
	if strings.Join(rcpts, " ") != refused[1]+" "+refused[0] || len(links) != 2 {
		t.Fatalf("rejections: recipients %q, links %q", rcpts, links)
	}
	// The why link, followed in the browser: the refusal's story.
	base, _ := url.Parse(pageURL)
	ref, err := url.Parse(links[1])
	if err != nil {
		t.Fatal(err)
	}
	whyURL := base.ResolveReference(ref).String()
	if whyURL != "http://"+policyAddr+"/why?q=x%40elsewhere.test" {
		t.Errorf("why link %q", whyURL)
	}
	var story string
	wantStory := []string{
		"NOQUEUE from=<news@sender.test> client=localhost[127.0.0.1] to=<x@elsewhere.test>: refused at RCPT: 550 5.7.1 <x@elsewhere.test>: Recipient address rejected: Sorry, relay for <x@elsewhere.test> not permitted\n",
		" policyd  RCPT to=<x@elsewhere.test> cell=outside/none->outside reason=relay-denied: 550 5.7.1 Sorry, relay for <x@elsewhere.test> not permitted\n",
		" smtpd    RCPT to=<x@elsewhere.test> refused: 550 5.7.1",
	}
	// The daemons write their logs every 100 ms: look again until whole.
	for deadline := time.Now().Add(15 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		if pre := byID(dumpDOM(t, browser, whyURL), "why-story"); pre != nil {
			story = textOf(pre)
		}
		if inOrder(story, wantStory) == "" || time.Now().After(deadline) {
			break
		}
	}
	if missing := inOrder(story, wantStory); missing != "" {
		t.Errorf("the why page's story lacks %q:\n%s", missing, story)
	}
	if strings.Contains(story, "y@elsewhere.test") {
		t.Errorf("the story of x@ tells of y@ too:\n%s", story)
	}
	grey := rowsByAttr(t, doc, "greylist", "")
	if tr, ok := grey["triplets"]; !ok || len(tr) != 2 || atoi(tr[1]) < 1 {
		t.Errorf("greylist: %v, want triplets >= 1", grey)
	}
	screenshot(t, browser, pageURL, "statuspage-policyd.png")

	// milterd's page: the selectors as DNS shows them.
	milterURL := "http://" + milterAddr + "/"
	doc = dumpDOM(t, browser, milterURL)
	checkDaemons(t, doc, map[string][2]string{"milterd": {"up (this page)", digest}, "policyd": {"ok", digest}})
	sel := rowsByAttr(t, doc, "selectors", "data-selector")
	if got := strings.Join(sel["example.com/mx2026r"][:5], " "); got != "example.com mx2026r rsa published yes" {
		t.Errorf("selector mx2026r: %q", sel["example.com/mx2026r"])
	}
	if got := strings.Join(sel["example.com/mx2026e"][:5], " "); got != "example.com mx2026e ed25519 not-published no" {
		t.Errorf("selector mx2026e: %q", sel["example.com/mx2026e"])
	}
	screenshot(t, browser, milterURL, "statuspage-milterd.png")

	// policyd alone reloads an edited inventory: milterd's page flags that
	// the two run different inventories.
	f, err := os.OpenFile(n.InventoryPath, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	f.WriteString("# edited after render-config\n")
	f.Close()
	if err := n.SignalDaemon("policyd", syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	if log, ok := n.DaemonLogWith("policyd", "policyd: inventory reloaded"); !ok {
		t.Fatalf("policyd did not reload:\n%s", log)
	}
	rows := rowsByAttr(t, dumpDOM(t, browser, milterURL), "daemons", "data-daemon")
	if p := rows["policyd"]; len(p) != 4 || p[1] != "ok" || p[2] == digest || !strings.HasPrefix(p[2], "sha256:") ||
		!strings.HasPrefix(p[3], "runs another inventory than milterd; reload both; inventory drift: running "+p[2]) {
		t.Errorf("after policyd alone reloaded, milterd's page shows it as %q", p)
	}
	if m := rows["milterd"]; len(m) != 4 || m[2] != digest || m[3] != "" {
		t.Errorf("milterd's own row: %q", m)
	}
}

// checkDaemons checks the daemons table: each daemon's state and digest,
// and no mismatch flagged.
func checkDaemons(t *testing.T, doc *html.Node, want map[string][2]string) {
	t.Helper()
	rows := rowsByAttr(t, doc, "daemons", "data-daemon")
	for name, w := range want {
		r := rows[name]
		if len(r) != 4 || r[1] != w[0] || r[2] != w[1] || r[3] != "" {
			t.Errorf("daemon %s: %q, want state %q, digest %s, no note", name, r, w[0], w[1])
		}
	}
	if len(rows) != len(want) {
		t.Errorf("daemons table: %v", rows)
	}
}

// browserRun runs headless chromium on url with args, in a private
// profile, bounded in time; it returns standard output.
func browserRun(t *testing.T, browser, target string, args ...string) []byte {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	args = append([]string{"--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
		"--no-first-run", "--no-default-browser-check", "--disable-extensions", "--disable-background-networking",
		"--disable-sync", "--user-data-dir=" + t.TempDir()}, args...)
	cmd := exec.CommandContext(ctx, browser, append(args, target)...)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("chromium %s: %v\n%s", target, err, tail(stderr.String(), 20))
	}
	return out
}

// dumpDOM is the DOM chromium built from url, parsed.
func dumpDOM(t *testing.T, browser, target string) *html.Node {
	t.Helper()
	out := browserRun(t, browser, target, "--dump-dom")
	doc, err := html.Parse(strings.NewReader(string(out)))
	if err != nil {
		t.Fatalf("chromium's DOM of %s: %v", target, err)
	}
	return doc
}

// screenshot keeps a screenshot of url in the artifact directory:
// $ARTIFACTS, else bin/artifacts of the repository.
func screenshot(t *testing.T, browser, target, name string) {
	t.Helper()
	dir := os.Getenv("ARTIFACTS")
	if dir == "" {
		root, err := harness.RepoRoot()
		if err != nil {
			t.Fatal(err)
		}
		dir = filepath.Join(root, "bin", "artifacts")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, name)
	os.Remove(path)
	browserRun(t, browser, target, "--screenshot="+path, "--window-size=1200,1600", "--hide-scrollbars")
	b, err := os.ReadFile(path)
	if err != nil || len(b) < 1000 || string(b[1:4]) != "PNG" {
		t.Fatalf("screenshot %s: %d bytes, %v", path, len(b), err)
	}
	t.Logf("screenshot of %s: %s", target, path)
}

func walk(n *html.Node, f func(*html.Node)) {
	if n.Type == html.ElementNode {
		f(n)
	}
	for c := n.FirstChild; c != nil; c = c.NextSibling {
		walk(c, f)
	}
}

func byID(doc *html.Node, id string) *html.Node {
	var found *html.Node
	walk(doc, func(e *html.Node) {
		if found == nil && attr(e, "id") == id {
			found = e
		}
	})
	return found
}

func attr(n *html.Node, key string) string {
	for _, a := range n.Attr {
		if a.Key == key {
			return a.Val
		}
	}
	return ""
}

func textOf(n *html.Node) string {
	var b strings.Builder
	var f func(*html.Node)
	f = func(n *html.Node) {
		if n.Type == html.TextNode {
			b.WriteString(n.Data)
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			f(c)
		}
	}
	f(n)
	return b.String()
}

// cellsOf is the text of a row's td and th cells.
func cellsOf(tr *html.Node) []string {
	var out []string
	for c := tr.FirstChild; c != nil; c = c.NextSibling {
		if c.Type == html.ElementNode && (c.Data == "td" || c.Data == "th") {
			out = append(out, strings.TrimSpace(textOf(c)))
		}
	}
	return out
}

// rowsByAttr is table id's rows by their key attribute (by the first
// cell's text when key is ""), each as its cells' text.
func rowsByAttr(t *testing.T, doc *html.Node, id, key string) map[string][]string {
	t.Helper()
	table := byID(doc, id)
	if table == nil {
		t.Fatalf("the page has no table %q", id)
	}
	rows := map[string][]string{}
	walk(table, func(e *html.Node) {
		if e.Data != "tr" {
			return
		}
		c := cellsOf(e)
		k := attr(e, key)
		if key == "" && len(c) > 0 {
			k = c[0]
		}
		if k != "" {
			rows[k] = c
		}
	})
	return rows
}

func atoi(s string) int {
	n, err := strconv.Atoi(s)
	if err != nil {
		return -1
	}
	return n
}

func tail(s string, lines int) string {
	l := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(l) > lines {
		l = l[len(l)-lines:]
	}
	return strings.Join(l, "\n")
}

// chromium returns the browser's path; without it the test fails, or
// skips under -short (testpeer).
func chromium(t *testing.T) string {
	t.Helper()
	if _, err := os.Stat(chromiumBin); err != nil {
		testpeer.Missing(t, "%s is missing (apt-get install chromium); the status page's browser test needs it", chromiumBin)
	}
	return chromiumBin
}
