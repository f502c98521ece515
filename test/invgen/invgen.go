// Package invgen generates large, valid inventories for benchmarks and
// tests: the 10,000-domain / 100,000-mailbox node render-config must handle
// in under 2 s and 256 MiB (`mailnode-bench inventory` prints one). Test and
// benchmark machinery, never imported by the product.
package invgen

import (
	"fmt"
	"strings"
)

// Hash is the password hash of every generated mailbox.
const Hash = "{SHA512-CRYPT}$6$e292H7vf11AQhxPe$GRNYo3/TyFuf4C.TIJj55u..HzXLVeiSv3CZ.3vXJqJYj36syKSOuwXyvtXeBh8oJ3wJf110K0/i2M3mJBJML."

// Generate returns a valid inventory document with the given
// number of domains (every tenth a relay domain) and mailboxes spread over
// the local ones, each local domain with aliases, a list and DKIM selectors.
func Generate(domains, mailboxes int) []byte {
	var b strings.Builder
	b.WriteString(`node:
  hostname: mx1.bench.test
  addresses: [203.0.113.10, "2001:db8::10"]
  trusted_networks: [127.0.0.0/8, 10.20.0.0/16]
unix_users: [root]
dkim: {key_dir: /nonexistent/mailnode-bench}
domains:
`)
	local := domains - domains/10
	perDomain := mailboxes / local
	extra := mailboxes % local
	li := 0
	for i := 0; i < domains; i++ {
		if i%10 == 9 {
			fmt.Fprintf(&b, "  - name: relay%d.test\n    class: relay\n    nexthop: \"[mx.relay%d.test]:25\"\n", i, i)
			continue
		}
		n := perDomain
		if li < extra {
			n++
		}
		li++
		fmt.Fprintf(&b, "  - name: d%d.test\n    dkim: [{selector: s1, algorithm: rsa}, {selector: s2, algorithm: ed25519}]\n    mailboxes:\n", i)
		for j := 0; j < n; j++ {
			fmt.Fprintf(&b, "      - {user: u%d, password: %q, aliases: [a%d]}\n", j, Hash, j)
		}
		b.WriteString("    aliases: {postmaster: u0, sales: [u0, \"x@outside.test\"]}\n")
		b.WriteString("    lists: {staff: [u0")
		for j := 1; j < min(n, 5); j++ {
			fmt.Fprintf(&b, ", u%d", j)
		}
		b.WriteString("]}\n")
	}
	return []byte(b.String())
}

// AddMailbox returns doc (Generate's) with mailbox user, with the alias
// user+"a", first in the first local domain: a change of the kind most
// reloads bring, which leaves the domains as they were.
func AddMailbox(doc []byte, user string) []byte {
	line := fmt.Sprintf("      - {user: %s, password: %q, aliases: [%sa]}\n", user, Hash, user)
	return insertAfter(doc, "    mailboxes:\n", line)
}

// AddDomain returns doc (Generate's) with local domain name first, with
// one mailbox and an Ed25519 DKIM selector s2 (whose key the caller
// writes).
func AddDomain(doc []byte, name string) []byte {
	item := fmt.Sprintf("  - name: %s\n    dkim: [{selector: s2, algorithm: ed25519}]\n    mailboxes:\n      - {user: u0, password: %q}\n", name, Hash)
	return insertAfter(doc, "\ndomains:\n", item)
}

func insertAfter(doc []byte, mark, text string) []byte {
	s := string(doc)
	i := strings.Index(s, mark)
	if i < 0 {
		panic("invgen: not a generated inventory: no " + strings.TrimSpace(mark))
	}
	i += len(mark)
	return []byte(s[:i] + text + s[i:])
}
