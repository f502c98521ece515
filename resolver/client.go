package resolver

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/miekg/dns"
)

// DefaultTimeout bounds one DNS question (UDP, and TCP after a truncated
// answer) when a Client has no Timeout.
const DefaultTimeout = 5 * time.Second

// Client asks exactly one DNS server, the inventory's node.resolver, and
// nothing else: no /etc/hosts, no search list, no other server. It
// implements Resolver.
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
type Client struct {
	Addr    string        // host:port
	Timeout time.Duration // per question; DefaultTimeout when 0

	mu    sync.Mutex
	cache map[cacheKey]cacheEntry
	conns chan *udpConn
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

// NewClient returns a Client for addr (host:port).
func NewClient(addr string, timeout time.Duration) *Client {
	return &Client{Addr: addr, Timeout: timeout}
}

func (r *Client) clock() time.Time {
	if r.now != nil {
		return r.now()
	}
	return time.Now()
}

func (r *Client) cached(k cacheKey) (cacheEntry, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	e, ok := r.cache[k]
	if ok && r.clock().After(e.expires) {
		delete(r.cache, k)
		return e, false
	}
	return e, ok
}

func (r *Client) store(k cacheKey, rrs []dns.RR, ttl time.Duration) {
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

// udpConn is a connected UDP socket to the server, reused from question to
// question, with its buffers.
type udpConn struct {
	c   *net.UDPConn
	raw syscall.RawConn
	dl  time.Time // the read deadline last set
	out []byte    // the packed question
	in  []byte    // the answer

	// the raw callback's state
	q   []byte // still to send; nil once sent
	id  uint16
	n   int
	err error
	f   func(fd uintptr) bool
}

// getConn returns an idle UDP socket to the server, or a new one.
func (r *Client) getConn(ctx context.Context) (*udpConn, error) {
	r.mu.Lock()
	if r.conns == nil {
		r.conns = make(chan *udpConn, maxIdleConns)
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
	uc := &udpConn{c: c.(*net.UDPConn), out: make([]byte, 0, 512), in: make([]byte, 4096)}
	if uc.raw, err = uc.c.SyscallConn(); err != nil {
		c.Close()
		return nil, err
	}
	uc.f = uc.step
	return uc, nil
}

// putConn keeps a socket that answered cleanly for the next question.
func (r *Client) putConn(c *udpConn) {
	select {
	case r.conns <- c:
	default:
		c.c.Close()
	}
}

// ask sends m and reads the answer with the same ID by deadline. The
// question is written from inside the raw read callback, after the
// runtime's poller is armed, so that the wait for the answer needs no read
// that could only say EAGAIN; the read deadline is only moved when it is
// more than a quarter of the timeout stale (a question then gets at least
// three quarters of it).
func (c *udpConn) ask(m *dns.Msg, deadline time.Time, timeout time.Duration) ([]byte, error) {
	q, err := m.PackBuffer(c.out[:cap(c.out)])
	if err != nil {
		return nil, err
	}
	c.out = q[:0]
	if c.dl.After(deadline) || c.dl.Before(deadline.Add(-timeout/4)) {
		c.dl = deadline
		c.c.SetReadDeadline(deadline)
	}
	c.q, c.id, c.n, c.err = q, m.Id, 0, nil
	if err := c.raw.Read(c.f); err != nil {
		return nil, err
	}
	if c.err != nil {
		return nil, c.err
	}
	return c.in[:c.n], nil
}

// step is the raw read callback of ask.
func (c *udpConn) step(fd uintptr) bool {
	if c.q != nil {
		_, err := syscall.Write(int(fd), c.q)
		if err == syscall.EINTR {
			_, err = syscall.Write(int(fd), c.q)
		}
		c.q = nil
		if err != nil {
			c.err = os.NewSyscallError("write", err)
			return true
		}
		return false
	}
	for {
		n, err := syscall.Read(int(fd), c.in)
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return false
		case err != nil:
			c.err = os.NewSyscallError("read", err) // e.g. ECONNREFUSED: nothing listens
			return true
		}
		// An answer to an earlier question that timed out, or not an
		// answer at all: wait on for ours.
		if n < 12 || binary.BigEndian.Uint16(c.in) != c.id || c.in[2]&0x80 == 0 {
			continue
		}
		c.n = n
		return true
	}
}

func (r *Client) timeout() time.Duration {
	if r.Timeout > 0 {
		return r.Timeout
	}
	return DefaultTimeout
}

// exchange asks one question and returns the answer records of type qtype.
func (r *Client) exchange(ctx context.Context, name string, qtype uint16) ([]dns.RR, error) {
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
	timeout := r.timeout()
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	m.RecursionDesired = true
	m.SetEdns0(1232, false)
	in := new(dns.Msg)
	conn, err := r.getConn(ctx)
	if err == nil {
		var b []byte
		if b, err = conn.ask(m, deadline, timeout); err != nil {
			conn.c.Close() // a late answer must not meet the next question
		} else {
			r.putConn(conn)
			if b[3]&0xf == dns.RcodeNameError && b[2]&0x02 == 0 {
				// The usual DNSBL answer, "not listed": the header says it all.
				in.Rcode = dns.RcodeNameError
			} else {
				err = in.Unpack(b)
			}
		}
	}
	if err == nil && in.Truncated {
		ctx, cancel := context.WithDeadline(ctx, deadline)
		defer cancel()
		c := dns.Client{Net: "tcp", Timeout: timeout}
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
func (r *Client) LookupTXT(ctx context.Context, name string) ([]string, error) {
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
func (r *Client) LookupMX(ctx context.Context, name string) ([]*net.MX, error) {
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
func (r *Client) LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error) {
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
func (r *Client) LookupA(ctx context.Context, name string) ([]netip.Addr, error) {
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
func (r *Client) LookupAddr(ctx context.Context, addr string) ([]string, error) {
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
