package maillog

import (
	"bufio"
	"compress/gzip"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"
)

// A Refusal is one decision line of shadow mode (policy.mode: shadow): what
// enforce mode would have refused, or held, while the node accepted.
//
// policyd writes its own lines (package policy):
//
//	2026-11-24T16:03:05.123Z policyd queue_id=4XyZ1 client=x[198.51.100.7] sasl_user="" from=<a@x.test> to=<b@y.test> state=RCPT cell=outside/none->outside rcpt=1 action=DUNNO reason=relay-denied would_reject="550 5.7.1 Sorry, relay for <b@y.test> not permitted"
//
// milterd logs through log/slog's text format, one line per message:
//
//	time=2026-11-24T16:03:06.000Z level=INFO msg="milterd decision" queue_id=4XyZ2 client=198.51.100.7 origin=none sender=a@x.test from=a@x.test rcpts=1 action=verify reason="..." ... disposition=reject disposition_reason="..." mode=shadow cell=outside/none->local would_reject="550 5.7.1 Message rejected as spam"
type Refusal struct {
	Time    time.Time
	Daemon  string // policyd or milterd
	Cell    string // the matrix cell ("outside/none->outside"; milterd: recipient classes joined by +)
	Reason  string // why: the matrix's reason, greylist-*/ratelimit-*, the spam gate's disposition reason
	Reply   string // the reply enforce mode would have given; "hold: <reason>" for a quarantine
	Context string // who: queue id, client, sender, recipient or login
}

// ParseRefusal reads one log line. ok is false for every line that is not
// a shadow-mode decision of policyd or milterd. A line may carry a syslog
// or journal prefix before the daemon's own text.
func ParseRefusal(line string) (r Refusal, ok bool) {
	if !strings.Contains(line, "would_") {
		return r, false
	}
	head, fields, ok := splitFields(line)
	if !ok {
		return r, false
	}
	switch {
	case fields["msg"] == "milterd decision":
		r.Daemon = "milterd"
		r.Time, _ = time.Parse(time.RFC3339Nano, fields["time"])
	case len(head) >= 2 && head[len(head)-1] == "policyd":
		r.Daemon = "policyd"
		r.Time, _ = time.Parse(time.RFC3339Nano, head[len(head)-2])
	default:
		return r, false
	}
	r.Cell = fields["cell"]
	r.Reason = fields["reason"]
	for _, k := range []string{"disposition_reason", "would_reason"} {
		if v := fields[k]; v != "" {
			r.Reason = v
		}
	}
	switch {
	case fields["would_reject"] != "":
		r.Reply = fields["would_reject"]
	case fields["would_hold"] != "":
		r.Reply = "hold: " + fields["would_hold"]
	default:
		return r, false
	}
	if r.Daemon == "policyd" {
		switch {
		case strings.HasPrefix(r.Reply, "450 ") && fields["ratelimit"] != "":
			r.Reason = "ratelimit-" + fields["ratelimit"]
		case strings.HasPrefix(r.Reply, "450 ") && fields["greylist"] != "":
			r.Reason = "greylist-" + fields["greylist"]
		}
	}
	// policyd: from and to are the envelope's; milterd: sender is the
	// envelope's, from the header's.
	keys := []string{"queue_id", "client", "sasl_user", "from", "to"}
	if r.Daemon == "milterd" {
		keys = []string{"queue_id", "client", "user", "sender", "from", "rcpts"}
	}
	var ctx []string
	for _, k := range keys {
		v, ok := fields[k]
		if !ok || (v == "" && k != "sender" && !(r.Daemon == "policyd" && k == "from")) {
			continue
		}
		switch {
		case r.Daemon == "policyd" && (k == "from" || k == "to"):
			v = "<" + v + ">"
		case k == "sender":
			k, v = "from", "<"+v+">"
		case k == "from":
			k = "header_from"
		}
		ctx = append(ctx, k+"="+v)
	}
	r.Context = strings.Join(ctx, " ")
	return r, true
}

// splitFields splits a decision line into the bare words before and
// between its fields (a syslog prefix, policyd's time stamp and name) and
// its name=value fields (a repeated name keeps its last value).
// ok is false when a value cannot be read.
func splitFields(line string) (head []string, fields map[string]string, ok bool) {
	fields = map[string]string{}
	for s := line; s != ""; {
		s = strings.TrimLeft(s, " \t")
		if s == "" {
			break
		}
		if i := strings.IndexAny(s, "= \t"); i >= 0 && s[i] == '=' {
			key := s[:i]
			val, rest, err := parseValue(s[i+1:])
			if err != nil {
				return nil, nil, false
			}
			fields[key] = val
			s = rest
			continue
		}
		var tok string
		tok, s, _ = strings.Cut(s, " ")
		head = append(head, tok)
	}
	return head, fields, true
}

// parseValue reads a value after "=": bare up to the next blank, Go-quoted,
// or an address in <> (Line.Addr: up to a ">" followed by a blank or the
// end, escapes undone). It returns the value and the rest of the line.
func parseValue(s string) (val, rest string, err error) {
	switch {
	case strings.HasPrefix(s, `"`):
		q, err := strconv.QuotedPrefix(s)
		if err != nil {
			return "", "", err
		}
		v, err := strconv.Unquote(q)
		return v, s[len(q):], err
	case strings.HasPrefix(s, "<"):
		for i := 1; i < len(s); i++ {
			if s[i] == '>' && (i+1 == len(s) || s[i+1] == ' ' || s[i+1] == '\t') {
				v := s[1:i]
				if strings.Contains(v, `\`) {
					if u, err := strconv.Unquote(`"` + v + `"`); err == nil {
						v = u
					}
				}
				return v, s[i+1:], nil
			}
		}
		return "", "", fmt.Errorf("maillog: unterminated address")
	}
	v, rest, _ := strings.Cut(s, " ")
	return v, rest, nil
}

// MaxExamples is how many refusals of a group a Report keeps.
const MaxExamples = 3

// A Group is every refusal of one daemon, cell and reason.
type Group struct {
	Daemon, Cell, Reason string
	Count                int
	Examples             []Refusal // the first MaxExamples, in log order
}

// A Report gathers the refusals of shadow mode since a time.
type Report struct {
	Since   time.Time
	Lines   int // lines read
	Undated int // shadow-mode lines without a time stamp (not counted)
	Groups  []*Group
	index   map[[3]string]*Group
}

// NewReport starts a report of the refusals at or after since.
func NewReport(since time.Time) *Report {
	return &Report{Since: since, index: map[[3]string]*Group{}}
}

// Add counts one refusal made at or after the report's start.
func (rp *Report) Add(r Refusal) {
	if r.Time.IsZero() {
		rp.Undated++
		return
	}
	if r.Time.Before(rp.Since) {
		return
	}
	k := [3]string{r.Daemon, r.Cell, r.Reason}
	g := rp.index[k]
	if g == nil {
		g = &Group{Daemon: r.Daemon, Cell: r.Cell, Reason: r.Reason}
		rp.index[k] = g
		rp.Groups = append(rp.Groups, g)
	}
	g.Count++
	if len(g.Examples) < MaxExamples {
		g.Examples = append(g.Examples, r)
	}
}

// Read adds every shadow-mode line of r; a file name ending in .gz is read
// through gzip.
func (rp *Report) Read(name string, r io.Reader) error {
	return eachLine(name, r, func(line string) {
		rp.Lines++
		if ref, ok := ParseRefusal(line); ok {
			rp.Add(ref)
		}
	})
}

// ReadFile reads a log file, plain or .gz.
func (rp *Report) ReadFile(path string) error { return eachLineOfFile(path, rp.Read) }

// eachLine calls fn with every line of r, through gzip when name ends in
// .gz; lines up to 1 MiB.
func eachLine(name string, r io.Reader, fn func(string)) error {
	if strings.HasSuffix(name, ".gz") {
		zr, err := gzip.NewReader(r)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		defer zr.Close()
		r = zr
	}
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fn(sc.Text())
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// eachLineOfFile opens path and hands it to read.
func eachLineOfFile(path string, read func(string, io.Reader) error) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return read(path, f)
}

// Total is the number of refusals counted.
func (rp *Report) Total() int {
	n := 0
	for _, g := range rp.Groups {
		n += g.Count
	}
	return n
}

// WriteTo prints the report: a table of the groups, most frequent first,
// then up to MaxExamples refusals of each with their exact replies.
func (rp *Report) WriteTo(w io.Writer) (int64, error) {
	groups := append([]*Group(nil), rp.Groups...)
	sort.SliceStable(groups, func(i, j int) bool {
		a, b := groups[i], groups[j]
		if a.Count != b.Count {
			return a.Count > b.Count
		}
		if a.Daemon != b.Daemon {
			return a.Daemon > b.Daemon // policyd (RCPT) before milterd (DATA)
		}
		if a.Cell != b.Cell {
			return a.Cell < b.Cell
		}
		return a.Reason < b.Reason
	})
	cw := &countWriter{w: w}
	fmt.Fprintf(cw, "Shadow mode since %s: %d would have been refused or held, in %d group(s); %d log lines read.\n",
		rp.Since.UTC().Format(time.RFC3339), rp.Total(), len(groups), rp.Lines)
	if rp.Undated > 0 {
		fmt.Fprintf(cw, "%d shadow-mode line(s) without a time stamp were left out.\n", rp.Undated)
	}
	if len(groups) == 0 {
		return cw.n, cw.err
	}
	fmt.Fprintln(cw)
	tw := tabwriter.NewWriter(cw, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "COUNT\tDAEMON\tCELL\tREASON\tENFORCE MODE WOULD ANSWER (first example)")
	for _, g := range groups {
		fmt.Fprintf(tw, "%5d\t%s\t%s\t%s\t%s\n", g.Count, g.Daemon, g.Cell, g.Reason, g.Examples[0].Reply)
	}
	tw.Flush()
	for _, g := range groups {
		fmt.Fprintf(cw, "\n%s %s %s (%d):\n", g.Daemon, g.Cell, g.Reason, g.Count)
		for _, e := range g.Examples {
			fmt.Fprintf(cw, "  %s %s\n    %s\n", e.Time.UTC().Format("2006-01-02T15:04:05.000Z"), e.Context, e.Reply)
		}
	}
	return cw.n, cw.err
}

type countWriter struct {
	w   io.Writer
	n   int64
	err error
}

func (c *countWriter) Write(p []byte) (int, error) {
	if c.err != nil {
		return 0, c.err
	}
	n, err := c.w.Write(p)
	c.n += int64(n)
	c.err = err
	return n, err
}

// Files expands log file patterns (shell globs; "-" is standard input) into files, oldest first,
// leaving out files not written since since. A pattern that names nothing
// is an error.
func Files(patterns []string, since time.Time) ([]string, error) {
	type file struct {
		path string
		mod  time.Time
	}
	var files []file
	seen := map[string]bool{}
	for _, p := range patterns {
		if p == "-" {
			files = append(files, file{path: "-", mod: time.Now()})
			continue
		}
		matches, err := filepath.Glob(p)
		if err != nil {
			return nil, fmt.Errorf("maillog: %q: %w", p, err)
		}
		if len(matches) == 0 {
			return nil, fmt.Errorf("maillog: %q: no such file", p)
		}
		for _, m := range matches {
			st, err := os.Stat(m)
			if err != nil {
				return nil, err
			}
			if st.IsDir() || seen[m] {
				continue
			}
			seen[m] = true
			if st.ModTime().Before(since) {
				continue
			}
			files = append(files, file{path: m, mod: st.ModTime()})
		}
	}
	sort.SliceStable(files, func(i, j int) bool { return files[i].mod.Before(files[j].mod) })
	out := make([]string, len(files))
	for i, f := range files {
		out[i] = f.path
	}
	return out, nil
}
