// Package invgen generates large, valid inventories for benchmarks and
// tests: the 10,000-domain / 100,000-mailbox node render-config must handle
// in under 2 s and 256 MiB (`mailnode-bench inventory` prints one). Test and
// benchmark machinery, never imported by the product.
package invgen

import (
	"fmt"
	"strings"
)

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
	const hash = "{SHA512-CRYPT}$6$e292H7vf11AQhxPe$GRNYo3/TyFuf4C.TIJj55u..HzXLVeiSv3CZ.3vXJqJYj36syKSOuwXyvtXeBh8oJ3wJf110K0/i2M3mJBJML."
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
			fmt.Fprintf(&b, "      - {user: u%d, password: %q, aliases: [a%d]}\n", j, hash, j)
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
