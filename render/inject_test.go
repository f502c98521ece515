package render

import (
	"bytes"
	"fmt"
	"os"
	"strings"
	"testing"

	"github.com/mailnode/mailnode/inventory"
	"gopkg.in/yaml.v3"
)

// TestNoValueChangesTheShapeOfAFile puts each character that means
// something in one of the rendered files (line breaks, separators, comment
// and expansion characters) into each value of the example inventory in
// turn. Either the inventory is refused, or every file renders with the same
// shape as before: as many lines, map lines of one key and a list of
// values, passwd-file lines of as many fields. A value that could add a
// main.cf setting, a map entry or a Dovecot user fails here.
func TestNoValueChangesTheShapeOfAFile(t *testing.T) {
	data, err := os.ReadFile("../examples/inventory.yaml")
	if err != nil {
		t.Fatal(err)
	}
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}
	base := renderDoc(t, &doc)
	if base == nil {
		t.Fatal("the example inventory does not load")
	}
	var scalars []*yaml.Node
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		switch n.Kind {
		case yaml.DocumentNode, yaml.SequenceNode:
			for _, c := range n.Content {
				walk(c)
			}
		case yaml.MappingNode:
			for i := 1; i < len(n.Content); i += 2 {
				walk(n.Content[i])
			}
		case yaml.ScalarNode:
			scalars = append(scalars, n)
		}
	}
	walk(&doc)
	hostile := []string{"\n", "\r", "\nmynetworks = 0.0.0.0/0\n", " ", "\t", ",", "#", "$", ":", "{", "}", "\"", "=", "\\", "\x00", "%"}
	accepted, refused := 0, 0
	for _, n := range scalars {
		old, oldStyle, oldTag := n.Value, n.Style, n.Tag
		for _, h := range hostile {
			for _, v := range []string{old + h + "x", h + old} {
				n.Value, n.Style, n.Tag = v, yaml.DoubleQuotedStyle, "!!str"
				files := renderDoc(t, &doc)
				if files == nil {
					refused++
					continue
				}
				accepted++
				if err := sameShape(base, files); err != nil {
					t.Errorf("line %d: value %q accepted, and %v", n.Line, v, err)
				}
			}
		}
		n.Value, n.Style, n.Tag = old, oldStyle, oldTag
	}
	t.Logf("%d scalars, %d hostile values refused, %d accepted with every file's shape intact", len(scalars), refused, accepted)
	if refused == 0 || accepted == 0 {
		t.Fatalf("refused %d, accepted %d: the test exercised nothing", refused, accepted)
	}
}

// renderDoc renders a YAML tree; nil when the inventory is refused.
func renderDoc(t *testing.T, doc *yaml.Node) Files {
	t.Helper()
	b, err := yaml.Marshal(doc)
	if err != nil {
		t.Fatal(err)
	}
	inv, err := inventory.Parse(b, "inv.yaml")
	if err != nil {
		return nil
	}
	files, err := Render(inv)
	if err != nil {
		t.Errorf("config check accepts an inventory render-config fails on: %v\n%s", err, b)
		return nil
	}
	return files
}

// sameShape compares the files of two renderings by their structure.
func sameShape(base, got Files) error {
	if len(base) != len(got) {
		return fmt.Errorf("%d files rendered, not %d", len(got), len(base))
	}
	for name, b := range got {
		want, ok := base[name]
		if !ok {
			if strings.HasPrefix(name, "dns/") {
				continue // a renamed domain renames its zone
			}
			return fmt.Errorf("an unexpected file %s", name)
		}
		if nb, nw := bytes.Count(b, []byte("\n")), bytes.Count(want, []byte("\n")); nb != nw {
			return fmt.Errorf("%s has %d lines, not %d", name, nb, nw)
		}
		if bytes.IndexByte(b, 0) >= 0 || bytes.IndexByte(b, '\r') >= 0 {
			return fmt.Errorf("%s holds a NUL or carriage return", name)
		}
		lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
		baseLines := strings.Split(strings.TrimSuffix(string(want), "\n"), "\n")
		switch {
		case name == "dovecot/users":
			for i, l := range lines {
				if strings.Count(l, ":") != strings.Count(baseLines[i], ":") {
					return fmt.Errorf("passwd-file line %q has %d fields, not %d", l, strings.Count(l, ":")+1, strings.Count(baseLines[i], ":")+1)
				}
			}
		case strings.HasPrefix(name, "postfix/") && name != "postfix/main.cf" && name != "postfix/master.cf" && name != "postfix/"+DigestFile:
			for _, l := range lines {
				if l == "" || strings.HasPrefix(l, "#") {
					continue
				}
				key, vals, ok := strings.Cut(l, " ")
				if !ok || strings.ContainsAny(key, " \t") {
					return fmt.Errorf("%s: line %q is not KEY VALUES", name, l)
				}
				for _, v := range strings.Split(vals, ", ") {
					if v == "" || strings.ContainsAny(v, " \t,") {
						return fmt.Errorf("%s: line %q has a value %q that Postfix reads as more than one", name, l, v)
					}
				}
			}
		case name == "dovecot/dovecot.conf" || name == "unbound/unbound.conf" || name == "postfix/main.cf":
			for i, l := range lines {
				// A '#' after the start of a line comments out the rest of
				// it in dovecot.conf and unbound.conf; a line that did not
				// have one must not get one.
				if j := strings.IndexByte(strings.TrimLeft(l, " \t"), '#'); j > 0 && !strings.Contains(baseLines[i], "#") {
					return fmt.Errorf("%s: line %q has a '#' mid-line", name, l)
				}
				// A value ending in a backslash or an unbalanced quote or
				// brace changes how the next line is read.
				if strings.Count(l, "{") != strings.Count(baseLines[i], "{") || strings.Count(l, "}") != strings.Count(baseLines[i], "}") ||
					strings.Count(l, "\"")%2 != strings.Count(baseLines[i], "\"")%2 {
					return fmt.Errorf("%s: line %q changes the file's nesting or quoting", name, l)
				}
			}
		}
	}
	return nil
}
