// Package dnstest is an in-process authoritative DNS server for tests of
// `mailnode dns check` and `mailnode dkim rotate`: it serves zones given in
// master file syntax (e.g. the dns/<domain>.zone files render-config wrote)
// on a loopback port, over UDP and TCP, and answers like a real server:
// NXDOMAIN or NODATA with the enclosing zone's SOA in the authority section,
// CNAME chains followed inside its data, AA set. Single questions can be
// made to fail with any rcode (SERVFAIL) or to go unanswered (a timeout).
//
// It is both the "resolver" a check asks (it sets RA and answers with the
// data) and, when a test points the check's direct parent queries at its
// port, the parent zone's server.
package dnstest

import (
	"errors"
	"fmt"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Server is the test server. Its methods are safe for concurrent use.
type Server struct {
	Addr    string // host:port it serves on, UDP and TCP
	Queries atomic.Int64

	mu   sync.Mutex
	rrs  map[string][]dns.RR // lower-case FQDN -> records
	soa  map[string]*dns.SOA // zone apex -> its SOA
	fail map[key]int
	drop map[key]bool
	udp  *dns.Server
	tcp  *dns.Server
}

type key struct {
	name  string
	qtype uint16 // 0: every type
}

// Start serves zone (master file text with absolute names; may be empty)
// on a free 127.0.0.1 port until the test ends.
func Start(t testing.TB, zone string) *Server {
	t.Helper()
	s, err := New("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(s.Close)
	if err := s.Add(zone); err != nil {
		t.Fatal(err)
	}
	return s
}

// New starts an empty server on addr ("127.0.0.1:0" for a free port).
func New(addr string) (*Server, error) {
	s := &Server{rrs: map[string][]dns.RR{}, soa: map[string]*dns.SOA{}, fail: map[key]int{}, drop: map[key]bool{}}
	pc, ln, err := listenBoth(addr)
	if err != nil {
		return nil, err
	}
	s.Addr = pc.LocalAddr().String()
	started := make(chan struct{}, 2)
	notify := func() { started <- struct{}{} }
	s.udp = &dns.Server{PacketConn: pc, Handler: s, NotifyStartedFunc: notify}
	s.tcp = &dns.Server{Listener: ln, Handler: s, NotifyStartedFunc: notify}
	go s.udp.ActivateAndServe()
	go s.tcp.ActivateAndServe()
	for range 2 {
		select {
		case <-started:
		case <-time.After(10 * time.Second):
			s.Close()
			return nil, fmt.Errorf("dnstest: server did not start")
		}
	}
	return s, nil
}

// listenBoth opens UDP and TCP on one address. With port 0 the system
// picks the UDP port, which another process may hold on TCP (tests of
// other packages run beside this one): then it tries another port.
func listenBoth(addr string) (net.PacketConn, net.Listener, error) {
	for try := 0; ; try++ {
		pc, err := net.ListenPacket("udp", addr)
		if err != nil {
			return nil, nil, err
		}
		ln, err := net.Listen("tcp", pc.LocalAddr().String())
		if err == nil {
			return pc, ln, nil
		}
		pc.Close()
		if _, port, _ := net.SplitHostPort(addr); port != "0" || try == 20 || !errors.Is(err, syscall.EADDRINUSE) {
			return nil, nil, err
		}
	}
}

// Port is the port of Addr.
func (s *Server) Port() string {
	_, p, _ := net.SplitHostPort(s.Addr)
	return p
}

// Close stops the server.
func (s *Server) Close() {
	if s.udp != nil {
		s.udp.Shutdown()
	}
	if s.tcp != nil {
		s.tcp.Shutdown()
	}
}

// Add adds the records of zone, master file text (with $ORIGIN/$TTL if
// wanted; names without origin are taken as absolute). A SOA record makes
// its owner a zone apex of the server.
func (s *Server) Add(zone string) error {
	zp := dns.NewZoneParser(strings.NewReader(zone), ".", "dnstest")
	zp.SetDefaultTTL(3600)
	s.mu.Lock()
	defer s.mu.Unlock()
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		name := strings.ToLower(rr.Header().Name)
		if slices.ContainsFunc(s.rrs[name], func(x dns.RR) bool { return dns.IsDuplicate(x, rr) }) {
			continue // an RRset is a set
		}
		s.rrs[name] = append(s.rrs[name], rr)
		if soa, ok := rr.(*dns.SOA); ok {
			s.soa[name] = soa
		}
	}
	return zp.Err()
}

// ReplaceZones publishes new versions of the zones in text: every record
// at or below the apex of each SOA in text is dropped first, then text is
// added, as when a primary loads a changed zone file.
func (s *Server) ReplaceZones(text string) error {
	zp := dns.NewZoneParser(strings.NewReader(text), ".", "dnstest")
	var apexes []string
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		if rr.Header().Rrtype == dns.TypeSOA {
			apexes = append(apexes, strings.ToLower(rr.Header().Name))
		}
	}
	if err := zp.Err(); err != nil {
		return err
	}
	s.mu.Lock()
	for name := range s.rrs {
		for _, apex := range apexes {
			if name == apex || strings.HasSuffix(name, "."+apex) {
				delete(s.rrs, name)
			}
		}
	}
	s.mu.Unlock()
	return s.Add(text)
}

// Remove deletes the records of name with type qtype (dns.TypeANY: all of
// them). Removing a SOA does not end the zone.
func (s *Server) Remove(name string, qtype uint16) {
	name = strings.ToLower(dns.Fqdn(name))
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rrs[name] = slices.DeleteFunc(s.rrs[name], func(rr dns.RR) bool {
		return qtype == dns.TypeANY || rr.Header().Rrtype == qtype
	})
	if len(s.rrs[name]) == 0 {
		delete(s.rrs, name)
	}
}

// Replace removes the records of name with the type of the first of rrs
// (master file lines) and adds rrs.
func (s *Server) Replace(name string, rrs ...string) error {
	if len(rrs) == 0 {
		return fmt.Errorf("dnstest: Replace %s without records", name)
	}
	rr, err := dns.NewRR(rrs[0])
	if err != nil {
		return err
	}
	s.Remove(name, rr.Header().Rrtype)
	return s.Add(strings.Join(rrs, "\n"))
}

// Fail makes questions for name and qtype (0: any type) answer rcode,
// e.g. dns.RcodeServerFailure.
func (s *Server) Fail(name string, qtype uint16, rcode int) {
	s.mu.Lock()
	s.fail[key{strings.ToLower(dns.Fqdn(name)), qtype}] = rcode
	s.mu.Unlock()
}

// Drop makes questions for name and qtype (0: any type) go unanswered: the
// client times out.
func (s *Server) Drop(name string, qtype uint16) {
	s.mu.Lock()
	s.drop[key{strings.ToLower(dns.Fqdn(name)), qtype}] = true
	s.mu.Unlock()
}

// ServeDNS implements dns.Handler.
func (s *Server) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	s.Queries.Add(1)
	m := new(dns.Msg)
	m.SetReply(r)
	m.RecursionAvailable = true
	if len(r.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		w.WriteMsg(m)
		return
	}
	q := r.Question[0]
	if !s.answer(m, q) {
		return // dropped
	}
	if r.IsEdns0() != nil {
		m.SetEdns0(4096, false)
	}
	if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
		size := dns.MinMsgSize
		if o := r.IsEdns0(); o != nil {
			size = int(o.UDPSize())
		}
		m.Truncate(size)
	}
	w.WriteMsg(m)
}

// answer fills m; false means: do not answer at all.
func (s *Server) answer(m *dns.Msg, q dns.Question) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	name := strings.ToLower(q.Name)
	if s.drop[key{name, 0}] || s.drop[key{name, q.Qtype}] {
		return false
	}
	if rc, ok := s.fail[key{name, q.Qtype}]; ok {
		m.Rcode = rc
		return true
	}
	if rc, ok := s.fail[key{name, 0}]; ok {
		m.Rcode = rc
		return true
	}
	zone := s.zoneOf(name)
	if zone == "" {
		m.Rcode = dns.RcodeRefused
		return true
	}
	m.Authoritative = true
	for range 8 { // CNAME chain, bounded
		rrs := s.rrs[name]
		var cname *dns.CNAME
		found := false
		for _, rr := range rrs {
			switch {
			case rr.Header().Rrtype == q.Qtype || q.Qtype == dns.TypeANY:
				m.Answer = append(m.Answer, dns.Copy(rr))
				found = true
			case rr.Header().Rrtype == dns.TypeCNAME:
				cname = rr.(*dns.CNAME)
			}
		}
		if found {
			return true
		}
		if cname != nil && q.Qtype != dns.TypeCNAME {
			m.Answer = append(m.Answer, dns.Copy(cname))
			name = strings.ToLower(cname.Target)
			if s.zoneOf(name) == "" {
				return true // the chain leaves our data
			}
			continue
		}
		if !s.exists(name) {
			m.Rcode = dns.RcodeNameError
		}
		if soa := s.soa[s.zoneOf(name)]; soa != nil {
			m.Ns = append(m.Ns, dns.Copy(soa))
		}
		return true
	}
	m.Rcode = dns.RcodeServerFailure
	return true
}

// zoneOf returns the closest enclosing zone apex of name, "" if none.
func (s *Server) zoneOf(name string) string {
	for n := name; ; {
		if _, ok := s.soa[n]; ok {
			return n
		}
		i := strings.IndexByte(n, '.')
		if n == "." || i < 0 || i == len(n)-1 {
			if _, ok := s.soa["."]; ok {
				return "."
			}
			return ""
		}
		n = n[i+1:]
	}
}

// exists reports whether name owns records or is an empty non-terminal.
func (s *Server) exists(name string) bool {
	if len(s.rrs[name]) > 0 {
		return true
	}
	suffix := "." + name
	for n, rrs := range s.rrs {
		if len(rrs) > 0 && strings.HasSuffix(n, suffix) {
			return true
		}
	}
	return false
}
