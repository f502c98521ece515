package inventory

import (
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"
)

// Problem is one thing wrong with an inventory, located in its file.
type Problem struct {
	File  string
	Line  int
	Field string // dotted path, e.g. domains[1].mailboxes[0].user
	Msg   string
	// Unreadable: the file could not be read, or is not YAML, or not a
	// mapping: nothing of it could be checked (exit status 2, not 1).
	Unreadable bool
}

func (p Problem) Error() string {
	var b strings.Builder
	if p.File != "" {
		b.WriteString(p.File)
	} else {
		b.WriteString("inventory")
	}
	if p.Line > 0 {
		fmt.Fprintf(&b, ":%d", p.Line)
	}
	b.WriteString(": ")
	if p.Field != "" {
		b.WriteString(p.Field)
		b.WriteString(": ")
	}
	b.WriteString(p.Msg)
	return b.String()
}

// Problems is every problem found in one inventory; it is the error Load returns.
type Problems []Problem

func (ps Problems) Error() string {
	l := make([]string, len(ps))
	for i, p := range ps {
		l[i] = p.Error()
	}
	return strings.Join(l, "\n")
}

// Unreadable reports whether err says the inventory could not be read at
// all (a missing file, bad YAML) rather than read and found wrong.
func Unreadable(err error) bool {
	for _, p := range AsProblems(err) {
		if p.Unreadable {
			return true
		}
	}
	return false
}

// AsProblems extracts the problem list from an error returned by Load or Parse.
func AsProblems(err error) Problems {
	var ps Problems
	if errors.As(err, &ps) {
		return ps
	}
	if err == nil {
		return nil
	}
	return Problems{{Msg: err.Error()}}
}

// Load reads, validates and indexes the inventory at path. On failure the
// error is a Problems value listing everything that is wrong.
func Load(path string) (*Inventory, error) {
	return LoadWith(path, LoadOptions{})
}

// LoadOptions adds checks to Load.
type LoadOptions struct {
	// Host, when set, also checks the inventory against the machine: the
	// system users it names exist, with uids Dovecot accepts.
	Host *Host
	// Node names the tier node the inventory is loaded as (render-config
	// --node): its hostname and addresses become node.hostname and
	// node.addresses for every consumer. "" means node.hostname. A name
	// that is not a node of tier.nodes is a problem.
	Node string
	// Keep is how much of the inventory is kept once it is validated
	// (default KeepAll).
	Keep Keep
}

// LoadWith is Load with options. It reads the file as a stream, decoding
// each domain as soon as its text is read (stream.go); a document that
// cannot be cut into domains is read again whole.
func LoadWith(path string, o LoadOptions) (*Inventory, error) {
	unreadable := func(err error) error {
		return Problems{{File: path, Msg: fmt.Sprintf("cannot read inventory: %v", err), Unreadable: true}}
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, unreadable(err)
	}
	if st, err := f.Stat(); err == nil && !st.Mode().IsRegular() && !st.IsDir() {
		// A pipe (/dev/stdin, a FIFO) cannot be read a second time: it is
		// read whole, once.
		data, err := io.ReadAll(f)
		f.Close()
		if err != nil {
			return nil, unreadable(err)
		}
		return ParseWith(data, path, o)
	}
	inv, err := loadStream(f, path, o)
	f.Close()
	var ps Problems
	switch {
	case err == nil || errors.As(err, &ps):
		return inv, err
	case !errors.Is(err, errChunk):
		return nil, unreadable(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, unreadable(err)
	}
	return ParseWith(data, path, o)
}

var yamlLineRe = regexp.MustCompile(`line (\d+):\s*`)

// Parse is Load for an inventory already in memory; file names it in messages.
func Parse(data []byte, file string) (*Inventory, error) {
	return ParseWith(data, file, LoadOptions{})
}

// ParseWith is Parse with options.
func ParseWith(data []byte, file string, o LoadOptions) (*Inventory, error) {
	digest := Digest(data) // now: the text is let go once its domains are decoded
	inv, err := parseWith(&document{data}, file, o)
	if inv != nil {
		inv.Digest = digest
	}
	return inv, err
}

// document holds an inventory's text while it may be parsed again whole.
// At 100,000 mailboxes the text is 18 MiB: once its domains are decoded,
// parse drops it, so that it does not stay alive beside the tables being
// built (LoadWith holds it nowhere else).
type document struct{ data []byte }

func parseWith(doc *document, file string, o LoadOptions) (*Inventory, error) {
	if head, items, ok := splitDomains(doc.data); ok {
		// Once the chunks are decoded, the text is dropped: the whole
		// document is no longer parsed again.
		inv, err := parse(head, func() ([]domainResult, error) {
			r, err := decodeChunks(file, items, o.Keep)
			if err == nil {
				items, doc.data = nil, nil
			}
			return r, err
		}, file, o)
		if !errors.Is(err, errChunk) {
			return inv, err
		}
	}
	return parse(doc.data, nil, file, o)
}

// parse decodes the document. domains, when not nil, decodes the domain
// items cut out of the document (see domains.go), and data is the document
// without them; otherwise the domains are taken from data's tree.
func parse(data []byte, domains func() ([]domainResult, error), file string, o LoadOptions) (*Inventory, error) {
	split := domains != nil
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		if split {
			return nil, errChunk
		}
		p := yamlProblem(file, err.Error())
		p.Unreadable = true
		return nil, Problems{p}
	}
	if len(root.Content) == 0 {
		return nil, Problems{{File: file, Msg: "inventory is empty", Unreadable: true}}
	}
	doc := root.Content[0]
	v := &validator{file: file, root: doc}
	if doc.Kind != yaml.MappingNode {
		if split {
			return nil, errChunk // let the whole document speak for itself
		}
		v.addAt(doc.Line, "", "the inventory must be a mapping with node:, domains: and the other sections")
		v.problems[0].Unreadable = true
		return nil, v.problems
	}
	// Domains are decoded one by one: take them out of the tree.
	var domainNodes []*yaml.Node
	if !split {
		for i := 0; i+1 < len(doc.Content); i += 2 {
			if val := doc.Content[i+1]; doc.Content[i].Value == "domains" && val.Kind == yaml.SequenceNode {
				domainNodes = val.Content
				doc.Content[i+1] = &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!null", Line: val.Line, Column: val.Column}
				break
			}
		}
	}
	checkKnownFields(v, doc, reflect.TypeOf(Inventory{}), "")
	inv := &Inventory{File: file}
	if !checkPlainYAML(v, doc, "") {
		// not decoded: the problems say why
	} else if err := decodeNode(doc, inv); err != nil {
		v.problems = append(v.problems, decodeProblems(file, doc, "", err)...)
	}
	var results []domainResult
	if split && inv.Domains != nil {
		return nil, errChunk // the cut left domains behind: never drop any
	}
	if split {
		var err error
		if results, err = domains(); err != nil {
			return nil, err
		}
	} else {
		results = make([]domainResult, len(domainNodes))
		for i, n := range domainNodes {
			results[i] = decodeDomain(file, i, n)
			results[i].d.shed(o.Keep)
		}
	}
	for i := range results {
		v.problems = append(v.problems, results[i].decode...)
	}
	if len(v.problems) > 0 {
		sortProblems(v.problems)
		return nil, v.problems
	}
	inv.Domains = make([]Domain, len(results))
	v.domains = make([]domainLines, len(results))
	for i := range results {
		inv.Domains[i] = results[i].d
		v.domains[i] = results[i].lines
		v.problems = append(v.problems, results[i].semantic...)
	}
	results = nil
	inv.checkRole(v)
	inv.applyDefaults()
	inv.normalize()
	inv.selectNode(v, o.Node)
	inv.validate(v)
	if o.Host != nil {
		inv.checkHost(v, o.Host)
	}
	// The checks across domains (duplicates, alias loops) run before the
	// lookup index is built, not beside it: each builds maps of every
	// alias, and a daemon's index takes the domains' addresses from them as
	// it goes (release), so the two never hold all of it at once.
	inv.validateAcrossDomains(v)
	if len(v.problems) > 0 {
		sortProblems(v.problems)
		return nil, v.problems
	}
	inv.idx = inv.newIndexOf(inv.keepsAddresses(o.Keep), o.Keep != KeepAll)
	inv.keepOnly(o.Keep)
	return inv, nil
}

func sortProblems(ps Problems) {
	sort.SliceStable(ps, func(i, j int) bool { return ps[i].Line < ps[j].Line })
}

func yamlProblem(file, msg string) Problem {
	msg = strings.TrimPrefix(msg, "yaml: ")
	p := Problem{File: file}
	if m := yamlLineRe.FindStringSubmatchIndex(msg); m != nil {
		p.Line, _ = strconv.Atoi(msg[m[2]:m[3]])
		msg = msg[:m[0]] + msg[m[1]:]
	}
	if m := typeErrRe.FindStringSubmatch(msg); m != nil {
		msg = fmt.Sprintf("expected %s, found %s", friendlyType(m[3]), friendlyType(m[1]))
		if m[2] != "" {
			msg += " " + m[2]
		}
	}
	msg = strings.ReplaceAll(msg, "!!str", "text")
	msg = strings.ReplaceAll(msg, "!!seq", "a list")
	msg = strings.ReplaceAll(msg, "!!map", "a mapping")
	msg = strings.ReplaceAll(msg, "!!int", "a number")
	msg = strings.ReplaceAll(msg, "!!bool", "true/false")
	p.Msg = strings.TrimSpace(msg)
	return p
}

var typeErrRe = regexp.MustCompile("^cannot unmarshal (!!\\w+) (`[^`]*`)? ?into (.+)$")

func friendlyType(t string) string {
	switch {
	case t == "!!str":
		return "text"
	case t == "!!seq":
		return "a list"
	case t == "!!map":
		return "a mapping"
	case t == "!!int", t == "!!float", t == "float64", t == "int":
		return "a number"
	case t == "!!bool", t == "bool":
		return "true or false"
	case t == "string", t == "inventory.Duration":
		return "a single value"
	case strings.HasPrefix(t, "[]"):
		return "a list"
	case strings.HasPrefix(t, "map["), strings.HasPrefix(t, "inventory."):
		return "a mapping"
	}
	return t
}

// fieldAtLine returns the path of the deepest key that sits on line.
func fieldAtLine(n *yaml.Node, line int, path string) string {
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			sub := joinPath(path, k.Value)
			if f := fieldAtLine(val, line, sub); f != "" {
				return f
			}
			if k.Line == line {
				return sub
			}
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			if f := fieldAtLine(c, line, fmt.Sprintf("%s[%d]", path, i)); f != "" {
				return f
			}
		}
	}
	return ""
}

// validator collects problems and finds the line of a field path.
type validator struct {
	file     string
	root     *yaml.Node
	prefix   []any         // root's own path, for a validator of one domain
	domains  []domainLines // the domains' lines, once their trees are gone
	problems Problems
}

// line finds the line of path.
func (v *validator) line(path []any) int {
	if len(v.prefix) > 0 {
		if len(path) >= len(v.prefix) && reflect.DeepEqual(path[:len(v.prefix)], v.prefix) {
			return lineOf(v.root, path[len(v.prefix):])
		}
		return v.root.Line
	}
	if len(path) >= 2 && path[0] == "domains" {
		if i, ok := path[1].(int); ok && i >= 0 && i < len(v.domains) {
			return v.domains[i].lineOf(path[2:])
		}
	}
	return lineOf(v.root, path)
}

func (v *validator) addAt(line int, field, format string, args ...any) {
	v.problems = append(v.problems, Problem{File: v.file, Line: line, Field: field, Msg: fmt.Sprintf(format, args...)})
}

// add records a problem at a path of keys (string) and indices (int).
func (v *validator) add(path []any, format string, args ...any) {
	v.addAt(v.line(path), fieldName(path), format, args...)
}

func fieldName(path []any) string {
	var b strings.Builder
	for _, p := range path {
		switch p := p.(type) {
		case int:
			fmt.Fprintf(&b, "[%d]", p)
		case string:
			if b.Len() > 0 {
				b.WriteByte('.')
			}
			b.WriteString(p)
		}
	}
	return b.String()
}

// lineOf walks path from n as far as it exists and returns the line of the
// deepest node reached (the value for the last key when it exists).
func lineOf(n *yaml.Node, path []any) int {
	line := n.Line
	for _, p := range path {
		if n == nil {
			break
		}
		var next *yaml.Node
		switch p := p.(type) {
		case string:
			if n.Kind == yaml.MappingNode {
				for i := 0; i+1 < len(n.Content); i += 2 {
					if strings.EqualFold(n.Content[i].Value, p) {
						next = n.Content[i+1]
						if next.Kind == yaml.ScalarNode || next.Line == 0 {
							line = n.Content[i].Line
						}
						break
					}
				}
			}
		case int:
			if n.Kind == yaml.SequenceNode && p >= 0 && p < len(n.Content) {
				next = n.Content[p]
			}
		}
		if next == nil {
			break
		}
		n = next
		line = n.Line
	}
	return line
}

// checkKnownFields reports mapping keys that name no field of t, with a
// "did you mean" suggestion.
func checkKnownFields(v *validator, n *yaml.Node, t reflect.Type, path string) {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	switch t.Kind() {
	case reflect.Struct:
		if n.Kind != yaml.MappingNode {
			return // type errors are reported by Decode
		}
		fields := map[string]reflect.Type{}
		var names []string
		for i := 0; i < t.NumField(); i++ {
			f := t.Field(i)
			tag := strings.Split(f.Tag.Get("yaml"), ",")[0]
			if tag == "" || tag == "-" {
				continue
			}
			fields[tag] = f.Type
			names = append(names, tag)
		}
		seen := map[string]int{}
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			if k.Tag == "!!merge" || k.Kind != yaml.ScalarNode {
				continue // checkPlainYAML reports it
			}
			sub := joinPath(path, k.Value)
			if prev, dup := seen[k.Value]; dup {
				v.addAt(k.Line, sub, "set twice (first on line %d)", prev)
				continue
			}
			seen[k.Value] = k.Line
			ft, ok := fields[k.Value]
			if !ok {
				msg := fmt.Sprintf("unknown field %q", k.Value)
				if s := suggest(k.Value, names); s != "" {
					msg += fmt.Sprintf(" (did you mean %q?)", s)
				} else {
					msg += fmt.Sprintf(" (known here: %s)", strings.Join(names, ", "))
				}
				v.addAt(k.Line, path, "%s", msg)
				continue
			}
			checkKnownFields(v, val, ft, sub)
		}
	case reflect.Slice:
		if t.Elem().Kind() == reflect.String || n.Kind != yaml.SequenceNode {
			return
		}
		for i, c := range n.Content {
			checkKnownFields(v, c, t.Elem(), fmt.Sprintf("%s[%d]", path, i))
		}
	case reflect.Map:
		if n.Kind != yaml.MappingNode {
			return
		}
		for i := 0; i+1 < len(n.Content); i += 2 {
			checkKnownFields(v, n.Content[i+1], t.Elem(), joinPath(path, n.Content[i].Value))
		}
	}
}

func joinPath(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

// suggest returns the known name closest to s, if it is close enough.
func suggest(s string, names []string) string {
	best, bestD := "", 1<<30
	for _, n := range names {
		d := levenshtein(strings.ToLower(s), n)
		if d < bestD {
			best, bestD = n, d
		}
	}
	if bestD <= 2 || (bestD <= len(s)/3 && bestD <= 4) {
		return best
	}
	return ""
}

func levenshtein(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := 1
			if a[i-1] == b[j-1] {
				c = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+c)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
