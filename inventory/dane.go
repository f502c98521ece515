package inventory

import (
	"bufio"
	"bytes"
	"net/netip"
	"os"
	"strings"
)

// DANE outbound (postfix.outbound_tls: dane). Postfix asks the resolvers
// of /etc/resolv.conf through libc, which knows no port, and with
// smtp_dns_support_level = dnssec it trusts their AD bit (it turns on
// glibc's trust-ad for its own queries). DANE is therefore only as good
// as the resolver behind /etc/resolv.conf: it must be the node's own
// validating unbound, node.resolver, on loopback port 53.

// ResolvConfPath is the file libc, and so Postfix, takes its resolvers from.
const ResolvConfPath = "/etc/resolv.conf"

// DANEMainCF are the main.cf parameters postfix.main_cf may not set with
// outbound_tls: dane, each with why: every one of them would turn DANE off
// or into plain opportunistic TLS without a word.
var DANEMainCF = []struct{ Name, Why string }{
	{"smtp_tls_security_level", "outbound_tls: dane sets it to dane"},
	{"smtp_dns_support_level", "DANE needs dnssec: without it no TLSA record is trusted and mail goes out with opportunistic TLS"},
	{"smtp_host_lookup", "DANE needs the MX and TLSA records from DNS, not native lookups"},
	{"disable_dns_lookups", "DANE needs the MX and TLSA records from DNS"},
}

// DANE reports whether the node sends with DANE.
func (inv *Inventory) DANE() bool { return inv.Postfix.OutboundTLS == OutboundDANE }

// checkDANE refuses what would make outbound_tls: dane a silent no-op.
func (inv *Inventory) checkDANE(v *validator) {
	if !inv.DANE() || inv.NullClient() {
		return
	}
	if ap, err := netip.ParseAddrPort(inv.Node.Resolver); err == nil {
		if !ap.Addr().IsLoopback() || ap.Port() != 53 {
			v.add([]any{"node", "resolver"}, "%q: postfix.outbound_tls: dane needs the node's own validating resolver on a loopback address and port 53 (e.g. 127.0.0.1:53): Postfix asks it through libc (/etc/resolv.conf), which takes no port, and trusts its DNSSEC verdict", inv.Node.Resolver)
		}
	}
	for _, m := range DANEMainCF {
		if _, ok := inv.Postfix.MainCF[m.Name]; ok {
			v.add([]any{"postfix", "main_cf", m.Name}, "postfix.outbound_tls is dane: %s", m.Why)
		}
	}
}

// checkResolvConf checks, with outbound_tls: dane, that the host's
// resolv.conf names node.resolver's address and nothing else: libc tries
// every nameserver listed, and Postfix would trust the AD bit of each.
func (inv *Inventory) checkResolvConf(v *validator, read func() ([]byte, error)) {
	if !inv.DANE() || inv.NullClient() || read == nil {
		return
	}
	ap, err := netip.ParseAddrPort(inv.Node.Resolver)
	if err != nil {
		return // refused already
	}
	path := []any{"postfix", "outbound_tls"}
	b, err := read()
	if err != nil {
		v.add(path, "dane: cannot read %s: %v", ResolvConfPath, err)
		return
	}
	servers := ResolvConfNameservers(b)
	want := ap.Addr().String()
	if len(servers) == 0 {
		v.add(path, "dane: %s names no nameserver; it must name node.resolver only (nameserver %s)", ResolvConfPath, want)
		return
	}
	for _, s := range servers {
		if a, err := netip.ParseAddr(s); err != nil || a.Unmap() != ap.Addr().Unmap() {
			v.add(path, "dane: %s names nameserver %s: Postfix would take its DNSSEC verdict on TLSA records; it must name node.resolver only (nameserver %s)", ResolvConfPath, s, want)
		}
	}
}

// ResolvConfNameservers returns the addresses of resolv.conf's nameserver
// lines, in order.
func ResolvConfNameservers(b []byte) []string {
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "nameserver" {
			out = append(out, f[1])
		}
	}
	return out
}

// readResolvConf reads the host's resolv.conf.
func readResolvConf() ([]byte, error) { return os.ReadFile(ResolvConfPath) }
