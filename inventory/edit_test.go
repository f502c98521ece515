package inventory

import (
	"strings"
	"testing"
)

// TestEditSelectorsFallsBackOnFlowLists: a flow-style dkim list is edited
// through the node tree, and the result still says the same thing.
func TestEditSelectorsFallsBackOnFlowLists(t *testing.T) {
	src := []byte("node: {hostname: mx1.example.com}\ndomains:\n  - name: example.com\n    class: local\n    dkim: [{selector: a, algorithm: rsa}]  # keep\n  - name: example.org\n    class: local\n")
	out, err := EditSelectors(src, "example.com", "b", "ed25519", true)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), "selector: b") || !strings.Contains(string(out), "example.org") {
		t.Errorf("edited:\n%s", out)
	}
	out, err = EditSelectors(src, "example.org", "c", "rsa", true)
	if err != nil || !strings.Contains(string(out), "selector: c") {
		t.Fatalf("adding a first selector: %v\n%s", err, out)
	}
	if _, err := EditSelectors(src, "example.net", "c", "rsa", true); err == nil {
		t.Errorf("no error for a domain not in the file")
	}
}
