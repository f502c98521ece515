package statuspage

import (
	"bytes"
	"errors"
	"html/template"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/mailnode/mailnode/maillog"
)

// Why serves /why?q=QUEUE-ID|ADDRESS: the story `mailnode why` tells,
// from the mail log files Logs names (files or globs, .gz included), as
// escaped text. One story is read at a time; a request arriving meanwhile
// gets 429, so the page cannot be used to make the daemon read its log in
// a loop.
type Why struct {
	Logs  []string
	Since time.Duration // how far back; 24h when 0
	Now   func() time.Time

	busy sync.Mutex
}

var whyPage = template.Must(template.New("why").Parse(`<!DOCTYPE html>
<html><head><meta charset="utf-8"><title>why {{.Query}}</title>
<style>body{font-family:sans-serif;margin:2em}pre{background:#f4f4f4;padding:1em;overflow-x:auto}</style>
</head><body>
<p><a href="/">status</a></p>
<h1>why {{.Query}}</h1>
{{if .Err}}<p id="why-error">{{.Err}}</p>
{{else if .Stories}}<pre id="why-story">{{.Stories}}</pre>
{{else}}<p id="why-none">nothing about {{.Query}} in {{.Lines}} log lines since {{.Since}}</p>
{{end}}<p>mail log: {{.Logs}}</p>
</body></html>
`))

type whyView struct {
	Query, Err, Stories, Since, Logs string
	Lines                            int
}

func (h *Why) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	if len(q["q"]) > 1 {
		http.Error(w, "give q once", http.StatusBadRequest)
		return
	}
	query := q.Get("q") // as the page's links write it: no brackets, no spaces
	if err := maillog.CheckQuery(query); err != nil {
		http.Error(w, "why: q: "+err.Error(), http.StatusBadRequest)
		return
	}
	if !h.busy.TryLock() {
		http.Error(w, "why: another story is being read; try again in a moment", http.StatusTooManyRequests)
		return
	}
	defer h.busy.Unlock()
	now := time.Now()
	if h.Now != nil {
		now = h.Now()
	}
	back := h.Since
	if back <= 0 {
		back = 24 * time.Hour
	}
	since := now.Add(-back)
	v := whyView{Query: query, Since: since.UTC().Format(time.RFC3339), Logs: strings.Join(h.Logs, " ")}
	code := http.StatusOK
	story := maillog.NewWhy(since)
	if err := readLogs(story, h.Logs, since); err != nil {
		v.Err = "the mail log cannot be read: " + err.Error()
		code = http.StatusServiceUnavailable
	} else {
		var b bytes.Buffer
		for i, s := range story.Stories(query) {
			if i > 0 {
				b.WriteByte('\n')
			}
			s.WriteTo(&b)
		}
		v.Stories, v.Lines = b.String(), story.Lines
	}
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	whyPage.Execute(w, v)
}

func readLogs(w *maillog.Why, patterns []string, since time.Time) error {
	if len(patterns) == 0 {
		return errors.New("no mail log given")
	}
	var pats []string
	for _, p := range patterns {
		if p != "-" { // standard input is not the page's to read
			pats = append(pats, p)
		}
	}
	if len(pats) == 0 {
		return errors.New("no mail log file given (the page cannot read standard input)")
	}
	files, err := maillog.Files(pats, since)
	if err != nil {
		return err
	}
	for _, f := range files {
		if err := w.ReadFile(f); err != nil {
			return err
		}
	}
	return nil
}
