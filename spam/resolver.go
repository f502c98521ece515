package spam

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"
)

// DefaultDNSTimeout bounds one DNS question (UDP, and TCP after a truncated
// answer) when a Resolver has no Timeout.
const DefaultDNSTimeout = 5 * time.Second

// Resolver asks exactly one DNS server, the inventory's node.resolver, and
// nothing else: no /etc/hosts, no search list, no other server. It
// implements the DNS seam of blitiri.com.ar/go/spf (spf.DNSResolver) and
// what DNSBL and DMARC need.
//
// Errors are *net.DNSError, the form the SPF and DMARC libraries inspect: a
// name that does not exist or has no record of the type asked is IsNotFound
// (a permanent answer); a timeout, SERVFAIL, REFUSED or a server that cannot
// be reached is IsTemporary (temperror).
//
// Answers are cached for their TTL (at most MaxCacheTTL; names that do not
// exist or have no such record for NegativeTTL; temporary failures never),
// and UDP sockets are reused, so that the same sender domain or client seen
// again costs no round trip: node.resolver (unbound) caches too, but every
// question to it is a few system calls on both sides.
type Resolver struct {
	Addr    string        // host:port
	Timeout time.Duration // per question; DefaultDNSTimeout when 0

	mu    sync.Mutex
	cache map[cacheKey]cacheEntry
	conns chan *dns.Conn
	now   func() time.Time
}

// Cache bounds.
const (
	MaxCacheTTL     = time.Hour
	NegativeTTL     = time.Minute
	MaxCacheEntries = 50000
	maxIdleConns    = 16
)

type cacheKey struct {
	name  string
	qtype uint16
}

type cacheEntry struct {
	rrs     []dns.RR // nil: the name or type does not exist
	expires time.Time
}

// NewResolver returns a Resolver for addr (host:port).
func NewResolver(addr string, timeout time.Duration) *Resolver {
	return &Resolver{Addr: addr, Timeout: timeout}
}

func (r *Resolver) clock() time.Time {
	if r.now != nil {
		return r.now()
	}
	return time.Now()
}

func (r *Resolver) cached(k cacheKey) (cacheEntry, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.cache[k]
	if ok && r.clock().After(e.expires) {
		delete(r.cache, k)
		return e, false
	}
	return e, ok
}

func (r *Resolver) store(k cacheKey, rrs []dns.RR, ttl time.Duration) {
	if ttl <= 0 {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.cache == nil {
		r.cache = map[cacheKey]cacheEntry{}
	}
	if len(r.cache) >= MaxCacheEntries {
		// Full: forget a tenth, whatever the map's order gives.
		n := MaxCacheEntries / 10
		for k := range r.cache {
			delete(r.cache, k)
			if n--; n == 0 {
				break
			}
		}
	}
	r.cache[k] = cacheEntry{rrs: rrs, expires: r.clock().Add(ttl)}
}

// getConn returns an idle UDP socket to the server, or a new one.
func (r *Resolver) getConn(ctx context.Context) (*dns.Conn, error) {
	r.mu.Lock()
	if r.conns == nil {
		r.conns = make(chan *dns.Conn, maxIdleConns)
	}
	conns := r.conns
	r.mu.Unlock()
	select {
	case c := <-conns:
		return c, nil
	default:
	}
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", r.Addr)
	if err != nil {
		return nil, err
	}
	return &dns.Conn{Conn: c, UDPSize: 1232}, nil
}

// putConn keeps a socket that answered cleanly for the next question.
func (r *Resolver) putConn(c *dns.Conn) {
	select {
	case r.conns <- c:
	default:
		c.Close()
	}
}

func (r *Resolver) timeout() time.Duration {
	if r.Timeout > 0 {
		return r.Timeout
	}
	return DefaultDNSTimeout
}

// exchange asks one question and returns the answer records of type qtype.
func (r *Resolver) exchange(ctx context.Context, name string, qtype uint16) ([]dns.RR, error) {
	name = dns.Fqdn(name)
	if _, ok := dns.IsDomainName(name); !ok || len(name) > 254 {
		return nil, &net.DNSError{Err: "invalid domain name", Name: name, IsNotFound: true}
	}
	k := cacheKey{strings.ToLower(name), qtype}
	if e, ok := r.cached(k); ok {
		if e.rrs == nil {
			return nil, &net.DNSError{Err: "no such host", Name: name, Server: r.Addr, IsNotFound: true}
		}
		return e.rrs, nil
	}
	ctx, cancel := context.WithTimeout(ctx, r.timeout())
	defer cancel()
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.RecursionDesired = true
	m.SetEdns0(1232, false)
	c := dns.Client{Net: "udp", UDPSize: 1232, Timeout: r.timeout()}
	var in *dns.Msg
	conn, err := r.getConn(ctx)
	if err == nil {
		in, _, err = c.ExchangeWithConnContext(ctx, m, conn)
		if err != nil {
			conn.Close() // a late answer must not meet the next question
		} else {
			r.putConn(conn)
		}
	}
	if err == nil && in.Truncated {
		c.Net = "tcp"
		in, _, err = c.ExchangeContext(ctx, m, r.Addr)
	}
	if err != nil {
		var ne net.Error
		timeout := errors.As(err, &ne) && ne.Timeout() || ctx.Err() != nil
		return nil, &net.DNSError{Err: err.Error(), Name: name, Server: r.Addr, IsTimeout: timeout, IsTemporary: true}
	}
	switch in.Rcode {
	case dns.RcodeSuccess:
	case dns.RcodeNameError:
		r.store(k, nil, NegativeTTL)
		return nil, &net.DNSError{Err: "no such host", Name: name, Server: r.Addr, IsNotFound: true}
	default:
		return nil, &net.DNSError{Err: "server answered " + dns.RcodeToString[in.Rcode], Name: name, Server: r.Addr, IsTemporary: true}
	}
	var out []dns.RR
	ttl := MaxCacheTTL
	for _, rr := range in.Answer {
		if rr.Header().Rrtype == qtype {
			out = append(out, rr)
			ttl = min(ttl, time.Duration(rr.Header().Ttl)*time.Second)
		}
	}
	if len(out) == 0 {
		r.store(k, nil, NegativeTTL)
		return nil, &net.DNSError{Err: "no such host", Name: name, Server: r.Addr, IsNotFound: true}
	}
	r.store(k, out, ttl)
	return out, nil
}

// LookupTXT returns the TXT records of name, each record's strings joined.
func (r *Resolver) LookupTXT(ctx context.Context, name string) ([]string, error) {
	rrs, err := r.exchange(ctx, name, dns.TypeTXT)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(rrs))
	for _, rr := range rrs {
		out = append(out, strings.Join(rr.(*dns.TXT).Txt, ""))
	}
	return out, nil
}

// LookupMX returns the MX records of name.
func (r *Resolver) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
	rrs, err := r.exchange(ctx, name, dns.TypeMX)
	if err != nil {
		return nil, err
	}
	out := make([]*net.MX, 0, len(rrs))
	for _, rr := range rrs {
		mx := rr.(*dns.MX)
		out = append(out, &net.MX{Host: mx.Mx, Pref: mx.Preference})
	}
	return out, nil
}

// LookupIPAddr returns the A and AAAA records of host. It fails only when
// both questions fail; a temporary failure of either wins over not found.
func (r *Resolver) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
	type answer struct {
		ips []net.IPAddr
		err error
	}
	ch := make(chan answer, 2)
	for _, t := range []uint16{dns.TypeA, dns.TypeAAAA} {
		go func(t uint16) {
			rrs, err := r.exchange(ctx, host, t)
			var a answer
			a.err = err
			for _, rr := range rrs {
				switch v := rr.(type) {
				case *dns.A:
					a.ips = append(a.ips, net.IPAddr{IP: v.A})
				case *dns.AAAA:
					a.ips = append(a.ips, net.IPAddr{IP: v.AAAA})
				}
			}
			ch <- a
		}(t)
	}
	var ips []net.IPAddr
	var errs []error
	for range 2 {
		a := <-ch
		ips = append(ips, a.ips...)
		if a.err != nil {
			errs = append(errs, a.err)
		}
	}
	if len(ips) > 0 {
		return ips, nil
	}
	for _, err := range errs {
		if de := err.(*net.DNSError); de.IsTemporary {
			return nil, err
		}
	}
	return nil, errs[0]
}

// LookupA returns the IPv4 addresses of name (DNSBL answers).
func (r *Resolver) LookupA(ctx context.Context, name string) ([]netip.Addr, error) {
	rrs, err := r.exchange(ctx, name, dns.TypeA)
	if err != nil {
		return nil, err
	}
	out := make([]netip.Addr, 0, len(rrs))
	for _, rr := range rrs {
		if a, ok := netip.AddrFromSlice(rr.(*dns.A).A.To4()); ok {
			out = append(out, a)
		}
	}
	return out, nil
}

// LookupAddr returns the PTR names of an IP address.
func (r *Resolver) LookupAddr(ctx context.Context, addr string) ([]string, error) {
	arpa, err := dns.ReverseAddr(addr)
	if err != nil {
		return nil, &net.DNSError{Err: "unrecognized address", Name: addr}
	}
	rrs, err := r.exchange(ctx, arpa, dns.TypePTR)
	if err != nil {
		return nil, err
	}
	out := make([]string, 0, len(rrs))
	for _, rr := range rrs {
		out = append(out, rr.(*dns.PTR).Ptr)
	}
	return out, nil
}

// IsTemporary reports whether err is a DNS failure that may go away
// (temperror), as opposed to a permanent answer.
func IsTemporary(err error) bool {
	var de *net.DNSError
	if errors.As(err, &de) {
		return de.IsTemporary || de.IsTimeout
	}
	return err != nil
}
