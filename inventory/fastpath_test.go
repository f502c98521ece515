package inventory

import (
	"reflect"
	"strings"
	"testing"

	"github.com/mailnode/mailnode/test/invgen"
	"gopkg.in/yaml.v3"
)

// slowDomain decodes one item chunk the yaml.v3 way (decodeDomain without
// normalization), for comparison with fastDomain.
func slowDomain(text string, first int) (Domain, domainLines, bool) {
	var doc yaml.Node
	if err := yaml.Unmarshal([]byte(text), &doc); err != nil ||
		len(doc.Content) != 1 || doc.Content[0].Kind != yaml.SequenceNode || len(doc.Content[0].Content) != 1 {
		return Domain{}, domainLines{}, false
	}
	n := doc.Content[0].Content[0]
	shiftLines(n, first-1)
	r := decodeDomainRaw("f.yaml", 0, n)
	return r.d, r.lines, len(r.decode) == 0
}

func checkFastMatchesYAML(t *testing.T, text string) bool {
	t.Helper()
	fd, fl, ok := fastDomain(text, 7)
	if !ok {
		return false
	}
	sd, sl, sok := slowDomain(text, 7)
	if !sok {
		t.Fatalf("fast path accepted what yaml.v3 refuses:\n%s", text)
	}
	if !reflect.DeepEqual(fd, sd) {
		t.Fatalf("domains differ for\n%s\nfast: %#v\nyaml: %#v", text, fd, sd)
	}
	if !reflect.DeepEqual(fl, sl) {
		t.Fatalf("lines differ for\n%s\nfast: %#v\nyaml: %#v", text, fl, sl)
	}
	return true
}

var fastCases = []struct {
	text string
	fast bool
}{
	{"  - name: a.test\n    class: relay\n    nexthop: \"[10.0.0.5]:25\"\n", true},
	{"- name: a.test\n  mailboxes:\n  - user: u0\n    password: 'x{}$'\n    aliases: [a, b]\n  - {user: u1}\n", true},
	{"  - name: a.test # the first\n\n    # staff\n    aliases: {postmaster: u0, sales: [u0, \"x@o.test\"]}\n    lists:\n      staff: [u0, u1]\n      all:\n        - u0\n        - u1\n      one: u0\n", true},
	{"  - name: a.test\n    dkim: [{selector: s1, algorithm: rsa}, {selector: s2, algorithm: ed25519}]\n    mailboxes: []\n    aliases: {}\n", true},
	{"  - dkim:\n      - selector: s1\n        algorithm: rsa\n    name: A.Test\n", true},
	{"  - name: a.test\n    class: relay\n    nexthop: relay.corp.test:2525\n", false}, // colon in a plain scalar
	{"  - name: a.test\n    clas: relay\n", false},                                     // unknown field
	{"  - name: a.test\n    name: b.test\n", false},                                    // duplicate
	{"  - name: a.test\n    aliases: {x: u0, x: u1}\n", false},                         // duplicate alias
	{"  - name: true\n", false},
	{"  - name: 123\n", false},
	{"  - name:\n", false},
	{"  - name: a.test\n    class: relay\n   bad: indent\n", false},
	{"  - name: \"a\\x41.test\"\n", false},
	{"  - name: a.test\n    mailboxes: {user: x}\n", false},
	{"  - name: a.test\n    mailboxes:\n      - user: u0\n        aliases: a0\n", false},
	{"  - name: a.test\n    aliases: {x: [u0\n", false},
	{"  - name: &a a.test\n", false},
	{"  - name: |\n      a.test\n", false},
	{"  - name: a\n      .test\n", false},
	{"  - name: a.test\n  - name: b.test\n", false},
	{"  - name: 'it''s'\n", false},
	{"  - name: a.test\n    lists: {staff: [u0, [u1]]}\n", false},
	{"  - name: a.test\n    class: relay\n    recipients: [dave, Erin]\n", true},
	{"  - name: a.test\n    class: relay\n    recipients: dave\n", false},
	{"  - name: a.test\n    class: relay\n    recipients: [dave, [erin]]\n", false},
}

func TestFastDomain(t *testing.T) {
	for _, c := range fastCases {
		got := checkFastMatchesYAML(t, c.text)
		if got != c.fast {
			t.Errorf("fast path taken = %v, want %v, for\n%s", got, c.fast, c.text)
		}
	}
	// Every item of a generated inventory, the shape large inventories
	// have, takes the fast path.
	_, items, ok := splitDomains(invgen.Generate(20, 100))
	if !ok {
		t.Fatal("generated inventory not split")
	}
	for _, it := range items {
		if !checkFastMatchesYAML(t, string(it.text)) {
			t.Fatalf("generated item not decoded by the fast path:\n%s", it.text)
		}
	}
}

// FuzzFastDomain: whatever the fast path accepts, yaml.v3 decodes to the
// same domain with the same lines.
func FuzzFastDomain(f *testing.F) {
	for _, c := range fastCases {
		f.Add(c.text)
	}
	_, items, _ := splitDomains(invgen.Generate(2, 4))
	for _, it := range items {
		f.Add(string(it.text))
	}
	f.Fuzz(func(t *testing.T, text string) {
		if strings.ContainsAny(text, "\r\t") {
			return // splitDomains never hands such chunks over
		}
		checkFastMatchesYAML(t, text)
	})
}
