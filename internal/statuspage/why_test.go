package statuspage

import (
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// /why through the page: junk gets 400, an unreadable log a page that
// says so, a real log the story, escaped.
func TestWhyHandler(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "mail.log")
	now := time.Now()
	stamp := now.Format("2006-01-02T15:04:05.000000-07:00")
	lines := stamp + " mx postfix/smtpd[10]: NOQUEUE: reject: RCPT from localhost[127.0.0.1]: 550 5.7.1 <x@elsewhere.test>: Recipient address rejected: Sorry, relay for <x@elsewhere.test> not permitted <b>; from=<news@sender.test> to=<x@elsewhere.test> proto=ESMTP helo=<mx>\n"
	if err := os.WriteFile(log, []byte(lines), 0o644); err != nil {
		t.Fatal(err)
	}
	p := New("policyd", "1", nil, "")
	p.Why = &Why{Logs: []string{log}}
	get := func(target string) (int, string, string) {
		rec := httptest.NewRecorder()
		p.ServeHTTP(rec, httptest.NewRequest("GET", target, nil))
		return rec.Code, rec.Body.String(), rec.Header().Get("Content-Security-Policy")
	}
	for _, bad := range []string{"/why", "/why?q=", "/why?q=abc", "/why?q=" + url.QueryEscape("<script>alert(1)</script>"), "/why?q=a@b&q=c@d", "/why?q=" + strings.Repeat("a", 300) + "@x"} {
		if code, body, csp := get(bad); code != 400 || strings.Contains(body, "<script>") || csp != CSP {
			t.Errorf("GET %s: %d %q (CSP %q)", bad, code, body, csp)
		}
	}
	code, body, _ := get("/why?q=" + url.QueryEscape("x@elsewhere.test"))
	if code != 200 || !strings.Contains(body, `<pre id="why-story">NOQUEUE from=&lt;news@sender.test&gt; client=localhost[127.0.0.1] to=&lt;x@elsewhere.test&gt;: refused at RCPT: 550 5.7.1`) ||
		!strings.Contains(body, "not permitted &lt;b&gt;") || strings.Contains(body, "<b>") {
		t.Errorf("story: %d\n%s", code, body)
	}
	if code, body, _ := get("/why?q=nobody@example.com"); code != 200 || !strings.Contains(body, `<p id="why-none">nothing about nobody@example.com in 1 log lines`) {
		t.Errorf("no story: %d\n%s", code, body)
	}
	p.Why.Logs = []string{filepath.Join(dir, "missing.log")}
	if code, body, _ := get("/why?q=x@elsewhere.test"); code != 503 || !strings.Contains(body, `<p id="why-error">the mail log cannot be read: maillog: `) {
		t.Errorf("unreadable log: %d\n%s", code, body)
	}
	p.Why.Logs = []string{"-"}
	if code, body, _ := get("/why?q=x@elsewhere.test"); code != 503 || !strings.Contains(body, "cannot read standard input") {
		t.Errorf("stdin: %d\n%s", code, body)
	}
	if code, _, _ := func() (int, string, string) {
		rec := httptest.NewRecorder()
		p.ServeHTTP(rec, httptest.NewRequest("POST", "/why?q=x@elsewhere.test", nil))
		return rec.Code, "", ""
	}(); code != 405 {
		t.Errorf("POST /why: %d", code)
	}
	// Without Why, /why does not exist.
	p.Why = nil
	if code, _, _ := get("/why?q=x@elsewhere.test"); code != 404 {
		t.Errorf("no Why: %d", code)
	}
}

// One story at a time: a second request meanwhile gets 429.
func TestWhyBusy(t *testing.T) {
	h := &Why{Logs: []string{"/nonexistent"}}
	h.busy.Lock()
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, httptest.NewRequest("GET", "/why?q=a@b.test", nil))
	h.busy.Unlock()
	if rec.Code != 429 {
		t.Errorf("busy: %d", rec.Code)
	}
}
