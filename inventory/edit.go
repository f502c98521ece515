package inventory

// Editing the inventory's text where a command changes it (dkim rotate):
// the lines that change are rewritten and comments and layout elsewhere
// are kept; the result is decoded again and must describe the same
// inventory with only that change.

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"

	"gopkg.in/yaml.v3"
)

// Rewrite replaces the inventory file at path with data atomically (a
// temporary file in the same directory, synced, renamed over it), keeping
// the file's mode.
func Rewrite(path string, data []byte) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(st.Mode().Perm())
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// EditSelectors adds (add) or removes the selector sel of domain in the
// inventory text src, for `mailnode dkim rotate`. It edits the text in place where the dkim list is in
// block style (only the lines of that entry change) and falls back to
// re-encoding the YAML node tree otherwise. Either way the result is
// decoded again and must equal the original with exactly that change.
func EditSelectors(src []byte, domain, sel, alg string, add bool) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		return nil, err
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return nil, fmt.Errorf("not a YAML document")
	}
	idx, item := findDomain(doc.Content[0], domain)
	if item == nil {
		return nil, fmt.Errorf("no domain %s in the domains list", domain)
	}
	verify := func(out []byte) bool { return sameButSelector(src, out, idx, sel, alg, add) }
	if out, ok := editText(src, item, sel, alg, add); ok && verify(out) {
		return out, nil
	}
	editNode(item, sel, alg, add)
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, err
	}
	enc.Close()
	if !verify(b.Bytes()) {
		return nil, fmt.Errorf("could not edit the dkim list of %s safely; edit it by hand", domain)
	}
	return b.Bytes(), nil
}

func mapValue(m *yaml.Node, key string) (*yaml.Node, *yaml.Node) {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil, nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i], m.Content[i+1]
		}
	}
	return nil, nil
}

func findDomain(root *yaml.Node, domain string) (int, *yaml.Node) {
	_, seq := mapValue(root, "domains")
	if seq == nil || seq.Kind != yaml.SequenceNode {
		return -1, nil
	}
	for i, it := range seq.Content {
		_, n := mapValue(it, "name")
		if n == nil {
			continue
		}
		if norm, err := NormalizeDomain(n.Value); err == nil && norm == domain {
			return i, it
		}
	}
	return -1, nil
}

// lastLine is the last source line a node occupies (as far as its scalars show).
func lastLine(n *yaml.Node) int {
	l := n.Line
	for _, c := range n.Content {
		l = max(l, lastLine(c))
	}
	if n.Kind == yaml.ScalarNode && (n.Style == yaml.LiteralStyle || n.Style == yaml.FoldedStyle) {
		l += strings.Count(n.Value, "\n")
	}
	return l
}

// editText edits the block-style dkim list of item in place.
func editText(src []byte, item *yaml.Node, sel, alg string, add bool) ([]byte, bool) {
	lines := strings.SplitAfter(string(src), "\n")
	_, list := mapValue(item, "dkim")
	if list == nil || list.Kind != yaml.SequenceNode || list.Style&yaml.FlowStyle != 0 || len(list.Content) == 0 {
		return nil, false
	}
	entry := func(e *yaml.Node) string {
		_, s := mapValue(e, "selector")
		if s == nil {
			return ""
		}
		return strings.ToLower(s.Value)
	}
	// dash is the column (0-based) of an entry's "- ".
	dash := func(e *yaml.Node) (int, bool) {
		line := lines[e.Line-1]
		col := e.Column - 1
		i := strings.LastIndexByte(line[:min(col, len(line))], '-')
		if i < 0 || strings.TrimSpace(line[:i]) != "" {
			return 0, false // not the first line of its entry
		}
		return i, true
	}
	if add {
		last := list.Content[len(list.Content)-1]
		d, ok := dash(last)
		if !ok {
			return nil, false
		}
		ind := strings.Repeat(" ", d)
		var text string
		if last.Style&yaml.FlowStyle != 0 || last.Kind != yaml.MappingNode {
			text = fmt.Sprintf("%s- {selector: %s, algorithm: %s}\n", ind, sel, alg)
		} else {
			inner := strings.Repeat(" ", last.Column-1)
			text = fmt.Sprintf("%s- selector: %s\n%salgorithm: %s\n", ind, sel, inner, alg)
		}
		at := lastLine(last) // insert after this line (1-based)
		if at > len(lines) {
			return nil, false
		}
		if !strings.HasSuffix(lines[at-1], "\n") {
			lines[at-1] += "\n"
		}
		lines = slices.Insert(lines, at, text)
		return []byte(strings.Join(lines, "")), true
	}
	for i, e := range list.Content {
		if entry(e) != sel {
			continue
		}
		if _, ok := dash(e); !ok {
			return nil, false
		}
		from, to := e.Line, lastLine(e) // 1-based, inclusive
		if i+1 < len(list.Content) && list.Content[i+1].Line <= to {
			return nil, false // shares a line with the next entry
		}
		if len(list.Content) == 1 {
			return nil, false // the list would be empty: let the encoder write []
		}
		lines = slices.Delete(lines, from-1, to)
		return []byte(strings.Join(lines, "")), true
	}
	return nil, false
}

// editNode makes the same change on the node tree.
func editNode(item *yaml.Node, sel, alg string, add bool) {
	_, list := mapValue(item, "dkim")
	if add {
		e := &yaml.Node{Kind: yaml.MappingNode, Style: yaml.FlowStyle, Content: []*yaml.Node{
			{Kind: yaml.ScalarNode, Value: "selector"}, {Kind: yaml.ScalarNode, Value: sel},
			{Kind: yaml.ScalarNode, Value: "algorithm"}, {Kind: yaml.ScalarNode, Value: alg},
		}}
		if list == nil || list.Kind != yaml.SequenceNode {
			list = &yaml.Node{Kind: yaml.SequenceNode}
			k, v := mapValue(item, "dkim")
			if k != nil {
				*v = *list
				list = v
			} else {
				item.Content = append(item.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: "dkim"}, list)
			}
		}
		list.Content = append(list.Content, e)
		return
	}
	if list == nil {
		return
	}
	list.Content = slices.DeleteFunc(list.Content, func(e *yaml.Node) bool {
		_, s := mapValue(e, "selector")
		return s != nil && strings.ToLower(s.Value) == sel
	})
}

// sameButSelector reports whether newSrc decodes to oldSrc plus (add) or
// minus the selector entry of domain number idx, and nothing else.
func sameButSelector(oldSrc, newSrc []byte, idx int, sel, alg string, add bool) bool {
	var o, n map[string]any
	if unmarshalYAML(oldSrc, &o) != nil || unmarshalYAML(newSrc, &n) != nil {
		return false
	}
	od, ok1 := domainAt(o, idx)
	nd, ok2 := domainAt(n, idx)
	if !ok1 || !ok2 {
		return false
	}
	isSel := func(e any) bool {
		m, ok := e.(map[string]any)
		return ok && strings.EqualFold(fmt.Sprint(m["selector"]), sel)
	}
	if add {
		l, _ := nd["dkim"].([]any)
		if len(l) == 0 {
			return false
		}
		m, ok := l[len(l)-1].(map[string]any)
		if !ok || len(m) != 2 || m["selector"] != sel || m["algorithm"] != alg {
			return false
		}
		if ol, had := od["dkim"].([]any); had && len(ol) > 0 || len(l) > 1 {
			nd["dkim"] = l[:len(l)-1]
		} else {
			if _, had := od["dkim"]; had {
				nd["dkim"] = od["dkim"]
			} else {
				delete(nd, "dkim")
			}
		}
	} else {
		ol, _ := od["dkim"].([]any)
		nl, _ := nd["dkim"].([]any)
		if slices.IndexFunc(nl, isSel) >= 0 || slices.IndexFunc(ol, isSel) < 0 {
			return false
		}
		od["dkim"] = slices.DeleteFunc(slices.Clone(ol), isSel)
		if len(nl) == 0 {
			nd["dkim"] = []any{}
		}
	}
	return reflect.DeepEqual(o, n)
}

func domainAt(doc map[string]any, idx int) (map[string]any, bool) {
	l, ok := doc["domains"].([]any)
	if !ok || idx < 0 || idx >= len(l) {
		return nil, false
	}
	m, ok := l[idx].(map[string]any)
	return m, ok
}
