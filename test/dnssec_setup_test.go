package test

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
)

// What the DNSSEC tests (TestDANEOutbound, TestResolverKeepsRootAnchor)
// both set up: an authoritative unbound serving signed zones on a loopback
// address, and a test-only wrapper around the node's rendered unbound.conf.

// authZone is one zone an authoritative unbound serves from a file.
type authZone struct{ name, file string }

// writeAuthUnbound writes, in dir/auth, the config of an authoritative
// unbound listening on addr port 53 and serving zones with RRSIGs, DNSKEY
// and NSEC as signed; serverExtra are further lines of its server:
// section. It returns the config's path (start it with daneUnbound).
func writeAuthUnbound(dir, addr string, serverExtra []string, zones ...authZone) string {
	authDir := filepath.Join(dir, "auth")
	os.MkdirAll(authDir, 0o755)
	authConf := filepath.Join(authDir, "unbound.conf")
	var w strings.Builder
	fmt.Fprintf(&w, `server:
    interface: %s
    port: 53
    username: ""
    chroot: ""
    directory: %q
    pidfile: %q
    use-syslog: no
    logfile: ""
    module-config: "iterator"
    access-control: 127.0.0.0/8 allow
`, addr, authDir, filepath.Join(authDir, "unbound.pid"))
	for _, l := range serverExtra {
		fmt.Fprintf(&w, "    %s\n", l)
	}
	for _, z := range zones {
		fmt.Fprintf(&w, `auth-zone:
    name: %q
    zonefile: %q
    for-downstream: yes
    for-upstream: no
`, z.name, z.file)
	}
	w.WriteString("remote-control:\n    control-enable: no\n")
	os.WriteFile(authConf, []byte(w.String()), 0o644)
	return authConf
}

// nodeUnboundConf starts, in ubDir, the test-only wrapper of the node's
// rendered unbound.conf (include): no privilege drop, files in ubDir, log
// to its output, queries to loopback allowed. The caller adds its own
// server: lines and zones, then writes it with writeNodeUnbound.
func nodeUnboundConf(ubDir, include string) *strings.Builder {
	os.MkdirAll(ubDir, 0o755)
	w := new(strings.Builder)
	fmt.Fprintf(w, "include: %q\nserver:\n", include)
	fmt.Fprintf(w, "    username: \"\"\n    chroot: \"\"\n    directory: %q\n    pidfile: %q\n", ubDir, filepath.Join(ubDir, "unbound.pid"))
	w.WriteString("    use-syslog: no\n    logfile: \"\"\n    verbosity: 1\n    log-servfail: yes\n    do-not-query-localhost: no\n")
	return w
}

// writeNodeUnbound writes the wrapper w to ubDir and returns its path.
func writeNodeUnbound(ubDir string, w *strings.Builder) string {
	nodeConf := filepath.Join(ubDir, "unbound-test.conf")
	os.WriteFile(nodeConf, []byte(w.String()), 0o644)
	return nodeConf
}
