package inventory

import (
	"bytes"
	"errors"
	"reflect"
	"regexp"
	"runtime"
	"sync"
	"sync/atomic"
	"unicode/utf8"

	"gopkg.in/yaml.v3"
)

// Large inventories (thousands of domains, hundreds of thousands of
// mailboxes) are the normal case for a node that replaces a legacy system,
// and a YAML node tree costs about ten times the text it was parsed from.
// So the domains are parsed one at a time: the block sequence under the
// top-level "domains:" key is cut into one text chunk per item, each
// chunk is parsed, checked and decoded on its own (on every core), and its
// tree is dropped before the next. Only a few line numbers per domain are
// kept for the problems that need all domains at once (duplicates, loops).
//
// The cut is done only on documents where it cannot change the meaning: a
// block mapping at the top, "domains:" alone on its line, items at one
// indentation, no anchors or aliases, no CR, no further documents. Anything
// else, and any chunk that does not parse, goes through the whole-document
// path, which produces the same inventory and the same problems.

// topKeyRe is a plain top-level key of a block mapping: "name:" alone or
// followed by a space.
var topKeyRe = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_-]*:( |$)`)

func isFirstDocMarker(line []byte, lineNo int) bool {
	return lineNo == 1 && bytes.Equal(bytes.TrimRight(line, " "), []byte("---"))
}

// chunk is one domain item's text and the line it starts on.
type chunk struct {
	text []byte
	line int
}

// splitDomains cuts data into the document without its domain items (item
// lines blanked, so line numbers stay) and one chunk per item. The chunks
// share data.
func splitDomains(data []byte) (head []byte, items []chunk, ok bool) {
	if bytes.ContainsAny(data, "&*\r\t") || !utf8.Valid(data) {
		return nil, nil, false
	}
	var sp splitter
	start, first := -1, 0 // the current item's offset and first line
	for off := 0; off < len(data); {
		next := len(data)
		if end := bytes.IndexByte(data[off:], '\n'); end >= 0 {
			next = off + end + 1
		}
		line := data[off:next]
		kind := sp.line(line)
		switch kind {
		case lineFail:
			return nil, nil, false
		case lineItem, lineHead:
			if start >= 0 {
				items = append(items, chunk{text: data[start:off], line: first})
				start = -1
			}
			if kind == lineItem {
				start, first = off, sp.no
			}
		}
		head = appendHead(head, line, kind)
		off = next
	}
	if start >= 0 {
		items = append(items, chunk{text: data[start:], line: first})
	}
	if !sp.done() {
		return nil, nil, false
	}
	return head, items, true
}

// lineKind is where the cut puts one line of an inventory.
type lineKind int

const (
	lineHead   lineKind = iota // the document without its domains keeps it
	lineRegion                 // under domains:, before the first item: blanked
	lineItem                   // the first line of a domain item
	lineInItem                 // a further line of the current item
	lineFail                   // the document cannot be cut: parse it whole
)

// splitter decides, line by line, how an inventory is cut into the
// document without its domains and one chunk per domain item. It only
// classifies: splitDomains keeps the chunks as parts of the text in
// memory, LoadWith copies them out of the file as it reads it.
type splitter struct {
	no         int  // the line just classified, from 1
	ind        int  // the items' indentation (haveInd)
	haveInd    bool // the first item was seen
	sawDomains bool // "domains:" was seen
	inRegion   bool // the lines are under domains:
	items      int  // item lines seen
	seenText   bool // a line that is neither blank nor a comment was seen
	topKey     bool // a key of the top mapping was seen
}

// line classifies the next line of the document (with its newline, if it
// has one). Once it returns lineFail, the document cannot be cut.
func (sp *splitter) line(raw []byte) lineKind {
	sp.no++
	line := bytes.TrimSuffix(raw, []byte("\n"))
	trimmed := bytes.TrimLeft(line, " ")
	indent := len(line) - len(trimmed)
	blank := len(trimmed) == 0 || trimmed[0] == '#'
	if bytes.HasPrefix(line, []byte("---")) || bytes.HasPrefix(line, []byte("...")) || bytes.HasPrefix(line, []byte("%")) {
		if !(!sp.seenText && !sp.sawDomains && bytes.Equal(bytes.TrimRight(line, " "), []byte("---"))) {
			return lineFail
		}
	}
	if !blank {
		sp.seenText = true
	}
	if sp.inRegion {
		isItem := !blank && sp.haveInd && indent == sp.ind && (bytes.HasPrefix(trimmed, []byte("- ")) || bytes.Equal(trimmed, []byte("-")))
		switch {
		case blank:
		case !sp.haveInd:
			if !(bytes.HasPrefix(trimmed, []byte("- ")) || bytes.Equal(trimmed, []byte("-"))) {
				return lineFail
			}
			sp.ind, sp.haveInd = indent, true
			isItem = true
		case indent == 0 && sp.ind > 0 && trimmed[0] == '-':
			return lineFail // an item at another indentation
		case indent == 0 && sp.ind > 0, indent == 0 && sp.ind == 0 && !isItem:
			// the next top-level key ends the region
			sp.inRegion = false
		case indent < sp.ind:
			return lineFail
		}
		if sp.inRegion {
			switch {
			case isItem:
				sp.items++
				return lineItem
			case sp.items > 0:
				return lineInItem
			}
			return lineRegion
		}
	}
	if !blank && indent > 0 && !sp.topKey {
		return lineFail // the top mapping does not start at column 0
	}
	if !blank && indent == 0 && !isFirstDocMarker(line, sp.no) {
		if !topKeyRe.Match(line) {
			return lineFail // not a plain block mapping at the top
		}
		sp.topKey = true
	}
	if !blank && indent == 0 {
		key := bytes.TrimRight(trimmed, " ")
		if i := bytes.Index(key, []byte(" #")); i >= 0 {
			key = bytes.TrimRight(key[:i], " ")
		}
		if bytes.Equal(key, []byte("domains:")) {
			if sp.sawDomains {
				return lineFail
			}
			sp.sawDomains, sp.inRegion = true, true
		} else if bytes.HasPrefix(trimmed, []byte("domains:")) || bytes.HasPrefix(trimmed, []byte("domains :")) {
			return lineFail // domains given inline: whole-document path
		}
	}
	return lineHead
}

// appendHead adds line to the document without its domains: as it is, or
// as an empty line where it belongs to the domains.
func appendHead(head, line []byte, kind lineKind) []byte {
	if kind == lineHead {
		return append(head, line...)
	}
	if bytes.HasSuffix(line, []byte("\n")) {
		return append(head, '\n')
	}
	return head
}

// done reports whether the whole document can be cut: it had domains: with
// at least one item.
func (sp *splitter) done() bool { return sp.sawDomains && sp.items > 0 }

// domainLines keeps the lines of one domain that problems found across
// domains point at, once its YAML tree is gone.
type domainLines struct {
	item, name int
	keys       map[string]int // "aliases/NAME", "lists/NAME"
}

func (l domainLines) lineOf(rest []any) int {
	if len(rest) >= 1 && rest[0] == "name" && l.name > 0 {
		return l.name
	}
	if len(rest) >= 2 {
		kind, _ := rest[0].(string)
		name, _ := rest[1].(string)
		if n, ok := l.keys[kind+"/"+name]; ok {
			return n
		}
	}
	return l.item
}

// domainResult is what decoding one domain item yields.
type domainResult struct {
	d        Domain
	lines    domainLines
	decode   Problems // unknown fields and type errors: reported alone
	semantic Problems // the rest, reported when nothing failed to decode
}

// decodeDomain checks, decodes, normalizes and validates domain item i.
func decodeDomain(file string, i int, n *yaml.Node) domainResult {
	r := decodeDomainRaw(file, i, n)
	if len(r.decode) > 0 {
		return r
	}
	v := &validator{file: file, root: n, prefix: []any{"domains", i}}
	p := func(rest ...any) []any { return append([]any{"domains", i}, rest...) }
	normalizeDomain(v, &r.d, p)
	validateDomain(v, &r.d, p)
	checkDomainSecurity(v, &r.d, p)
	r.semantic = v.problems
	return r
}

// decodeDomainRaw checks and decodes domain item i, and notes its lines.
func decodeDomainRaw(file string, i int, n *yaml.Node) domainResult {
	prefix := []any{"domains", i}
	v := &validator{file: file, root: n, prefix: prefix}
	var r domainResult
	r.lines.item = n.Line
	if n.Kind == yaml.MappingNode {
		for k := 0; k+1 < len(n.Content); k += 2 {
			key, val := n.Content[k], n.Content[k+1]
			switch key.Value {
			case "name":
				r.lines.name = key.Line
			case "aliases", "lists":
				if val.Kind == yaml.MappingNode {
					if r.lines.keys == nil {
						r.lines.keys = make(map[string]int, len(val.Content)/2)
					}
					for j := 0; j+1 < len(val.Content); j += 2 {
						r.lines.keys[key.Value+"/"+val.Content[j].Value] = val.Content[j].Line
					}
				}
			}
		}
	}
	path := fieldName(prefix)
	checkKnownFields(v, n, reflect.TypeOf(Domain{}), path)
	if !checkPlainYAML(v, n, path) {
		// not decoded: the problems say why
	} else if err := decodeNode(n, &r.d); err != nil {
		v.problems = append(v.problems, decodeProblems(file, n, path, err)...)
	}
	r.decode = v.problems
	return r
}

// decodeProblems turns a yaml Decode error into problems naming the field.
func decodeProblems(file string, n *yaml.Node, path string, err error) Problems {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		return Problems{yamlProblem(file, err.Error())}
	}
	ps := make(Problems, 0, len(te.Errors))
	for _, msg := range te.Errors {
		pr := yamlProblem(file, msg)
		pr.Field = fieldAtLine(n, pr.Line, path)
		if pr.Field == "" {
			pr.Field = path
		}
		ps = append(ps, pr)
	}
	return ps
}

// errChunk makes the caller fall back to the whole-document path.
var errChunk = errors.New("inventory: chunk does not stand alone")

// decodeChunks parses and decodes the domain chunks on every core; each
// domain sheds at once what keep does not keep.
func decodeChunks(file string, items []chunk, keep Keep) ([]domainResult, error) {
	d := newDecoder(file, keep, len(items))
	for _, c := range items {
		d.add(c)
	}
	return d.wait()
}

// decoder decodes domain chunks on every core as they are added, in at
// most inFlight waiting: the in-memory cut adds them all at once, the
// streamed load as their lines are read.
type decoder struct {
	file    string
	keep    Keep
	work    chan numberedChunk
	n       int // chunks added
	mu      sync.Mutex
	results []domainResult
	failed  atomic.Bool
	wg      sync.WaitGroup
}

// inFlight bounds the chunks added but not yet decoded.
const inFlight = 64

type numberedChunk struct {
	i int
	c chunk
}

// newDecoder starts the workers; size is how many items are expected, if
// known (0 if not).
func newDecoder(file string, keep Keep, size int) *decoder {
	d := &decoder{file: file, keep: keep, work: make(chan numberedChunk, inFlight), results: make([]domainResult, 0, size)}
	for w := 0; w < runtime.GOMAXPROCS(0); w++ {
		d.wg.Add(1)
		go func() {
			defer d.wg.Done()
			for nc := range d.work {
				if d.failed.Load() {
					continue // drain: the document is parsed whole
				}
				r, ok := decodeChunk(d.file, nc.i, nc.c, d.keep)
				if !ok {
					d.failed.Store(true)
					continue
				}
				d.mu.Lock()
				for len(d.results) <= nc.i {
					d.results = append(d.results, domainResult{})
				}
				d.results[nc.i] = r
				d.mu.Unlock()
			}
		}()
	}
	return d
}

// add queues the next domain item.
func (d *decoder) add(c chunk) {
	d.work <- numberedChunk{i: d.n, c: c}
	d.n++
}

// wait returns the results in the order the items were added, or errChunk
// when one of them does not stand alone. No add after it.
func (d *decoder) wait() ([]domainResult, error) {
	close(d.work)
	d.wg.Wait()
	if d.failed.Load() || len(d.results) != d.n {
		return nil, errChunk
	}
	return d.results, nil
}

// decodeChunk decodes domain item i, which sheds at once what keep does
// not keep; false when the chunk does not parse on its own.
func decodeChunk(file string, i int, c chunk, keep Keep) (domainResult, bool) {
	if r, ok := decodeFastChunk(file, i, c); ok {
		r.d.shed(keep)
		return r, true
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(c.text, &doc); err != nil ||
		len(doc.Content) != 1 || doc.Content[0].Kind != yaml.SequenceNode || len(doc.Content[0].Content) != 1 {
		return domainResult{}, false
	}
	item := doc.Content[0].Content[0]
	shiftLines(item, c.line-1)
	r := decodeDomain(file, i, item)
	r.d.shed(keep)
	return r, true
}

func shiftLines(n *yaml.Node, by int) {
	n.Line += by
	for _, c := range n.Content {
		shiftLines(c, by)
	}
}

// decodeFastChunk decodes, normalizes and validates domain item i through
// fastDomain. It returns false when the item is outside the fast subset or
// has anything to report: yaml.v3 then decodes it again, so every problem
// comes with the lines of the full node tree.
func decodeFastChunk(file string, i int, c chunk) (domainResult, bool) {
	d, lines, ok := fastDomain(string(c.text), c.line)
	if !ok {
		return domainResult{}, false
	}
	prefix := []any{"domains", i}
	v := &validator{file: file, root: &yaml.Node{Kind: yaml.MappingNode, Line: lines.item}, prefix: prefix}
	p := func(rest ...any) []any { return append([]any{"domains", i}, rest...) }
	normalizeDomain(v, &d, p)
	validateDomain(v, &d, p)
	if len(v.problems) > 0 {
		return domainResult{}, false
	}
	return domainResult{d: d, lines: lines}, true
}
