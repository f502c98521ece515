// Package spamtest holds test helpers for the spam gate: an in-process DNS
// server that serves test zones on loopback, and starters for the real
// rspamd and spamd (Debian packages) in a private directory, meant to run
// inside a network namespace with only loopback up (see Main), so that
// nothing a test starts can reach off the machine.
package spamtest

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// DNS is a small authoritative DNS server for tests. It answers every
// question from the records it holds: NXDOMAIN for a name it does not
// know, NOERROR without answers (NODATA) for a known name without records
// of the type asked. Names can be made to fail (SERVFAIL) or to go
// unanswered (a timeout for the client).
type DNS struct {
	Addr    string // 127.0.0.1:port, UDP and TCP
	Queries atomic.Int64

	mu    sync.Mutex
	rrs   map[string][]dns.RR // lower-case FQDN -> records
	fail  map[string]int      // lower-case FQDN -> rcode
	drop  map[string]bool     // lower-case FQDN -> never answered
	udp   *dns.Server
	tcp   *dns.Server
	delay time.Duration
}

// StartDNS serves zone (master file text with absolute names, one record a
// line, e.g. "sender.test. 300 IN TXT \"v=spf1 ip4:127.0.0.1 -all\""; the
// TTL is 3600 where none is given) on a free loopback port until the test
// ends.
func StartDNS(t testing.TB, zone string) *DNS {
	t.Helper()
	d, err := NewDNS("127.0.0.1:0", zone)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	return d
}

// NewDNS starts a server on addr ("127.0.0.1:0" for a free port).
func NewDNS(addr, zone string) (*DNS, error) {
	d := &DNS{rrs: map[string][]dns.RR{}, fail: map[string]int{}, drop: map[string]bool{}}
	if err := d.Add(zone); err != nil {
		return nil, err
	}
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return nil, err
	}
	ln, err := net.Listen("tcp", pc.LocalAddr().String())
	if err != nil {
		pc.Close()
		return nil, err
	}
	d.Addr = pc.LocalAddr().String()
	started := make(chan struct{}, 2)
	notify := func() { started <- struct{}{} }
	d.udp = &dns.Server{PacketConn: pc, Handler: d, NotifyStartedFunc: notify}
	d.tcp = &dns.Server{Listener: ln, Handler: d, NotifyStartedFunc: notify}
	go d.udp.ActivateAndServe()
	go d.tcp.ActivateAndServe()
	for range 2 {
		select {
		case <-started:
		case <-time.After(10 * time.Second):
			d.Close()
			return nil, fmt.Errorf("spamtest: DNS server did not start")
		}
	}
	return d, nil
}

// Close stops the server.
func (d *DNS) Close() {
	if d.udp != nil {
		d.udp.Shutdown()
	}
	if d.tcp != nil {
		d.tcp.Shutdown()
	}
}

// Add adds the records of zone (master file text, absolute names).
func (d *DNS) Add(zone string) error {
	zp := dns.NewZoneParser(strings.NewReader("$TTL 3600\n"+zone), ".", "test")
	d.mu.Lock()
	defer d.mu.Unlock()
	for rr, ok := zp.Next(); ok; rr, ok = zp.Next() {
		name := strings.ToLower(rr.Header().Name)
		d.rrs[name] = append(d.rrs[name], rr)
	}
	return zp.Err()
}

// Fail makes questions about name answer rcode (e.g. dns.RcodeServerFailure).
func (d *DNS) Fail(name string, rcode int) {
	d.mu.Lock()
	d.fail[strings.ToLower(dns.Fqdn(name))] = rcode
	d.mu.Unlock()
}

// Drop makes questions about name go unanswered: the client times out.
func (d *DNS) Drop(name string) {
	d.mu.Lock()
	d.drop[strings.ToLower(dns.Fqdn(name))] = true
	d.mu.Unlock()
}

// ServeDNS implements dns.Handler.
func (d *DNS) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	d.Queries.Add(1)
	m := new(dns.Msg)
	m.SetReply(r)
	m.Authoritative = true
	m.RecursionAvailable = true
	if len(r.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		w.WriteMsg(m)
		return
	}
	q := r.Question[0]
	name := strings.ToLower(q.Name)
	d.mu.Lock()
	drop := d.drop[name]
	rcode, failing := d.fail[name]
	rrs, known := d.rrs[name]
	d.mu.Unlock()
	if drop {
		return
	}
	switch {
	case failing:
		m.Rcode = rcode
	case !known:
		m.Rcode = dns.RcodeNameError
	default:
		for _, rr := range rrs {
			if rr.Header().Rrtype == q.Qtype || rr.Header().Rrtype == dns.TypeCNAME {
				c := dns.Copy(rr)
				c.Header().Name = q.Name
				m.Answer = append(m.Answer, c)
			}
		}
	}
	if r.IsEdns0() != nil {
		m.SetEdns0(4096, false)
	}
	if _, udp := w.RemoteAddr().(*net.UDPAddr); udp {
		m.Truncate(dnsSize(r))
	}
	w.WriteMsg(m)
}

func dnsSize(r *dns.Msg) int {
	if o := r.IsEdns0(); o != nil {
		return int(o.UDPSize())
	}
	return dns.MinMsgSize
}
