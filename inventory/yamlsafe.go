package inventory

import (
	"fmt"

	"gopkg.in/yaml.v3"
)

// The inventory is plain YAML: mappings with text keys, lists and
// scalars. Two things YAML allows are refused before anything is decoded:
//
//   - merge keys ("<<: {...}"). yaml.v3 decodes them with state kept
//     between keys, and a merge beside a key that is a list makes it panic
//     (hash of an unhashable type). An inventory is written once and read
//     by every daemon: each key is written out.
//   - keys that are lists or mappings ("? [a, b]: x"). No field of the
//     inventory is named that way.
//
// A panic of the decoder on anything else is turned into a problem by
// decodeNode, never into a crashed daemon or reload.

// checkPlainYAML reports every merge key and every key that is not text
// under n, whose field is path. It returns false when it found any: the
// tree must then not be decoded.
func checkPlainYAML(v *validator, n *yaml.Node, path string) bool {
	ok := true
	switch n.Kind {
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, val := n.Content[i], n.Content[i+1]
			switch {
			case k.Kind != yaml.ScalarNode:
				v.addAt(k.Line, path, "a key must be text, not a list or a mapping")
				ok = false
				continue
			case k.Tag == "!!merge":
				v.addAt(k.Line, path, "YAML merge keys (<<) are not supported in the inventory: write each key out")
				ok = false
				continue
			}
			if !checkPlainYAML(v, val, joinPath(path, k.Value)) {
				ok = false
			}
		}
	case yaml.SequenceNode:
		for i, c := range n.Content {
			if !checkPlainYAML(v, c, fmt.Sprintf("%s[%d]", path, i)) {
				ok = false
			}
		}
	case yaml.AliasNode:
		// An alias repeats its anchor's tree, which is checked where it
		// is written.
	}
	return ok
}

// decodeNode is n.Decode(out) that returns the decoder's panic as an
// error instead of crashing the caller.
func decodeNode(n *yaml.Node, out any) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("line %d: the YAML could not be decoded: %v", n.Line, r)
		}
	}()
	return n.Decode(out)
}

// unmarshalYAML is yaml.Unmarshal that returns the decoder's panic as an
// error.
func unmarshalYAML(data []byte, out any) (err error) {
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("the YAML could not be decoded: %v", r)
		}
	}()
	return yaml.Unmarshal(data, out)
}
