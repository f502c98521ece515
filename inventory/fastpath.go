package inventory

import "strings"

// A node that replaces a legacy system starts with thousands of domains
// written the same plain way, and yaml.v3 spends most of the load time
// building a node tree for each of them. fastDomain decodes one domain item
// written in a small, common subset of YAML straight into a Domain:
//
//   - block mappings and block sequences (a sequence may sit at its key's
//     indentation), one key per line;
//   - flow sequences and flow mappings closed on the line they open;
//   - plain scalars that can only be text (a letter first, then letters,
//     digits and . _ - @ + / =; never true/false/yes/no/on/off/y/n/null),
//     and single or double quoted scalars without escapes;
//   - full-line comments and comments after a value;
//   - printable ASCII only.
//
// Anything else (anchors, tags, block scalars, multi-line scalars, escapes,
// null values, duplicate or unknown keys, a value of the wrong shape) makes
// it return false, and the item goes through yaml.v3, which decodes it or
// reports exactly what is wrong. Whenever it returns true the result equals
// what yaml.v3 decodes from the same text (FuzzFastDomain holds it to that).

type fkind uint8

const (
	fScalar fkind = iota
	fSeq
	fMap
)

type fnode struct {
	kind  fkind
	line  int
	s     string   // a scalar's value
	items []*fnode // a sequence's items; a mapping's keys and values, alternating
}

type fline struct {
	ind  int    // indentation in spaces
	text string // the line without its indentation
	no   int    // line number in the file
}

type fparser struct {
	lines []fline
	i     int // next line to consume
}

// fastDomain decodes the domain item in text, whose first line is line
// first of the file.
func fastDomain(text string, first int) (Domain, domainLines, bool) {
	var p fparser
	if !p.split(text, first) || len(p.lines) == 0 {
		return Domain{}, domainLines{}, false
	}
	l := p.lines[0]
	p.i = 1
	if !strings.HasPrefix(l.text, "- ") {
		return Domain{}, domainLines{}, false
	}
	rest := strings.TrimLeft(l.text[2:], " ")
	item, ok := p.afterDash(l.ind+len(l.text)-len(rest), rest, l.no)
	if !ok || p.i != len(p.lines) || item.kind != fMap {
		return Domain{}, domainLines{}, false
	}
	return decodeFast(item)
}

// split cuts text into non-blank lines; full-line comments are dropped.
// Only printable ASCII is taken (comments too: YAML refuses some
// characters anywhere).
func (p *fparser) split(text string, first int) bool {
	for i := 0; i < len(text); i++ {
		if c := text[i]; (c < 0x20 && c != '\n') || c > 0x7e {
			return false
		}
	}
	no := first - 1
	for len(text) > 0 {
		no++
		var line string
		if i := strings.IndexByte(text, '\n'); i >= 0 {
			line, text = text[:i], text[i+1:]
		} else {
			line, text = text, ""
		}
		t := strings.TrimLeft(line, " ")
		t = strings.TrimRight(t, " ")
		if t == "" || t[0] == '#' {
			continue
		}
		p.lines = append(p.lines, fline{ind: len(line) - len(strings.TrimLeft(line, " ")), text: t, no: no})
	}
	return true
}

// afterDash parses what follows "- " at column col: a block mapping whose
// first key is on this line, or one inline value.
func (p *fparser) afterDash(col int, rest string, no int) (*fnode, bool) {
	if rest == "" || strings.HasPrefix(rest, "- ") || rest == "-" {
		return nil, false
	}
	if _, _, isKey := scanKey(rest); isKey {
		return p.mapping(col, rest, no)
	}
	return p.inlineLine(rest, no)
}

// inlineLine parses a whole inline value that must end the line.
func (p *fparser) inlineLine(s string, no int) (*fnode, bool) {
	n, rest, ok := inline(s, no, false)
	if !ok || !endOfLine(rest) {
		return nil, false
	}
	return n, true
}

// mapping parses a block mapping at column col whose first entry is first.
func (p *fparser) mapping(col int, first string, no int) (*fnode, bool) {
	m := &fnode{kind: fMap, line: no}
	if !p.entry(m, col, first, no) {
		return nil, false
	}
	for p.i < len(p.lines) {
		l := p.lines[p.i]
		if l.ind < col {
			break
		}
		if l.ind > col || strings.HasPrefix(l.text, "-") {
			return nil, false
		}
		p.i++
		if !p.entry(m, col, l.text, l.no) {
			return nil, false
		}
	}
	return m, true
}

// entry parses "key: value" or "key:" followed by a block value.
func (p *fparser) entry(m *fnode, col int, text string, no int) bool {
	key, rest, ok := scanKey(text)
	if !ok {
		return false
	}
	k := &fnode{kind: fScalar, line: no, s: key}
	var v *fnode
	if endOfLine(rest) {
		if p.i >= len(p.lines) {
			return false // a null value
		}
		l := p.lines[p.i]
		switch {
		case l.ind > col && strings.HasPrefix(l.text, "- "):
			v, ok = p.sequence(l.ind)
		case l.ind == col && strings.HasPrefix(l.text, "- "):
			v, ok = p.sequence(col)
		case l.ind > col:
			p.i++
			v, ok = p.mapping(l.ind, l.text, l.no)
		default:
			return false // a null value
		}
	} else {
		if rest[0] != ' ' {
			return false
		}
		v, ok = p.inlineLine(strings.TrimLeft(rest, " "), no)
	}
	if !ok {
		return false
	}
	m.items = append(m.items, k, v)
	return true
}

// sequence parses a block sequence whose dashes are at column col.
func (p *fparser) sequence(col int) (*fnode, bool) {
	s := &fnode{kind: fSeq, line: p.lines[p.i].no}
	for p.i < len(p.lines) {
		l := p.lines[p.i]
		if l.ind < col || (l.ind == col && !strings.HasPrefix(l.text, "- ")) {
			break
		}
		if l.ind > col {
			return nil, false
		}
		p.i++
		rest := strings.TrimLeft(l.text[2:], " ")
		item, ok := p.afterDash(col+len(l.text)-len(rest), rest, l.no)
		if !ok {
			return nil, false
		}
		s.items = append(s.items, item)
	}
	return s, true
}

// endOfLine reports whether rest holds nothing but spaces and a comment.
func endOfLine(rest string) bool {
	t := strings.TrimLeft(rest, " ")
	return t == "" || (t[0] == '#' && len(t) < len(rest))
}

// scanKey reads a mapping key and its colon; rest follows the colon. YAML
// allows an implicit key of at most 1024 characters.
func scanKey(s string) (key, rest string, ok bool) {
	key, rest, ok = scanKey1(s)
	if len(s)-len(rest) > 1000 {
		return "", "", false
	}
	return key, rest, ok
}

func scanKey1(s string) (key, rest string, ok bool) {
	if s == "" {
		return "", "", false
	}
	switch s[0] {
	case '"', '\'':
		v, r, ok := quoted(s)
		if !ok || !strings.HasPrefix(r, ":") {
			return "", "", false
		}
		return v, r[1:], true
	}
	n := plainLen(s)
	if n == 0 || n >= len(s) || s[n] != ':' || !plainIsText(s[:n]) {
		return "", "", false
	}
	return s[:n], s[n+1:], true
}

// inline parses one inline value; in a flow collection, plain scalars end
// at , ] and }.
func inline(s string, no int, flow bool) (*fnode, string, bool) {
	if s == "" {
		return nil, "", false
	}
	switch s[0] {
	case '"', '\'':
		v, rest, ok := quoted(s)
		return &fnode{kind: fScalar, line: no, s: v}, rest, ok
	case '[':
		return flowSeq(s, no)
	case '{':
		return flowMap(s, no)
	}
	n := plainLen(s)
	if n == 0 || !plainIsText(s[:n]) {
		return nil, "", false
	}
	rest := s[n:]
	if rest != "" {
		switch c := rest[0]; {
		case c == ' ':
		case flow && (c == ',' || c == ']' || c == '}'):
		default:
			return nil, "", false
		}
	}
	return &fnode{kind: fScalar, line: no, s: s[:n]}, rest, true
}

func flowSeq(s string, no int) (*fnode, string, bool) {
	n := &fnode{kind: fSeq, line: no}
	s = strings.TrimLeft(s[1:], " ")
	if strings.HasPrefix(s, "]") {
		return n, s[1:], true
	}
	for {
		item, rest, ok := inline(s, no, true)
		if !ok {
			return nil, "", false
		}
		n.items = append(n.items, item)
		rest = strings.TrimLeft(rest, " ")
		switch {
		case strings.HasPrefix(rest, "]"):
			return n, rest[1:], true
		case strings.HasPrefix(rest, ", "):
			s = strings.TrimLeft(rest[1:], " ")
			if s == "" || s[0] == ']' || s[0] == ',' {
				return nil, "", false
			}
		default:
			return nil, "", false
		}
	}
}

func flowMap(s string, no int) (*fnode, string, bool) {
	n := &fnode{kind: fMap, line: no}
	s = strings.TrimLeft(s[1:], " ")
	if strings.HasPrefix(s, "}") {
		return n, s[1:], true
	}
	for {
		key, rest, ok := scanKey(s)
		if !ok || !strings.HasPrefix(rest, " ") {
			return nil, "", false
		}
		v, rest, ok := inline(strings.TrimLeft(rest, " "), no, true)
		if !ok {
			return nil, "", false
		}
		n.items = append(n.items, &fnode{kind: fScalar, line: no, s: key}, v)
		rest = strings.TrimLeft(rest, " ")
		switch {
		case strings.HasPrefix(rest, "}"):
			return n, rest[1:], true
		case strings.HasPrefix(rest, ", "):
			s = strings.TrimLeft(rest[1:], " ")
			if s == "" || s[0] == '}' || s[0] == ',' {
				return nil, "", false
			}
		default:
			return nil, "", false
		}
	}
}

// quoted reads a quoted scalar of printable ASCII with no escapes.
func quoted(s string) (string, string, bool) {
	q := s[0]
	for i := 1; i < len(s); i++ {
		c := s[i]
		switch {
		case c == q:
			if q == '\'' && i+1 < len(s) && s[i+1] == '\'' {
				return "", "", false // an escaped quote
			}
			return s[1:i], s[i+1:], true
		case c == '\\' && q == '"', c < 0x20, c > 0x7e:
			return "", "", false
		}
	}
	return "", "", false // not closed on this line
}

// plainLen is the length of the plain-scalar characters at the start of s.
func plainLen(s string) int {
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' ||
			c == '.' || c == '_' || c == '-' || c == '@' || c == '+' || c == '/' || c == '=') {
			return i
		}
	}
	return len(s)
}

// plainIsText reports whether YAML resolves the plain scalar s to a string
// for certain: it starts with a letter and is no boolean or null word.
func plainIsText(s string) bool {
	c := s[0]
	if !('a' <= c && c <= 'z' || 'A' <= c && c <= 'Z') {
		return false
	}
	if len(s) <= 5 {
		switch strings.ToLower(s) {
		case "true", "false", "yes", "no", "on", "off", "y", "n", "null":
			return false
		}
	}
	return true
}

// fields calls set for each key of the mapping m; set returns a distinct
// bit per known key. An unknown or repeated key, or a value of the wrong
// shape, makes it return false.
func fields(m *fnode, set func(key, val *fnode) (bit int, ok bool)) bool {
	if m.kind != fMap {
		return false
	}
	seen := 0
	for k := 0; k < len(m.items); k += 2 {
		bit, ok := set(m.items[k], m.items[k+1])
		if !ok || bit == 0 || seen&bit != 0 {
			return false
		}
		seen |= bit
	}
	return true
}

// decodeFast turns a parsed item into a Domain the way yaml.v3 decodes it.
func decodeFast(m *fnode) (Domain, domainLines, bool) {
	var d Domain
	lines := domainLines{item: m.line}
	ok := fields(m, func(key, val *fnode) (bit int, ok bool) {
		switch key.s {
		case "name":
			lines.name = key.line
			d.Name, ok = scalar(val)
			return 1, ok
		case "class":
			d.Class, ok = scalar(val)
			return 2, ok
		case "nexthop":
			d.Nexthop, ok = scalar(val)
			return 4, ok
		case "dkim":
			d.DKIM, ok = fastList(val, selectorField)
			return 8, ok
		case "mailboxes":
			d.Mailboxes, ok = fastList(val, mailboxField)
			return 16, ok
		case "aliases":
			d.Aliases, ok = fastTargets(val, "aliases/", &lines)
			return 32, ok
		case "lists":
			d.Lists, ok = fastTargets(val, "lists/", &lines)
			return 64, ok
		case "recipients":
			d.Recipients, ok = scalars(val)
			return 128, ok
		case "transports":
			return 256, false // rare: yaml.v3 decodes it
		}
		return 0, false
	})
	if !ok {
		return Domain{}, domainLines{}, false
	}
	return d, lines, true
}

func scalar(n *fnode) (string, bool) { return n.s, n.kind == fScalar }

func scalars(n *fnode) ([]string, bool) {
	if n.kind != fSeq {
		return nil, false
	}
	l := make([]string, len(n.items))
	for i, it := range n.items {
		if it.kind != fScalar {
			return nil, false
		}
		l[i] = it.s
	}
	return l, true
}

// fastList decodes a sequence of mappings; field sets one key of an item.
func fastList[T any](n *fnode, field func(t *T, key, val *fnode) (bit int, ok bool)) ([]T, bool) {
	if n.kind != fSeq {
		return nil, false
	}
	out := make([]T, len(n.items))
	for i, it := range n.items {
		t := &out[i]
		if !fields(it, func(key, val *fnode) (int, bool) { return field(t, key, val) }) {
			return nil, false
		}
	}
	return out, true
}

func selectorField(s *Selector, key, val *fnode) (bit int, ok bool) {
	switch key.s {
	case "selector":
		s.Selector, ok = scalar(val)
		return 1, ok
	case "algorithm":
		s.Algorithm, ok = scalar(val)
		return 2, ok
	}
	return 0, false
}

func mailboxField(m *Mailbox, key, val *fnode) (bit int, ok bool) {
	switch key.s {
	case "user":
		m.User, ok = scalar(val)
		return 1, ok
	case "password":
		m.Password, ok = scalar(val)
		return 2, ok
	case "aliases":
		m.Aliases, ok = scalars(val)
		return 4, ok
	}
	return 0, false
}

// fastTargets decodes aliases: or lists: (name to one address or a list)
// and records the line of each name.
func fastTargets(n *fnode, kind string, lines *domainLines) (map[string]StringList, bool) {
	if n.kind != fMap {
		return nil, false
	}
	out := make(map[string]StringList, len(n.items)/2)
	if lines.keys == nil {
		lines.keys = make(map[string]int, len(n.items)/2)
	}
	for k := 0; k < len(n.items); k += 2 {
		key, val := n.items[k], n.items[k+1]
		if _, dup := out[key.s]; dup {
			return nil, false
		}
		switch val.kind {
		case fScalar:
			out[key.s] = StringList{val.s}
		case fSeq:
			l, ok := scalars(val)
			if !ok {
				return nil, false
			}
			out[key.s] = l
		default:
			return nil, false
		}
		lines.keys[kind+key.s] = key.line
	}
	return out, true
}
