package dns

import (
	"context"
	"crypto/x509"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"time"

	"blitiri.com.ar/go/spf"
	"github.com/emersion/go-msgauth/dmarc"
	mdns "github.com/miekg/dns"

	"github.com/mailnode/mailnode/dkim"
	"github.com/mailnode/mailnode/inventory"
	"github.com/mailnode/mailnode/mailauth"
	"github.com/mailnode/mailnode/resolver"
)

// Status is the verdict of one check.
type Status string

// Check verdicts. A required check that does not hold is a fail; a
// recommended one (the SRV records, a relay domain's backup MX) and a
// required one that holds with a caveat are a warn.
const (
	StatusOK   Status = "ok"
	StatusWarn Status = "warn"
	StatusFail Status = "fail"
)

// Result is one check of live DNS against the inventory.
//
// Check names are stable (scripts and tests match on them):
//
//	node checks (Domain is node.hostname; with tier.nodes, each node's hostname in turn):
//	  a, aaaa            the host's addresses equal node.addresses (the node's tier.nodes addresses)
//	  ptr:ADDR           ADDR's PTR names the host, which resolves back to ADDR
//	local domain checks:
//	  ns                 the parent delegates the domain; parent and child NS agree
//	  soa                the domain is a zone of its own (SOA at the apex)
//	  mx                 an MX points at node.hostname; with a tier, the MX set is the tier's
//	                     nodes at one preference (a node missing or an outsider at it fails)
//	  spf                the SPF policy evaluates to pass for every node address (every tier node's)
//	  dkim:SELECTOR      the selector's TXT record carries the key on disk
//	  dmarc              one DMARC record, parseable
//	  mta-sts            (domains[].mta_sts) one _mta-sts record, v=STSv1, a valid id (the rendered one, else warn)
//	  name:mta-sts       mta-sts.<domain> has every node's addresses (/aaaa: the IPv6 ones)
//	  mta-sts-policy     the policy served at https://mta-sts.<domain>/.well-known/mta-sts.txt from each of
//	                     those addresses parses, has the inventory's mode and max_age, and its mx lines
//	                     and the MX records match each other (every MX matched, every mx line used)
//	  tlsrpt             (domains[].tlsrpt) one _smtp._tls record, v=TLSRPTv1, rua= the inventory's
//	  name:LABEL         LABEL.domain (mail, imap, pop3, smtp) has the node's addresses
//	  srv:SERVICE        the RFC 6186 SRV record points at the node (recommended)
//	relay domain checks:
//	  mx-backup          the node (each tier node) is among the domain's MX hosts (recommended)
type Result struct {
	Domain   string `json:"domain"`
	Check    string `json:"check"`
	Name     string `json:"name"` // the owner name asked about
	Required bool   `json:"required"`
	Status   Status `json:"status"`
	Expected string `json:"expected"`
	Found    string `json:"found"`
	// Problem is how the decisive question ended when it did not give the
	// records: NXDOMAIN, NODATA, SERVFAIL, REFUSED, timeout, unreachable.
	Problem string `json:"problem,omitempty"`
	Detail  string `json:"detail,omitempty"`
}

// Report is the outcome of one `dns check` run.
type Report struct {
	Resolver string   `json:"resolver"`
	OK       bool     `json:"ok"` // no check failed
	Results  []Result `json:"results"`
}

// Failed returns the results with status fail.
func (r Report) Failed() []Result {
	var out []Result
	for _, x := range r.Results {
		if x.Status == StatusFail {
			out = append(out, x)
		}
	}
	return out
}

// Checker queries live DNS through one recursive resolver and compares
// what it finds with what the inventory (through ZoneFor, the same records
// render-config writes) says must be published.
type Checker struct {
	// Resolver is the recursive resolver asked (host:port): node.resolver
	// unless overridden.
	Resolver string
	// Timeout bounds one attempt of one question (default 3 s); Attempts is
	// how many times a question that timed out is sent (default 2).
	Timeout  time.Duration
	Attempts int
	// AuthPort is the port of authoritative servers asked directly for the
	// parent's delegation (default 53; tests serve elsewhere).
	AuthPort string
	// RootCAs verify the HTTPS server of an MTA-STS policy (nil: the
	// system's roots; SSL_CERT_FILE and SSL_CERT_DIR override them).
	RootCAs *x509.CertPool
	// Dial, when set, connects to a policy server instead of net.Dialer
	// (tests point the node's addresses at a local server).
	Dial func(ctx context.Context, network, addr string) (net.Conn, error)

	q *querier
}

const (
	defaultTimeout  = 3 * time.Second
	defaultAttempts = 2
	maxParallel     = 8
)

func (c *Checker) init() {
	if c.q == nil {
		c.q = &querier{timeout: c.Timeout, attempts: c.Attempts}
		if c.q.timeout <= 0 {
			c.q.timeout = defaultTimeout
		}
		if c.q.attempts <= 0 {
			c.q.attempts = defaultAttempts
		}
	}
	if c.AuthPort == "" {
		c.AuthPort = "53"
	}
}

// ask asks the resolver, recursion desired.
func (c *Checker) ask(ctx context.Context, name string, qtype uint16) answer {
	return c.q.ask(ctx, c.Resolver, name, qtype, true)
}

// Run checks the node and the given domains (local and relay) of inv.
// Results come in a fixed order: node checks, then each domain in the
// order given, each in the order of the list in Result's documentation.
func (c *Checker) Run(ctx context.Context, inv *inventory.Inventory, domains []*inventory.Domain) Report {
	c.init()
	parts := make([][]Result, len(domains)+1)
	var wg sync.WaitGroup
	sem := make(chan struct{}, maxParallel)
	run := func(i int, f func() []Result) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			sem <- struct{}{}
			defer func() { <-sem }()
			parts[i] = f()
		}()
	}
	run(0, func() []Result { return c.node(ctx, inv) })
	for i, d := range domains {
		run(i+1, func() []Result {
			if d.Class == "relay" {
				return c.relay(ctx, inv, d)
			}
			return c.local(ctx, inv, d)
		})
	}
	wg.Wait()
	rep := Report{Resolver: c.Resolver, OK: true}
	for _, p := range parts {
		rep.Results = append(rep.Results, p...)
	}
	for _, r := range rep.Results {
		if r.Status == StatusFail {
			rep.OK = false
		}
	}
	return rep
}

// parseAddrs parses addresses the way ZoneFor does.
func parseAddrs(l []string) []netip.Addr {
	var out []netip.Addr
	for _, a := range l {
		if ip, err := netip.ParseAddr(strings.TrimSpace(a)); err == nil {
			out = append(out, ip.Unmap())
		}
	}
	return out
}

// tierAddrs are the addresses of every node that receives the domains'
// mail (node.addresses without a tier), as the zone publishes them.
func tierAddrs(inv *inventory.Inventory) []netip.Addr {
	var out []netip.Addr
	for _, n := range inv.TierNodes() {
		out = append(out, parseAddrs(n.Addresses)...)
	}
	return out
}

// tierHosts are the fully qualified names of the tier's nodes (node.hostname
// without a tier), lower case.
func tierHosts(inv *inventory.Inventory) []string {
	var out []string
	for _, n := range inv.TierNodes() {
		out = append(out, mdns.Fqdn(strings.ToLower(n.Hostname)))
	}
	return out
}

func family(addrs []netip.Addr, v6 bool) []netip.Addr {
	var out []netip.Addr
	for _, a := range addrs {
		if a.Is6() == v6 {
			out = append(out, a)
		}
	}
	return out
}

func addrList(addrs []netip.Addr) string {
	if len(addrs) == 0 {
		return "(none)"
	}
	s := make([]string, len(addrs))
	for i, a := range addrs {
		s[i] = a.String()
	}
	slices.Sort(s)
	return strings.Join(s, ", ")
}

func sameAddrs(a, b []netip.Addr) bool {
	return addrList(a) == addrList(b)
}

// addrsOf asks for the A or AAAA records of name.
func (c *Checker) addrsOf(ctx context.Context, name string, v6 bool) ([]netip.Addr, answer) {
	t := mdns.TypeA
	if v6 {
		t = mdns.TypeAAAA
	}
	a := c.ask(ctx, name, t)
	var out []netip.Addr
	for _, rr := range a.rrs {
		var ip net.IP
		switch v := rr.(type) {
		case *mdns.A:
			ip = v.A
		case *mdns.AAAA:
			ip = v.AAAA
		}
		if x, ok := netip.AddrFromSlice(ip); ok {
			out = append(out, x.Unmap())
		}
	}
	return out, a
}

// compareAddrs is the check that name's A (or AAAA) records are want.
func (c *Checker) compareAddrs(ctx context.Context, r Result, name string, want []netip.Addr, v6 bool) Result {
	r.Name = name
	r.Expected = addrList(want)
	got, a := c.addrsOf(ctx, name, v6)
	if len(a.cnames) > 0 {
		r.Detail = "via CNAME " + strings.Join(a.cnames, " -> ")
	}
	switch a.problem {
	case "":
		r.Found = addrList(got)
	case ProblemNoData, ProblemNXDomain:
		if len(want) == 0 {
			r.Found, r.Status = addrList(nil), StatusOK
			return r
		}
		r.Status, r.Found, r.Problem = StatusFail, a.describe(), a.problem
		return r
	default:
		r.Status, r.Found, r.Problem = StatusFail, a.describe(), a.problem
		return r
	}
	if sameAddrs(got, want) {
		r.Status = StatusOK
		return r
	}
	r.Status = StatusFail
	var missing, extra []netip.Addr
	for _, w := range want {
		if !slices.Contains(got, w) {
			missing = append(missing, w)
		}
	}
	for _, g := range got {
		if !slices.Contains(want, g) {
			extra = append(extra, g)
		}
	}
	var why []string
	if len(missing) > 0 {
		why = append(why, "missing "+addrList(missing))
	}
	if len(extra) > 0 {
		why = append(why, "not the node's: "+addrList(extra))
	}
	r.Detail = strings.TrimPrefix(r.Detail+"; "+strings.Join(why, "; "), "; ")
	return r
}

// node checks the host, or every node of the tier: its A/AAAA records and
// the PTR of each address.
func (c *Checker) node(ctx context.Context, inv *inventory.Inventory) []Result {
	var out []Result
	for _, n := range inv.TierNodes() {
		host := mdns.Fqdn(strings.ToLower(n.Hostname))
		addrs := parseAddrs(n.Addresses)
		base := Result{Domain: n.Hostname, Required: true}
		for _, v6 := range []bool{false, true} {
			r := base
			r.Check = "a"
			if v6 {
				r.Check = "aaaa"
			}
			out = append(out, c.compareAddrs(ctx, r, host, family(addrs, v6), v6))
		}
		for _, ip := range addrs {
			out = append(out, c.ptr(ctx, base, host, ip))
		}
	}
	return out
}

// ptr checks forward-confirmed reverse DNS of ip: its PTR names host, and
// host's addresses include ip.
func (c *Checker) ptr(ctx context.Context, r Result, host string, ip netip.Addr) Result {
	r.Check = "ptr:" + ip.String()
	r.Name, _ = mdns.ReverseAddr(ip.String())
	r.Expected = host + " (which resolves back to " + ip.String() + ")"
	a := c.ask(ctx, r.Name, mdns.TypePTR)
	if a.problem != "" {
		r.Status, r.Found, r.Problem = StatusFail, a.describe(), a.problem
		return r
	}
	var names []string
	for _, rr := range a.rrs {
		names = append(names, strings.ToLower(rr.(*mdns.PTR).Ptr))
	}
	r.Found = strings.Join(names, ", ")
	if !slices.Contains(names, host) {
		r.Status = StatusFail
		r.Detail = "the PTR does not name the node's hostname"
		return r
	}
	back, fa := c.addrsOf(ctx, host, ip.Is6())
	if !slices.Contains(back, ip) {
		r.Status = StatusFail
		found := addrList(back)
		if fa.problem != "" {
			found = fa.describe()
		}
		r.Detail = fmt.Sprintf("not forward-confirmed: %s resolves to %s", host, found)
		return r
	}
	if len(names) > 1 {
		r.Status = StatusWarn
		r.Detail = "several PTR records; receivers may check another one"
		return r
	}
	r.Status = StatusOK
	return r
}

// local runs the checks of one local domain.
func (c *Checker) local(ctx context.Context, inv *inventory.Inventory, d *inventory.Domain) []Result {
	base := Result{Domain: d.Name, Required: true}
	z, err := ZoneFor(inv, d)
	if err != nil {
		r := base
		r.Check, r.Name, r.Status = "zone", d.Name+".", StatusFail
		r.Expected, r.Found = "the zone the inventory describes", err.Error()
		return []Result{r}
	}
	hosts := tierHosts(inv)
	origin := z.Origin
	addrs := tierAddrs(inv)
	var zoneNS []string
	var mx []Record
	txt := map[string]Record{}
	var srv [][]Record // per service, in zone order
	for _, rec := range z.Records {
		switch rec.Type {
		case TypeNS:
			zoneNS = append(zoneNS, rec.Target)
		case TypeMX:
			mx = append(mx, rec)
		case TypeTXT:
			txt[rec.Name] = rec
		case TypeSRV:
			if k := len(srv); k > 0 && srv[k-1][0].Name == rec.Name {
				srv[k-1] = append(srv[k-1], rec)
			} else {
				srv = append(srv, []Record{rec})
			}
		}
	}
	out := []Result{
		c.checkNS(ctx, base, origin, zoneNS),
		c.checkSOA(ctx, base, z),
		c.checkMX(ctx, base, origin, hosts, mx),
		c.checkSPF(ctx, base, inv, d.Name, addrs),
	}
	for _, s := range d.DKIM {
		out = append(out, c.checkDKIM(ctx, base, inv, d, s, txt))
	}
	out = append(out, c.checkDMARC(ctx, base, "_dmarc."+origin, txt["_dmarc."+origin]))
	out = append(out, c.checkSTS(ctx, base, inv, d, z)...)
	for _, n := range ClientNames {
		name := n + "." + origin
		if slices.Contains(hosts, name) {
			continue
		}
		for _, v6 := range []bool{false, true} {
			want := family(addrs, v6)
			if len(addrs) == 0 {
				continue // the zone has a CNAME to the host, whose addresses the node checks cover
			}
			r := base
			r.Check = "name:" + n
			if v6 {
				if len(want) == 0 {
					continue
				}
				r.Check += "/aaaa"
			} else if len(want) == 0 {
				continue
			}
			out = append(out, c.compareAddrs(ctx, r, name, want, v6))
		}
	}
	for _, recs := range srv {
		out = append(out, c.checkSRV(ctx, base, recs))
	}
	return out
}

// relay checks that a relay domain names the node, or every node of the
// tier, as a (backup) MX.
func (c *Checker) relay(ctx context.Context, inv *inventory.Inventory, d *inventory.Domain) []Result {
	var out []Result
	for _, host := range tierHosts(inv) {
		out = append(out, c.relayMX(ctx, d, host)...)
	}
	return out
}

func (c *Checker) relayMX(ctx context.Context, d *inventory.Domain, host string) []Result {
	r := Result{Domain: d.Name, Check: "mx-backup", Name: d.Name + ".", Required: false,
		Expected: "an MX with a higher preference than the primary's, pointing at " + host}
	a := c.ask(ctx, r.Name, mdns.TypeMX)
	if a.problem != "" {
		r.Status, r.Found, r.Problem = StatusWarn, a.describe(), a.problem
		return []Result{r}
	}
	r.Found = mxList(a.rrs)
	r.Status = StatusWarn
	lowest := uint16(65535)
	for _, rr := range a.rrs {
		lowest = min(lowest, rr.(*mdns.MX).Preference)
	}
	for _, rr := range a.rrs {
		m := rr.(*mdns.MX)
		if strings.EqualFold(m.Mx, host) {
			if m.Preference > lowest {
				r.Status = StatusOK
			} else {
				r.Detail = "the node is the primary MX of a relay domain; its mail would loop back to the next hop"
			}
			return []Result{r}
		}
	}
	r.Detail = "the node is not an MX of the domain: it will not receive its mail as backup"
	return []Result{r}
}

func mxList(rrs []mdns.RR) string {
	var s []string
	for _, rr := range rrs {
		m := rr.(*mdns.MX)
		s = append(s, fmt.Sprintf("%d %s", m.Preference, strings.ToLower(m.Mx)))
	}
	slices.Sort(s)
	return strings.Join(s, ", ")
}

func nsNames(rrs []mdns.RR, owner string) []string {
	var s []string
	for _, rr := range rrs {
		if n, ok := rr.(*mdns.NS); ok && strings.EqualFold(n.Hdr.Name, owner) {
			s = append(s, strings.ToLower(n.Ns))
		}
	}
	slices.Sort(s)
	return slices.Compact(s)
}

// parentName drops the first label: "a.b.c." -> "b.c.", "c." -> ".".
func parentName(name string) string {
	i := strings.IndexByte(name, '.')
	if i < 0 || i == len(name)-1 {
		return "."
	}
	return name[i+1:]
}

// checkNS checks the delegation: the resolver finds the domain's NS set,
// and the parent zone's own servers, asked directly without recursion,
// delegate the domain to the same set.
func (c *Checker) checkNS(ctx context.Context, r Result, origin string, zoneNS []string) Result {
	r.Check, r.Name = "ns", origin
	child := c.ask(ctx, origin, mdns.TypeNS)
	if child.problem != "" {
		r.Status, r.Found, r.Problem = StatusFail, a2s(child), child.problem
		r.Expected = "a delegation from the parent zone"
		return r
	}
	childNS := nsNames(child.rrs, origin)
	r.Found = strings.Join(childNS, ", ")
	parent, pa := c.parentZone(ctx, origin)
	r.Expected = "delegation from " + parent + " to the domain's name servers"
	if parent == "" {
		r.Status, r.Problem = StatusWarn, pa.problem
		r.Detail = "the parent zone could not be found (" + pa.describe() + "); the delegation is seen through the resolver only"
		return r
	}
	var notes []string
	for _, n := range childNS {
		v4, _ := c.addrsOf(ctx, n, false)
		v6, _ := c.addrsOf(ctx, n, true)
		if len(v4)+len(v6) == 0 {
			notes = append(notes, "name server "+n+" has no address")
		}
	}
	if !slices.Equal(childNS, sortedCopy(zoneNS)) {
		notes = append(notes, "the rendered zone lists "+strings.Join(zoneNS, ", ")+" (a placeholder for your name servers)")
	}
	delegated, perr := c.askParent(ctx, parent, origin)
	switch {
	case perr == nil && !slices.Equal(delegated, childNS):
		r.Status = StatusWarn
		notes = append([]string{fmt.Sprintf("the parent %s delegates to %s, the zone itself lists %s", parent, strings.Join(delegated, ", "), strings.Join(childNS, ", "))}, notes...)
	case perr == nil:
		r.Status = StatusOK
	case perr == errNotDelegated:
		r.Status = StatusFail
		r.Found = "no delegation in " + parent + " (the resolver sees " + r.Found + ")"
		notes = append([]string{"the parent zone does not delegate the domain"}, notes...)
	default:
		r.Status = StatusWarn
		notes = append([]string{"could not ask the parent's servers directly (" + perr.Error() + "); the delegation is seen through the resolver only"}, notes...)
	}
	if r.Status == StatusOK && len(notes) > 0 && strings.Contains(notes[0], "has no address") {
		r.Status = StatusWarn
	}
	r.Detail = strings.Join(notes, "; ")
	return r
}

func sortedCopy(s []string) []string {
	s = slices.Clone(s)
	for i := range s {
		s[i] = strings.ToLower(s[i])
	}
	slices.Sort(s)
	return slices.Compact(s)
}

func a2s(a answer) string { return a.describe() }

// parentZone finds the apex of the zone enclosing name's parent.
func (c *Checker) parentZone(ctx context.Context, name string) (string, answer) {
	for p := parentName(name); ; p = parentName(p) {
		if p == "." {
			return ".", answer{}
		}
		a := c.ask(ctx, p, mdns.TypeSOA)
		for _, rr := range a.rrs {
			if strings.EqualFold(rr.Header().Name, p) {
				return p, a
			}
		}
		if a.authSOA != nil {
			return strings.ToLower(a.authSOA.Hdr.Name), a
		}
		if a.problem != ProblemNoData && a.problem != ProblemNXDomain {
			return "", a
		}
	}
}

var errNotDelegated = fmt.Errorf("not delegated")

// askParent asks the parent zone's servers directly (no recursion) for the
// NS set of origin and returns the set they delegate to.
func (c *Checker) askParent(ctx context.Context, parent, origin string) ([]string, error) {
	pns := c.ask(ctx, parent, mdns.TypeNS)
	if pns.problem != "" {
		return nil, fmt.Errorf("NS of %s: %s", parent, pns.describe())
	}
	var last string
	tried := 0
	for _, n := range nsNames(pns.rrs, parent) {
		var ips []netip.Addr
		for _, v6 := range []bool{false, true} {
			x, _ := c.addrsOf(ctx, n, v6)
			ips = append(ips, x...)
		}
		for _, ip := range ips {
			if tried >= 4 {
				break
			}
			tried++
			server := net.JoinHostPort(ip.String(), c.AuthPort)
			a := c.q.ask(ctx, server, origin, mdns.TypeNS, false)
			switch {
			case a.problem == "" && len(nsNames(a.rrs, origin)) > 0:
				return nsNames(a.rrs, origin), nil
			case a.problem == ProblemNoData && len(nsNames(a.ns, origin)) > 0:
				return nsNames(a.ns, origin), nil // referral
			case a.problem == ProblemNXDomain,
				a.problem == ProblemNoData && a.authSOA != nil && strings.EqualFold(a.authSOA.Hdr.Name, parent):
				return nil, errNotDelegated
			}
			last = fmt.Sprintf("%s at %s: %s", n, server, a.describe())
			if a.problem == ProblemNoData {
				last = fmt.Sprintf("%s at %s: neither a referral nor an answer", n, server)
			}
		}
	}
	if last == "" {
		last = "no address for the parent's name servers"
	}
	return nil, fmt.Errorf("%s", last)
}

// checkSOA checks that the domain is a zone apex.
func (c *Checker) checkSOA(ctx context.Context, r Result, z Zone) Result {
	r.Check, r.Name = "soa", z.Origin
	want := z.Records[0].SOA
	r.Expected = "a SOA record at " + z.Origin + " (the zone is its own)"
	a := c.ask(ctx, z.Origin, mdns.TypeSOA)
	if a.problem != "" {
		r.Status, r.Found, r.Problem = StatusFail, a.describe(), a.problem
		if a.authSOA != nil && !strings.EqualFold(a.authSOA.Hdr.Name, z.Origin) {
			r.Detail = "the name lies inside zone " + strings.ToLower(a.authSOA.Hdr.Name) + ": no zone of its own"
		}
		return r
	}
	soa := a.rrs[0].(*mdns.SOA)
	r.Found = fmt.Sprintf("%s %s serial %d", strings.ToLower(soa.Ns), strings.ToLower(soa.Mbox), soa.Serial)
	r.Status = StatusOK
	if want != nil && soa.Serial != want.Serial {
		r.Detail = fmt.Sprintf("serial differs from the rendered zone's %d: published data may be older than the inventory (or the primary numbers its own serials)", want.Serial)
	}
	return r
}

// checkMX checks that an MX of the domain points at the node.
func (c *Checker) checkMX(ctx context.Context, r Result, origin string, hosts []string, want []Record) Result {
	r.Check, r.Name = "mx", origin
	var exp []string
	for _, m := range want {
		exp = append(exp, fmt.Sprintf("%d %s", m.Priority, m.Target))
	}
	r.Expected = strings.Join(exp, ", ")
	a := c.ask(ctx, origin, mdns.TypeMX)
	if a.problem != "" {
		r.Status, r.Found, r.Problem = StatusFail, a.describe(), a.problem
		return r
	}
	r.Found = mxList(a.rrs)
	if len(hosts) > 1 {
		return tierMX(r, hosts, a.rrs)
	}
	lowest := uint16(65535)
	var ours *mdns.MX
	for _, rr := range a.rrs {
		m := rr.(*mdns.MX)
		lowest = min(lowest, m.Preference)
		if strings.EqualFold(m.Mx, hosts[0]) {
			ours = m
		}
	}
	switch {
	case ours == nil:
		r.Status = StatusFail
		r.Detail = "no MX points at node.hostname"
	case ours.Preference > lowest:
		r.Status = StatusWarn
		r.Detail = "another host has a lower preference: mail goes there first"
	default:
		r.Status = StatusOK
	}
	return r
}

// tierMX judges the MX records of a tier's domain: every node is an MX,
// all at the same, lowest preference (round robin). A node missing, or a
// host outside the tier at that preference, fails; nodes at unequal
// preferences, or a backup MX outside the tier, warn.
func tierMX(r Result, hosts []string, rrs []mdns.RR) Result {
	lowest := uint16(65535)
	pref := map[string]uint16{}
	for _, rr := range rrs {
		m := rr.(*mdns.MX)
		lowest = min(lowest, m.Preference)
		pref[strings.ToLower(m.Mx)] = m.Preference
	}
	var missing, unequal, outsiders, backups []string
	for _, h := range hosts {
		p, ok := pref[h]
		switch {
		case !ok:
			missing = append(missing, h)
		case p != lowest:
			unequal = append(unequal, fmt.Sprintf("%d %s", p, h))
		}
	}
	for h, p := range pref {
		if !slices.Contains(hosts, h) {
			if p == lowest {
				outsiders = append(outsiders, h)
			} else {
				backups = append(backups, h)
			}
		}
	}
	slices.Sort(outsiders)
	slices.Sort(backups)
	var why []string
	if len(missing) > 0 {
		why = append(why, "no MX points at "+strings.Join(missing, ", "))
	}
	if len(outsiders) > 0 {
		why = append(why, "not a node of the tier, at the lowest preference: "+strings.Join(outsiders, ", "))
	}
	if len(unequal) > 0 {
		why = append(why, "not at the tier's preference (no round robin): "+strings.Join(unequal, ", "))
	}
	if len(backups) > 0 {
		why = append(why, "a backup MX outside the tier: "+strings.Join(backups, ", "))
	}
	switch {
	case len(missing) > 0 || len(outsiders) > 0:
		r.Status = StatusFail
	case len(why) > 0:
		r.Status = StatusWarn
	default:
		r.Status = StatusOK
	}
	r.Detail = strings.Join(why, "; ")
	return r
}

// spfRecords returns the SPF policies among TXT records.
func spfRecords(rrs []mdns.RR) []string {
	var out []string
	for _, rr := range rrs {
		s := strings.Join(rr.(*mdns.TXT).Txt, "")
		l := strings.ToLower(s)
		if l == "v=spf1" || strings.HasPrefix(l, "v=spf1 ") {
			out = append(out, s)
		}
	}
	return out
}

// checkSPF evaluates the domain's SPF policy (RFC 7208, with its lookup
// limits, through the same evaluator milterd uses) for every node address.
func (c *Checker) checkSPF(ctx context.Context, r Result, inv *inventory.Inventory, domain string, addrs []netip.Addr) Result {
	r.Check, r.Name = "spf", domain+"."
	r.Expected = "pass for " + addrList(addrs)
	a := c.ask(ctx, r.Name, mdns.TypeTXT)
	if a.problem != "" && a.problem != ProblemNoData {
		r.Status, r.Found, r.Problem = StatusFail, a.describe(), a.problem
		return r
	}
	recs := spfRecords(a.rrs)
	switch len(recs) {
	case 0:
		r.Status, r.Found, r.Problem = StatusFail, "no SPF record", ProblemNoData
		return r
	case 1:
	default:
		r.Status, r.Found = StatusFail, strings.Join(recs, " | ")
		r.Detail = "several SPF records: permerror for every receiver"
		return r
	}
	if len(addrs) == 0 {
		r.Status, r.Found = StatusWarn, recs[0]
		r.Detail = "node.addresses is empty: nothing to evaluate"
		return r
	}
	res := resolver.NewClient(c.Resolver, c.q.timeout)
	defer res.Close()
	var got []string
	r.Status = StatusOK
	for _, ip := range addrs {
		s := mailauth.CheckSPF(ctx, res, ip, inv.Node.Hostname, "postmaster@"+domain)
		e := ip.String() + " " + string(s.Result)
		if s.Result != spf.Pass {
			r.Status = StatusFail
			if s.Reason != "" {
				e += " (" + s.Reason + ")"
			}
		}
		got = append(got, e)
	}
	r.Found = recs[0] + " => " + strings.Join(got, ", ")
	if r.Status == StatusFail {
		r.Detail = "the policy does not let every node address send for the domain"
	}
	return r
}

// dkimTags parses a DKIM key record as a verifier does (dkim.ParseTags),
// whitespace removed from the values and k= defaulting to rsa. A record a
// verifier would refuse gives an error.
func dkimTags(s string) (map[string]string, error) {
	tags, err := dkim.ParseTags(s)
	if err != nil {
		return nil, err
	}
	for k, v := range tags {
		tags[k] = dkim.StripFWS(v)
	}
	if tags["k"] == "" {
		tags["k"] = "rsa"
	}
	return tags, nil
}

// short abbreviates a long base64 key for the table.
func short(p string) string {
	if len(p) <= 24 {
		return p
	}
	return p[:12] + "…" + p[len(p)-8:]
}

func dkimSummary(s string) string {
	t, err := dkimTags(s)
	if err != nil {
		return "malformed: " + err.Error()
	}
	return "k=" + t["k"] + " p=" + short(t["p"])
}

// checkDKIM checks that selector's TXT record publishes the key on disk.
func (c *Checker) checkDKIM(ctx context.Context, r Result, inv *inventory.Inventory, d *inventory.Domain, s inventory.Selector, zoneTXT map[string]Record) Result {
	r.Check = "dkim:" + s.Selector
	r.Name = dkim.RecordName(s.Selector, d.Name)
	rec, ok := zoneTXT[r.Name]
	a := c.ask(ctx, r.Name, mdns.TypeTXT)
	var found []string
	for _, rr := range a.rrs {
		found = append(found, strings.Join(rr.(*mdns.TXT).Txt, ""))
	}
	var fs []string
	for _, f := range found {
		fs = append(fs, dkimSummary(f))
	}
	r.Found = strings.Join(fs, " | ")
	if a.problem != "" {
		r.Found, r.Problem = a.describe(), a.problem
	}
	if !ok {
		r.Status = StatusFail
		r.Expected = "the key in " + dkim.KeyPath(inv.DKIM.KeyDir, d.Name, s.Selector)
		r.Detail = "no key on disk for this selector: run mailnode dkim keygen, then publish the zone"
		return r
	}
	r.Expected = dkimSummary(rec.Text)
	if a.problem != "" {
		r.Status = StatusFail
		return r
	}
	want, _ := dkimTags(rec.Text) // rendered by mailnode
	match := 0
	for _, f := range found {
		t, err := dkimTags(f)
		if err == nil && t["p"] == want["p"] && t["k"] == want["k"] {
			match++
			if strings.Contains(t["t"], "y") {
				r.Detail = "t=y: the key is in testing mode; receivers may ignore failures"
			}
		}
	}
	switch {
	case match == 0:
		r.Status = StatusFail
		r.Detail = "the published key is not the key on disk: signatures fail"
		for _, f := range found {
			if t, err := dkimTags(f); err != nil {
				r.Detail = "the published record is malformed (" + err.Error() + "): receivers ignore it"
			} else if t["p"] == "" {
				r.Detail = "the published record revokes the key (empty p=)"
			}
		}
	case len(found) > 1:
		r.Status = StatusWarn
		r.Detail = "several TXT records at the selector: receivers may pick another one"
	default:
		r.Status = StatusOK
		if r.Detail != "" {
			r.Status = StatusWarn
		}
	}
	return r
}

// checkDMARC checks that one DMARC record is published and parses.
func (c *Checker) checkDMARC(ctx context.Context, r Result, name string, want Record) Result {
	r.Check, r.Name = "dmarc", name
	r.Expected = want.Text
	a := c.ask(ctx, name, mdns.TypeTXT)
	if a.problem != "" {
		r.Status, r.Found, r.Problem = StatusFail, a.describe(), a.problem
		r.Detail = "no DMARC record"
		return r
	}
	var recs []string
	for _, rr := range a.rrs {
		s := strings.Join(rr.(*mdns.TXT).Txt, "")
		if strings.HasPrefix(s, "v=DMARC1") {
			recs = append(recs, s)
		}
	}
	switch len(recs) {
	case 0:
		r.Status, r.Found, r.Problem = StatusFail, "no record starting with v=DMARC1", ProblemNoData
		return r
	case 1:
	default:
		r.Status, r.Found = StatusFail, strings.Join(recs, " | ")
		r.Detail = "several DMARC records: receivers ignore them all"
		return r
	}
	r.Found = recs[0]
	rec, err := dmarc.Parse(recs[0])
	if err != nil {
		r.Status = StatusFail
		r.Detail = "unparseable: " + err.Error()
		return r
	}
	r.Status = StatusOK
	if rec.Policy == dmarc.PolicyNone {
		r.Status = StatusWarn
		r.Detail = "p=none: receivers only monitor"
	}
	return r
}

// checkSRV checks one RFC 6186 record. SRV records are recommended, not
// required: clients that do not find them fall back to other discovery.
func (c *Checker) checkSRV(ctx context.Context, r Result, want []Record) Result {
	name := want[0].Name
	svc, _, _ := strings.Cut(name, "._tcp.")
	r.Check, r.Name, r.Required = "srv:"+svc+"._tcp", name, false
	var exp []string
	for _, w := range want {
		exp = append(exp, w.Data())
	}
	r.Expected = strings.Join(exp, ", ")
	a := c.ask(ctx, name, mdns.TypeSRV)
	if a.problem != "" {
		r.Status, r.Found, r.Problem = StatusWarn, a.describe(), a.problem
		return r
	}
	var found, missing []string
	for _, rr := range a.rrs {
		s := rr.(*mdns.SRV)
		found = append(found, fmt.Sprintf("%d %d %d %s", s.Priority, s.Weight, s.Port, strings.ToLower(s.Target)))
	}
	for _, w := range want {
		if !slices.ContainsFunc(a.rrs, func(rr mdns.RR) bool {
			s := rr.(*mdns.SRV)
			return strings.EqualFold(s.Target, w.Target) && s.Port == w.Port
		}) {
			missing = append(missing, w.Target)
		}
	}
	r.Found = strings.Join(found, ", ")
	r.Status = StatusOK
	switch {
	case len(missing) == len(want):
		r.Status = StatusWarn
		r.Detail = "no SRV record points at the node on the expected port"
	case len(missing) > 0:
		r.Status = StatusWarn
		r.Detail = "no SRV record points at " + strings.Join(missing, ", ") + " on the expected port"
	}
	return r
}

// DKIM checks one selector of local domain d alone: its TXT record, asked
// through the resolver, carries the key on disk. `mailnode dkim rotate`
// uses it before retiring a selector.
func (c *Checker) DKIM(ctx context.Context, inv *inventory.Inventory, d *inventory.Domain, s inventory.Selector) Result {
	c.init()
	base := Result{Domain: d.Name, Required: true}
	z, err := ZoneFor(inv, d)
	if err != nil {
		base.Check, base.Status, base.Found = "dkim:"+s.Selector, StatusFail, err.Error()
		return base
	}
	txt := map[string]Record{}
	for _, rec := range z.Records {
		if rec.Type == TypeTXT {
			txt[rec.Name] = rec
		}
	}
	return c.checkDKIM(ctx, base, inv, d, s, txt)
}

// TXT returns the TXT records of name (each record's strings joined), or
// the problem that kept the resolver from giving any (NXDOMAIN, NODATA,
// SERVFAIL, REFUSED, timeout, unreachable).
func (c *Checker) TXT(ctx context.Context, name string) ([]string, string) {
	c.init()
	a := c.ask(ctx, name, mdns.TypeTXT)
	var out []string
	for _, rr := range a.rrs {
		out = append(out, strings.Join(rr.(*mdns.TXT).Txt, ""))
	}
	return out, a.problem
}

// DKIMKeyOf returns the p= value of a DKIM key record.
func DKIMKeyOf(record string) string {
	t, _ := dkimTags(record)
	return t["p"]
}
