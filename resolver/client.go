package resolver

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
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
//
// Only an answer that matches the question is taken (see Exchange); any
// other datagram is dropped and the Client waits on until the timeout.
type Client struct {
	Addr    string        // host:port
	Timeout time.Duration // per question; DefaultTimeout when 0

	mu     sync.Mutex
	cache  map[cacheKey]cacheEntry
	conns  chan *udpConn
	closed bool
	now    func() time.Time
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

// Close closes the idle sockets and makes every later question use a
// socket of its own that it closes when it ends; a question in flight
// closes its socket when it ends. The cache stays, and questions are still
// answered: a transaction that started before a reload and holds the old
// Client finishes normally, and nothing is left open after it.
func (r *Client) Close() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.closed = true
	if r.conns == nil {
		return nil
	}
	for {
		select {
		case c := <-r.conns:
			c.c.Close()
		default:
			return nil
		}
	}
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

// getConn returns an idle UDP socket to the server, or a new one.
func (r *Client) getConn(ctx context.Context) (*udpConn, error) {
	r.mu.Lock()
	if r.conns == nil {
		r.conns = make(chan *udpConn, maxIdleConns)
	}
	select {
	case c := <-r.conns:
		r.mu.Unlock()
		return c, nil
	default:
	}
	r.mu.Unlock()
	return dialUDP(ctx, r.Addr)
}

// putConn keeps a socket that answered cleanly for the next question, or
// closes it when the Client is closed or has enough idle ones.
func (r *Client) putConn(c *udpConn) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if !r.closed {
		select {
		case r.conns <- c:
			return
		default:
		}
	}
	c.c.Close()
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
	if p := cacheOnly(ctx); p != nil {
		return nil, notCached(p, name)
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
			if b[3]&0xf == dns.RcodeNameError && b[2]&0x02 == 0 {
				// The usual DNSBL answer, "not listed": the header says it all.
				in.Rcode = dns.RcodeNameError
			} else {
				err = in.Unpack(b)
			}
			// Only now: b is the socket's buffer, the next question's.
			r.putConn(conn)
		}
	}
	if err == nil && in.Truncated {
		in, err = exchangeTCP(ctx, r.Addr, m, deadline)
	}
	if err != nil {
		return nil, dnsError(ctx, err, name, r.Addr)
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

// dnsError turns a failed exchange into the temporary *net.DNSError the
// callers inspect.
func dnsError(ctx context.Context, err error, name, server string) *net.DNSError {
	var ne net.Error
	timeout := errors.As(err, &ne) && ne.Timeout() || ctx.Err() != nil
	return &net.DNSError{Err: err.Error(), Name: name, Server: server, IsTimeout: timeout, IsTemporary: true}
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
		ask := func(t uint16) {
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
		}
		if IsCacheOnly(ctx) {
			ask(t) // from the cache: no network, no goroutine
		} else {
			go ask(t)
		}
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
	return ips, ipErr(ips, errs)
}

// ipErr is LookupIPAddr's error: none when some address was found, else
// a temporary failure over not found.
func ipErr(ips []net.IPAddr, errs []error) error {
	if len(ips) > 0 {
		return nil
	}
	for _, err := range errs {
		if IsTemporary(err) {
			return err
		}
	}
	return errs[0]
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

// udpConn is a connected UDP socket to one server, reused from question to
// question, with its buffers. Being connected, it receives datagrams from
// that server's address and port only: the kernel drops the others.
type udpConn struct {
	c   *net.UDPConn
	raw syscall.RawConn
	dl  time.Time // the read deadline last set
	out []byte    // the packed question
	in  []byte    // the answer

	// the raw callback's state
	q   []byte // still to send; nil once sent
	qs  []byte // the question section of the packed question
	id  uint16
	n   int
	err error
	f   func(fd uintptr) bool
}

// dialUDP returns a new socket connected to addr.
func dialUDP(ctx context.Context, addr string) (*udpConn, error) {
	var d net.Dialer
	c, err := d.DialContext(ctx, "udp", addr)
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

// ask sends m and reads the answer to it by deadline. The question is
// written from inside the raw read callback, after the runtime's poller is
// armed, so that the wait for the answer needs no read that could only say
// EAGAIN; the read deadline is only moved when it is more than a quarter of
// the timeout stale (a question then gets at least three quarters of it).
// The answer returned is the socket's buffer, good until the next ask.
func (c *udpConn) ask(m *dns.Msg, deadline time.Time, timeout time.Duration) ([]byte, error) {
	q, err := m.PackBuffer(c.out[:cap(c.out)])
	if err != nil {
		return nil, err
	}
	c.out = q[:0]
	qs, ok := questionSection(q)
	if !ok {
		return nil, errors.New("resolver: a message with one question is needed")
	}
	if c.dl.After(deadline) || c.dl.Before(deadline.Add(-timeout/4)) {
		c.dl = deadline
		c.c.SetReadDeadline(deadline)
	}
	c.q, c.qs, c.id, c.n, c.err = q, qs, m.Id, 0, nil
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
		// An answer to an earlier question that timed out, a forgery, or
		// not an answer at all: wait on for ours.
		if !answers(c.in[:n], c.id, c.qs) {
			continue
		}
		c.n = n
		return true
	}
}

// questionSection returns the question of a packed message that has
// exactly one: its name in wire form (never compressed, being the first
// name of the message), type and class.
func questionSection(m []byte) ([]byte, bool) {
	if len(m) < 12 || binary.BigEndian.Uint16(m[4:]) != 1 {
		return nil, false
	}
	i := 12
	for i < len(m) && m[i] != 0 {
		if m[i]&0xc0 != 0 { // a pointer or an unknown label type
			return nil, false
		}
		i += 1 + int(m[i])
	}
	i += 1 + 4
	if i > len(m) {
		return nil, false
	}
	return m[12:i], true
}

// answers reports whether the packed message b is a response with the ID
// id to the question qs (from questionSection): one question, the same
// name (ASCII case aside), type and class.
func answers(b []byte, id uint16, qs []byte) bool {
	if len(b) < 12+len(qs) || binary.BigEndian.Uint16(b) != id || b[2]&0x80 == 0 || binary.BigEndian.Uint16(b[4:]) != 1 {
		return false
	}
	a := b[12 : 12+len(qs)]
	n := len(qs) - 4
	for i := range n {
		// Label lengths (0..63) are not letters, so folding every byte
		// compares them exactly.
		if x, y := a[i], qs[i]; x != y && lower(x) != lower(y) {
			return false
		}
	}
	return string(a[n:]) == string(qs[n:])
}

func lower(c byte) byte {
	if 'A' <= c && c <= 'Z' {
		return c + 'a' - 'A'
	}
	return c
}

// exchangeTCP asks m over TCP (after a truncated UDP answer), reading
// answers until one matches m or the deadline passes.
func exchangeTCP(ctx context.Context, server string, m *dns.Msg, deadline time.Time) (*dns.Msg, error) {
	q, err := m.Pack()
	if err != nil {
		return nil, err
	}
	qs, ok := questionSection(q)
	if !ok {
		return nil, errors.New("resolver: a message with one question is needed")
	}
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	var d net.Dialer
	c, err := d.DialContext(ctx, "tcp", server)
	if err != nil {
		return nil, err
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	c.SetDeadline(deadline)
	if _, err := c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(q))), q...)); err != nil {
		return nil, err
	}
	for {
		var l [2]byte
		if _, err := io.ReadFull(c, l[:]); err != nil {
			return nil, err
		}
		buf := make([]byte, binary.BigEndian.Uint16(l[:]))
		if _, err := io.ReadFull(c, buf); err != nil {
			return nil, err
		}
		if !answers(buf, m.Id, qs) {
			continue
		}
		in := new(dns.Msg)
		if err := in.Unpack(buf); err != nil {
			return nil, err
		}
		return in, nil
	}
}

// Exchange sends m, which must hold one question, to server (host:port)
// and returns the answer as the server gave it, whatever its rcode: over
// UDP, and over TCP when the UDP answer is truncated; timeout bounds the
// whole. It is the lower level under Client for callers that choose the
// server and the flags themselves (`mailnode dns check` asks parent zones'
// servers without recursion, and reads rcodes and authority sections).
//
// An answer is accepted only when it comes from the address asked (the
// UDP socket is connected to it) and carries m's ID, and its question has
// the name (case aside), type and class of m's: anything else is dropped
// and Exchange waits on. Errors are temporary *net.DNSError (IsTimeout
// when no answer came).
func Exchange(ctx context.Context, server string, m *dns.Msg, timeout time.Duration) (*dns.Msg, error) {
	name := ""
	if len(m.Question) > 0 {
		name = m.Question[0].Name
	}
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	deadline := time.Now().Add(timeout)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	in, err := exchange(ctx, server, m, deadline, timeout)
	if err != nil {
		return nil, dnsError(ctx, err, name, server)
	}
	return in, nil
}

func exchange(ctx context.Context, server string, m *dns.Msg, deadline time.Time, timeout time.Duration) (*dns.Msg, error) {
	conn, err := dialUDP(ctx, server)
	if err != nil {
		return nil, err
	}
	defer conn.c.Close()
	conn.dl = deadline
	conn.c.SetReadDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { conn.c.SetReadDeadline(time.Now()) })
	defer stop()
	b, err := conn.ask(m, deadline, timeout)
	if err != nil {
		return nil, err
	}
	in := new(dns.Msg)
	if err := in.Unpack(b); err != nil {
		return nil, err
	}
	if in.Truncated {
		return exchangeTCP(ctx, server, m, deadline)
	}
	return in, nil
}
