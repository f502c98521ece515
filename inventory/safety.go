package inventory

import (
	"fmt"
	"net/netip"
	"sort"
	"strconv"
	"strings"
)

// Rules that keep a valid-looking inventory from opening the node or from
// breaking it quietly at run time.

// tooWideToTrust says why a trusted network must not be trusted, or "".
// node.trusted_networks becomes Postfix's mynetworks: every address in it
// may relay anywhere without logging in.
func tooWideToTrust(p netip.Prefix) string {
	a, bits := p.Addr(), p.Bits()
	if a.Is4In6() {
		if bits < 96 {
			return fmt.Sprintf("%s covers every IPv4 address (and more): trusting it makes the node an open relay, since Postfix's mynetworks lets every address in it relay anywhere; list the internal networks themselves", p)
		}
		a, bits = a.Unmap(), bits-96
	}
	if bits == 0 {
		return fmt.Sprintf("%s is every address: trusting it makes the node an open relay (Postfix's mynetworks lets every trusted address relay anywhere without logging in)", p)
	}
	if a.Is4() && bits < 8 {
		return fmt.Sprintf("%s is 1/%d of the IPv4 Internet: trusting it would let strangers relay (Postfix's mynetworks); list the internal networks themselves (at most a /8)", p, 1<<bits)
	}
	if a.Is6() && bits < 16 && !(bits >= 7 && uniqueLocal.Contains(a)) {
		return fmt.Sprintf("%s spans a large part of the IPv6 Internet: trusting it would let strangers relay (Postfix's mynetworks); list the internal networks themselves", p)
	}
	return ""
}

// uniqueLocal is IPv6's private space (RFC 4193): wide, but not the Internet.
var uniqueLocal = netip.MustParsePrefix("fc00::/7")

// endpoint is one address a daemon of the node listens on.
type endpoint struct {
	what string // the field, for the message
	path []any
	unix string // socket path, or "" for TCP/UDP
	host string // "" for every address
	port int
}

func (e endpoint) conflicts(o endpoint) bool {
	if e.unix != "" || o.unix != "" {
		return e.unix != "" && e.unix == o.unix
	}
	if e.port != o.port || e.port == 0 {
		return false
	}
	if e.host == "" || o.host == "" {
		return true
	}
	ea, err1 := netip.ParseAddr(e.host)
	oa, err2 := netip.ParseAddr(o.host)
	if err1 == nil && err2 == nil {
		return ea == oa || ea.IsUnspecified() || oa.IsUnspecified()
	}
	return strings.EqualFold(e.host, o.host)
}

func (e endpoint) String() string {
	if e.unix != "" {
		return "unix:" + e.unix
	}
	if e.host == "" {
		return "port " + strconv.Itoa(e.port)
	}
	return "port " + strconv.Itoa(e.port) + " on " + e.host
}

// masterServicePorts maps the service names master.cf understands here.
var masterServicePorts = map[string]int{"smtp": 25, "submission": 587, "submissions": 465, "smtps": 465}

// checkListenConflicts refuses two daemons of the node on one address: the
// second would fail to start, or, for a unix socket, take the first one's
// clients.
func (inv *Inventory) checkListenConflicts(v *validator) {
	var eps []endpoint
	addListen := func(path []any, s string) {
		network, addr, err := ParseListen(s)
		if err != nil {
			return
		}
		if network == "unix" {
			eps = append(eps, endpoint{what: fieldName(path), path: path, unix: addr})
			return
		}
		if e, ok := hostPortEndpoint(addr); ok {
			e.what, e.path = fieldName(path), path
			eps = append(eps, e)
		}
	}
	addListen([]any{"policy", "listen"}, inv.Policy.Listen)
	addListen([]any{"milter", "listen"}, inv.Milter.Listen)
	if inv.Policy.MetricsListen != "" {
		addListen([]any{"policy", "metrics_listen"}, "inet:"+inv.Policy.MetricsListen)
	}
	if inv.Milter.MetricsListen != "" {
		addListen([]any{"milter", "metrics_listen"}, "inet:"+inv.Milter.MetricsListen)
	}
	if e, ok := hostPortEndpoint(inv.Node.Resolver); ok {
		e.what, e.path = "node.resolver", []any{"node", "resolver"}
		eps = append(eps, e)
	}
	for _, key := range []string{"smtp_listen", "submission_listen", "submissions_listen"} {
		for i, s := range inv.Postfix.listen(key) {
			e, ok := masterEndpoint(s)
			if !ok {
				continue
			}
			e.path = []any{"postfix", key, i}
			e.what = fieldName(e.path)
			eps = append(eps, e)
		}
	}
	q := strings.TrimRight(inv.Postfix.QueueDirectory, "/") + "/"
	for _, f := range []struct{ key, val string }{{"sasl_socket", inv.Dovecot.SASLSocket}, {"lmtp_socket", inv.Dovecot.LMTPSocket}} {
		if f.val != "" && !strings.HasPrefix(f.val, "/") && !inv.NullClient() {
			eps = append(eps, endpoint{what: "dovecot." + f.key, path: []any{"dovecot", f.key}, unix: q + f.val})
		}
	}
	type dovecotService struct {
		key          string
		specs        []string
		plain, tls   int
		defaultNames string
	}
	services := []dovecotService{{"imap_listen", inv.Dovecot.IMAPListen, 143, 993, "imap"}, {"pop3_listen", inv.Dovecot.POP3Listen, 110, 995, "pop3"}}
	if inv.Dovecot.Sieve != nil {
		services = append(services, dovecotService{"sieve.listen", inv.Dovecot.Sieve.Listen, 4190, 0, "managesieve"})
	}
	if inv.NullClient() { // a null client runs no Dovecot
		services = nil
	}
	for _, svc := range services {
		if len(svc.specs) == 0 {
			for _, port := range []int{svc.plain, svc.tls} {
				if port != 0 {
					eps = append(eps, endpoint{what: "dovecot." + svc.key + " (default " + svc.defaultNames + ")", path: []any{"dovecot"}, port: port})
				}
			}
			continue
		}
		for i, s := range svc.specs {
			var e endpoint
			if port, err := parsePort(s); err == nil {
				e = endpoint{port: port}
			} else if ap, err := netip.ParseAddrPort(s); err == nil {
				e = endpoint{host: ap.Addr().String(), port: int(ap.Port())}
			} else {
				continue
			}
			e.path = append([]any{"dovecot"}, dovecotKeyPath(svc.key, i)...)
			e.what = fieldName(e.path)
			eps = append(eps, e)
		}
	}
	for i := range eps {
		for j := 0; j < i; j++ {
			if eps[i].conflicts(eps[j]) {
				v.add(eps[i].path, "%s and %s both listen on %s: one of them could not start", eps[j].what, eps[i].what, eps[i])
				break
			}
		}
	}
}

// hostPortEndpoint reads HOST:PORT.
func hostPortEndpoint(s string) (endpoint, bool) {
	i := strings.LastIndexByte(s, ':')
	if i < 0 {
		return endpoint{}, false
	}
	port, err := parsePort(s[i+1:])
	if err != nil {
		return endpoint{}, false
	}
	h := strings.Trim(s[:i], "[]")
	if a, err := netip.ParseAddr(h); err == nil && a.IsUnspecified() {
		h = ""
	}
	return endpoint{host: h, port: port}, true
}

// masterEndpoint reads a master.cf service name: "25", "127.0.0.1:2525",
// "submission".
func masterEndpoint(s string) (endpoint, bool) {
	if port, ok := masterServicePorts[s]; ok {
		return endpoint{port: port}, true
	}
	if port, err := parsePort(s); err == nil {
		return endpoint{port: port}, true
	}
	e, ok := hostPortEndpoint(s)
	if ok {
		return e, true
	}
	return endpoint{}, false
}

// checkLocalTargets refuses a fully qualified alias or list target in one
// of the node's own local domains that names nothing there (Postfix would
// refuse it 550 5.1.1 at RCPT, or bounce the expansion), and a target at
// node.hostname that is not one of unix_users.
func (inv *Inventory) checkLocalTargets(v *validator) {
	// The names of a local domain are gathered only when a target names
	// that domain: most targets are unqualified or leave the node, and the
	// names of every domain at once are some 9 MiB at 100,000 mailboxes,
	// at the top of a reload's peak.
	local := map[string][]int{} // a local domain -> its items (one, unless duplicated)
	for i, d := range inv.Domains {
		if d.Class == "local" && d.Name != "" {
			local[d.Name] = append(local[d.Name], i)
		}
	}
	names := map[string]map[string]bool{}
	namesOf := func(dom string) map[string]bool {
		if set, ok := names[dom]; ok {
			return set
		}
		set := map[string]bool{}
		for _, i := range local[dom] {
			d := &inv.Domains[i]
			for _, m := range d.Mailboxes {
				set[m.User] = true
				for _, a := range m.Aliases {
					set[a] = true
				}
			}
			for n := range d.Aliases {
				set[n] = true
			}
			for n := range d.Lists {
				set[n] = true
			}
			for n := range d.Transports {
				set[n] = true
			}
		}
		names[dom] = set
		return set
	}
	unix := map[string]bool{}
	for _, u := range inv.UnixUsers {
		unix[strings.ToLower(u)] = true
	}
	for i, d := range inv.Domains {
		if d.Class != "local" {
			continue
		}
		for _, kind := range []string{"aliases", "lists"} {
			m := d.Aliases
			if kind == "lists" {
				m = d.Lists
			}
			keys := make([]string, 0, len(m))
			for k := range m {
				keys = append(keys, k)
			}
			sort.Strings(keys)
			for _, name := range keys {
				for k, t := range m[name] {
					part, dom, ok := strings.Cut(t, "@")
					if !ok {
						continue
					}
					if _, isLocal := local[dom]; isLocal && !namesOf(dom)[part] {
						v.add([]any{"domains", i, kind, name, k}, "%q: %s is a local domain of this node and has no mailbox, alias or list %q", t, dom, part)
					}
					if dom == inv.Node.Hostname && inv.Node.Hostname != "" && !unix[part] {
						v.add([]any{"domains", i, kind, name, k}, "%q: mail to the node's host name goes to unix_users only, and %q is not one", t, part)
					}
				}
			}
		}
	}
}

// dovecotKeyPath is the path below dovecot of item i of a listen field
// ("imap_listen", or "sieve.listen" one level down).
func dovecotKeyPath(key string, i int) []any {
	if a, b, ok := strings.Cut(key, "."); ok {
		return []any{a, b, i}
	}
	return []any{key, i}
}
