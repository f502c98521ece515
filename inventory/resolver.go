package inventory

import (
	"path"
	"strings"
)

// The node's own resolver (node.resolver) is a validating unbound. Its
// DNSSEC root trust anchor is kept as Debian's unbound package keeps it:
// an auto-trust-anchor-file that unbound itself rewrites as the root's key
// signing key rolls (RFC 5011), seeded from dns-root-data's static copy
// before unbound starts (unbound refuses to start without the file).

// DefaultResolverAnchorFile is node.resolver_anchor_file's default: the
// file Debian's unbound package names in
// /etc/unbound/unbound.conf.d/root-auto-trust-anchor-file.conf and that
// its unit seeds (/usr/libexec/unbound-helper root_trust_anchor_update).
const DefaultResolverAnchorFile = "/var/lib/unbound/root.key"

// RootKeyFile is dns-root-data's root trust anchor, which apt keeps
// current: the seed of node.resolver_anchor_file, never the file unbound
// writes.
const RootKeyFile = "/usr/share/dns/root.key"

func (inv *Inventory) checkResolverAnchor(v *validator) {
	f := inv.Node.ResolverAnchorFile
	at := []any{"node", "resolver_anchor_file"}
	if !strings.HasPrefix(f, "/") {
		v.add(at, "%q must be an absolute path", f)
		return
	}
	checkPath(v, at, f)
	if c := path.Clean(f); c == "/" || strings.HasSuffix(f, "/") {
		v.add(at, "%q must name a file, not a directory", f)
	} else if path.Dir(c) == path.Dir(RootKeyFile) {
		v.add(at, "%q is in dns-root-data's directory, which apt owns: unbound rewrites this file and writes its temporary files beside it; use a directory of its own that the unbound user may write (default %s)", f, DefaultResolverAnchorFile)
	}
}
