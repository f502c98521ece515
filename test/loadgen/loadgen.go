// Package loadgen replays a realistic mix of Postfix policy requests against
// a policy server over persistent connections and measures decisions per
// second and latency. `mailnode-bench policy` and `greylist` and the policy
// package's benchmarks use it: test and benchmark machinery, never imported
// by the product.
//
// The mix imitates what a corporate MX sees at RCPT time: mostly inbound
// mail from the world to local mailboxes (many sender domains and client
// addresses), some backup-MX traffic for relay domains, relay attempts and
// forged local senders to reject, and the node's own users submitting with
// SASL or from trusted hosts. Every request carries the full attribute set
// Postfix 3.7 sends, so parsing costs what it costs in production.
package loadgen

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/netip"
	"os"
	"sort"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mailnode/mailnode/acl"
	"github.com/mailnode/mailnode/inventory"
	"github.com/mailnode/mailnode/policy"
	"github.com/mailnode/mailnode/test/procstat"
)

// Item is one request of the mix, encoded, with the reply policyd must give
// ("" when the mix was built without the server's inventory).
type Item struct {
	Kind  string
	Wire  []byte
	Reply string
	// Alt, when set, is the start of another reply that is right too: the
	// 450 of greylisting or of a rate limit, which depends on the server's
	// state (the matrix's Reply is then DUNNO).
	Alt string
}

// Share is one kind of request and its weight in the mix.
type Share struct {
	Kind   string
	Weight int
}

// DefaultShares is the mix `mailnode-bench policy` replays.
var DefaultShares = []Share{
	{"inbound to a local mailbox", 52},
	{"inbound to a local alias", 6},
	{"inbound to a relay domain (backup MX)", 8},
	{"inbound bounce (null sender)", 3},
	{"relay attempt to outside", 9},
	{"outside sender to an internal list", 1},
	{"forged local sender, unauthenticated", 4},
	{"relay domain sender, unauthenticated", 1},
	{"authenticated user to outside", 10},
	{"authenticated user to local", 3},
	{"trusted host to outside", 2},
	{"authenticated user with outside sender", 1},
}

// Names is what a mix needs to know about the node.
type Names struct {
	Local, Relay   []string // domains
	Mailboxes      []string // addresses (also SASL logins)
	Aliases, Lists []string
	Trusted        []netip.Prefix
}

// NamesFrom reads the names from an inventory.
func NamesFrom(inv *inventory.Inventory) Names {
	var n Names
	for _, d := range inv.LocalDomains() {
		n.Local = append(n.Local, d.Name)
		for _, m := range d.Mailboxes {
			n.Mailboxes = append(n.Mailboxes, m.Address(d.Name))
		}
		for a := range d.Aliases {
			n.Aliases = append(n.Aliases, a+"@"+d.Name)
		}
		for l := range d.Lists {
			n.Lists = append(n.Lists, l+"@"+d.Name)
		}
	}
	sort.Strings(n.Aliases)
	sort.Strings(n.Lists)
	for _, d := range inv.RelayDomains() {
		n.Relay = append(n.Relay, d.Name)
	}
	for _, s := range inv.Node.TrustedNetworks {
		if p, err := inventory.ParsePrefix(s); err == nil {
			n.Trusted = append(n.Trusted, p)
		}
	}
	return n
}

// ExampleNames are the names of examples/inventory.yaml, for a server whose
// inventory the load generator was not given.
var ExampleNames = Names{
	Local:     []string{"example.com", "example.net"},
	Relay:     []string{"partner.org"},
	Mailboxes: []string{"alice@example.com", "bob@example.com", "carol@example.net"},
	Aliases:   []string{"postmaster@example.com", "abuse@example.com", "sales@example.com", "info@example.net"},
	Lists:     []string{"all-staff@example.com"},
	Trusted:   []netip.Prefix{netip.MustParsePrefix("10.20.0.0/16")},
}

// BuildMix makes size requests in the proportions of shares, deterministic
// for a seed. With inv the expected reply of each is computed with
// policy.Decide, so the run can check every answer.
func BuildMix(names Names, inv *inventory.Inventory, shares []Share, size int, seed uint64) ([]Item, error) {
	if len(names.Local) == 0 || len(names.Mailboxes) == 0 {
		return nil, errors.New("loadgen: the node needs a local domain with a mailbox")
	}
	rng := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	total := 0
	for _, s := range shares {
		total += s.Weight
	}
	pick := func(l []string) string { return l[rng.IntN(len(l))] }
	outsideAddr := func() string {
		return fmt.Sprintf("user%d@mail%d.sender%d.test", rng.IntN(5000), rng.IntN(10), rng.IntN(2000))
	}
	outsideClient := func() string {
		if rng.IntN(10) == 0 {
			return fmt.Sprintf("2001:db8:%x:%x::%x", rng.IntN(65536), rng.IntN(65536), rng.IntN(65536))
		}
		return fmt.Sprintf("%d.%d.%d.%d", 1+rng.IntN(222), rng.IntN(256), rng.IntN(256), 1+rng.IntN(254))
	}
	trustedClient := func() string {
		if len(names.Trusted) == 0 {
			return ""
		}
		p := names.Trusted[rng.IntN(len(names.Trusted))]
		a := p.Addr().As16()
		if p.Addr().Is4() {
			b := p.Addr().As4()
			if p.Bits() <= 24 {
				b[3] = byte(1 + rng.IntN(254))
			}
			return netip.AddrFrom4(b).String()
		}
		if p.Bits() <= 120 {
			a[15] = byte(1 + rng.IntN(254))
		}
		return netip.AddrFrom16(a).String()
	}
	rcptIn := func(l []string) string {
		if len(l) == 0 {
			return pick(names.Mailboxes)
		}
		return pick(l)
	}
	relayRcpt := func() string {
		if len(names.Relay) == 0 {
			return pick(names.Mailboxes)
		}
		return fmt.Sprintf("user%d@%s", rng.IntN(500), pick(names.Relay))
	}
	opts := policy.Options{}
	if inv != nil {
		opts = policy.OptionsFrom(inv)
	}
	items := make([]Item, 0, size)
	for len(items) < size {
		x := rng.IntN(total)
		var kind string
		for _, s := range shares {
			if x < s.Weight {
				kind = s.Kind
				break
			}
			x -= s.Weight
		}
		a := attrs{client: outsideClient(), sender: outsideAddr(), rcpt: pick(names.Mailboxes)}
		switch kind {
		case "inbound to a local mailbox":
		case "inbound to a local alias":
			a.rcpt = rcptIn(names.Aliases)
		case "inbound to a relay domain (backup MX)":
			a.rcpt = relayRcpt()
		case "inbound bounce (null sender)":
			a.sender = ""
		case "relay attempt to outside":
			a.rcpt = outsideAddr()
		case "outside sender to an internal list":
			a.rcpt = rcptIn(names.Lists)
		case "forged local sender, unauthenticated":
			a.sender = pick(names.Mailboxes)
		case "relay domain sender, unauthenticated":
			a.sender = relayRcpt()
		case "authenticated user to outside", "authenticated user to local", "authenticated user with outside sender":
			a.sasl = pick(names.Mailboxes)
			a.sender = a.sasl
			a.port = "587"
			if kind == "authenticated user to outside" {
				a.rcpt = outsideAddr()
			}
			if kind == "authenticated user with outside sender" {
				a.sender = outsideAddr()
			}
		case "trusted host to outside":
			a.client = trustedClient()
			a.sender = pick(names.Mailboxes)
			a.rcpt = outsideAddr()
		default:
			return nil, fmt.Errorf("loadgen: unknown kind %q", kind)
		}
		a.instance = fmt.Sprintf("%x.%x.%x.0", rng.Uint32()&0xffff, rng.Uint32(), rng.Uint32()&0xfffff)
		it := Item{Kind: kind, Wire: a.encode()}
		if inv != nil {
			req, err := policy.ParseRequest(it.Wire, policy.DefaultLimits)
			if err != nil {
				return nil, fmt.Errorf("loadgen: own request does not parse: %w", err)
			}
			d := policy.Decide(req, inv, opts)
			it.Reply = "action=" + d.Reply + "\n\n"
			if d.Action == policy.Dunno && d.Reason != policy.ReasonNotRcpt {
				if g := inv.Policy.Greylist; g != nil && g.Enabled && acl.SpamCheck(d.Cell) {
					it.Alt = AltGreylisted
				} else if inv.Policy.Ratelimit != nil && d.Cell.Auth != inventory.AuthNone {
					it.Alt = AltRateLimited
				}
			}
		}
		items = append(items, it)
	}
	return items, nil
}

// The starts of the stateful 450 replies (package state).
const (
	AltGreylisted  = "action=450 4.7.1 Greylisted, please try again in "
	AltRateLimited = "action=450 4.7.1 Rate limit exceeded for <"
)

// ServeDunno answers every policy request on every connection ln accepts
// with DUNNO, delay after the request's empty line, one request at a time
// per connection, without looking at it: the baseline server of the
// benchmarks (mailnode-bench dunno-server, delay 0) and a slow server for
// the load generator's own tests. It returns when ln is closed.
func ServeDunno(ln net.Listener, delay time.Duration) {
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		go func() {
			defer c.Close()
			r := bufio.NewReader(c)
			for {
				line, err := r.ReadSlice('\n')
				if err != nil {
					return
				}
				if len(line) == 1 {
					if delay > 0 {
						time.Sleep(delay)
					}
					if _, err := c.Write([]byte("action=DUNNO\n\n")); err != nil {
						return
					}
				}
			}
		}()
	}
}

// GreylistStream is n inbound RCPT requests (outside sender, neither
// authenticated nor trusted, to a mailbox of domain), each a triplet of its
// own: client 198.18.0.0/15 addresses (one /24 per 256 triplets), sender
// s<i>@sender<i%97>.test, recipient u<i%500>@domain. first numbers the
// first triplet, so two calls with disjoint ranges share no triplet. Every
// greylisting server (policyd, postgrey) sees it the same way: a new
// triplet is deferred, a known one passes.
func GreylistStream(domain string, first, n int) []Item {
	items := make([]Item, n)
	for k := range items {
		i := first + k
		a := attrs{
			client:   fmt.Sprintf("198.%d.%d.%d", 18+(i>>16&1), i>>8&255, i&255),
			sender:   fmt.Sprintf("s%d@sender%d.test", i, i%97),
			rcpt:     fmt.Sprintf("u%d@%s", i%500, domain),
			instance: fmt.Sprintf("%x.%x.0", i, i*7919),
		}
		items[k] = Item{Kind: "greylist triplet", Wire: a.encode()}
	}
	return items
}

// GreylistItem is one inbound RCPT request of GreylistStream's kind for
// the given client address, sender and recipient.
func GreylistItem(client, sender, rcpt string) Item {
	a := attrs{client: client, sender: sender, rcpt: rcpt, instance: "1.1.0"}
	return Item{Kind: "greylist triplet", Wire: a.encode()}
}

type attrs struct {
	client, sender, rcpt, sasl, port, instance string
}

// encode writes the attributes Postfix 3.7 sends at RCPT.
func (a attrs) encode() []byte {
	port := a.port
	if port == "" {
		port = "25"
	}
	method := ""
	if a.sasl != "" {
		method = "PLAIN"
	}
	var b bytes.Buffer
	w := func(k, v string) { b.WriteString(k); b.WriteByte('='); b.WriteString(v); b.WriteByte('\n') }
	w("request", "smtpd_access_policy")
	w("protocol_state", "RCPT")
	w("protocol_name", "ESMTP")
	w("client_address", a.client)
	w("client_name", "unknown")
	w("client_port", "49152")
	w("reverse_client_name", "unknown")
	w("server_address", "203.0.113.10")
	w("server_port", port)
	w("helo_name", "mail.client.test")
	w("sender", a.sender)
	w("recipient", a.rcpt)
	w("recipient_count", "0")
	w("queue_id", "")
	w("instance", a.instance)
	w("size", "0")
	w("etrn_domain", "")
	w("stress", "")
	w("sasl_method", method)
	w("sasl_username", a.sasl)
	w("sasl_sender", "")
	w("ccert_subject", "")
	w("ccert_issuer", "")
	w("ccert_fingerprint", "")
	w("ccert_pubkey_fingerprint", "")
	w("encryption_protocol", "TLSv1.3")
	w("encryption_cipher", "TLS_AES_256_GCM_SHA384")
	w("encryption_keysize", "256")
	w("policy_context", "")
	w("server_hostname", "mx1.example.com")
	w("compatibility_level", "3.6")
	w("mail_version", "3.7.11")
	b.WriteByte('\n')
	return b.Bytes()
}

// Config is one load run.
type Config struct {
	Network, Addr string // "unix" or "tcp"
	// Addrs, when set, replaces Addr: connection i goes to
	// Addrs[i%len(Addrs)], as several Postfix nodes spread over the policy
	// servers of a tier.
	Addrs    []string
	Conns    int // persistent connections, one goroutine each
	Requests int // total requests over all connections
	Mix      []Item
	Timeout  time.Duration // per request; default 5s
	// Rate, when above zero, paces the run: request i is sent no earlier
	// than i/Rate seconds after the start, over all connections together
	// (a connection that falls behind sends at once). Latencies are
	// measured from the send, as without Rate. 0: every connection sends
	// as fast as the replies come.
	Rate float64
	// FromDue, with Rate, gives each connection its own share of the
	// pace (request i goes on connection i mod Conns, due at i/Rate) and
	// charges the server for the wait it causes, as a client arriving on
	// time would see it: a request's latency is the time from when it fell
	// due to when it would have been answered had every request on its
	// connection been sent the moment it was due or the reply before it
	// came, whichever is later, each answered in the time its reply took
	// from its actual send. A server slower than the pace makes the
	// latencies grow request by request; the load generator's own timer
	// slack (a late wake-up) is not charged.
	FromDue bool
}

// Result is what a run measured.
type Result struct {
	Requests   int
	Elapsed    time.Duration
	PerSecond  float64
	P50, P90   time.Duration
	P99, P999  time.Duration
	Max        time.Duration
	Replies    map[string]int // by first word of the action ("DUNNO", "550", ...)
	Mismatches int            // replies that differ from the expected one
	FirstBad   string         // the first mismatch, for the report
	SelfCPU    time.Duration  // user+system CPU this process spent during the run
}

// Run replays cfg.Mix round-robin over cfg.Conns connections, each sending
// a request and waiting for its reply as Postfix does, until cfg.Requests
// have been answered.
func Run(cfg Config) (Result, error) {
	if cfg.Conns < 1 || cfg.Requests < 1 || len(cfg.Mix) == 0 {
		return Result{}, errors.New("loadgen: need connections, requests and a mix")
	}
	if cfg.Timeout == 0 {
		cfg.Timeout = 5 * time.Second
	}
	conns := make([]net.Conn, cfg.Conns)
	for i := range conns {
		addr := cfg.Addr
		if len(cfg.Addrs) > 0 {
			addr = cfg.Addrs[i%len(cfg.Addrs)]
		}
		c, err := net.Dial(cfg.Network, addr)
		if err != nil {
			for _, c := range conns[:i] {
				c.Close()
			}
			return Result{}, fmt.Errorf("loadgen: connection %d: %w", i, err)
		}
		conns[i] = c
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	var next atomic.Int64
	type workerResult struct {
		lat        []time.Duration
		replies    map[string]int
		mismatches int
		firstBad   string
		err        error
	}
	results := make([]workerResult, cfg.Conns)
	var wg sync.WaitGroup
	cpu0 := procstat.SelfCPU()
	start := time.Now()
	for w := range conns {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			c := conns[w]
			res := &results[w]
			res.lat = make([]time.Duration, 0, cfg.Requests/cfg.Conns+1)
			buf := make([]byte, 4096)
			counts := map[string]int{}
			ex := newExchanger(c)
			var dl time.Time    // the deadline last set; pushed forward when half a second stale
			var vfree time.Time // FromDue: when a punctual client's connection would be free
			for m := int64(0); ; m++ {
				i := next.Add(1) - 1
				if cfg.Rate > 0 && cfg.FromDue {
					i = m*int64(cfg.Conns) + int64(w)
				}
				if i >= int64(cfg.Requests) {
					break
				}
				it := &cfg.Mix[int(i)%len(cfg.Mix)]
				t0 := time.Now()
				var due time.Time
				if cfg.Rate > 0 {
					due = start.Add(time.Duration(float64(i) / cfg.Rate * float64(time.Second)))
					if d := due.Sub(t0); d > 0 {
						time.Sleep(d)
						t0 = time.Now()
					}
				}
				if dl.Before(t0.Add(cfg.Timeout - time.Second/2)) {
					dl = t0.Add(cfg.Timeout)
					c.SetDeadline(dl)
				}
				n, err := ex.do(it.Wire, buf)
				if err != nil {
					switch {
					case errors.Is(err, io.EOF):
						err = errors.New("server closed the connection without a reply")
					case errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ECONNRESET):
						err = fmt.Errorf("server closed the connection without a reply (%w)", err)
					}
					res.err = fmt.Errorf("loadgen: request %d (%s): %w", i, it.Kind, err)
					return
				}
				took := time.Since(t0)
				if cfg.Rate > 0 && cfg.FromDue {
					v := due // when a punctual client would have sent it
					if vfree.After(v) {
						v = vfree
					}
					vfree = v.Add(took)
					took += v.Sub(due)
				}
				res.lat = append(res.lat, took)
				reply := buf[:n]
				if it.Reply != "" && string(reply) != it.Reply && (it.Alt == "" || !bytes.HasPrefix(reply, []byte(it.Alt))) {
					res.mismatches++
					if res.firstBad == "" {
						res.firstBad = fmt.Sprintf("%s: got %q, want %q", it.Kind, reply, it.Reply)
					}
				}
				word := reply[len("action="):]
				if sp := bytes.IndexAny(word, " \n"); sp >= 0 {
					word = word[:sp]
				}
				counts[string(word)]++
			}
			res.replies = counts
		}(w)
	}
	wg.Wait()
	elapsed := time.Since(start)
	r := Result{Elapsed: elapsed, Replies: map[string]int{}, SelfCPU: procstat.SelfCPU() - cpu0}
	var all []time.Duration
	for _, w := range results {
		if w.err != nil {
			return Result{}, w.err
		}
		all = append(all, w.lat...)
		for k, v := range w.replies {
			r.Replies[k] += v
		}
		r.Mismatches += w.mismatches
		if r.FirstBad == "" {
			r.FirstBad = w.firstBad
		}
	}
	r.Requests = len(all)
	r.PerSecond = float64(r.Requests) / elapsed.Seconds()
	sort.Slice(all, func(i, j int) bool { return all[i] < all[j] })
	q := func(p float64) time.Duration { return all[min(len(all)-1, int(p*float64(len(all))))] }
	r.P50, r.P90, r.P99, r.P999, r.Max = q(0.50), q(0.90), q(0.99), q(0.999), all[len(all)-1]
	return r, nil
}

// exchanger sends a request and reads its reply as a Postfix client
// does, with the fewest system calls the runtime allows. On a socket it
// writes the request from inside the raw read callback, after the runtime
// has re-armed its edge-triggered poller, and then waits for the reply
// without a read that could only say EAGAIN: the reply cannot come before
// the request. A client written the plain way (Write, then Read) spends a
// third more system calls per request, and on two cores shared with the
// server that shows as the server's own throughput.
type exchanger struct {
	c    net.Conn
	raw  syscall.RawConn // nil: not a socket, use c
	wire []byte          // the request; nil once written
	buf  []byte
	n    int
	err  error
	f    func(fd uintptr) bool
}

func newExchanger(c net.Conn) *exchanger {
	e := &exchanger{c: c}
	if sc, ok := c.(syscall.Conn); ok {
		e.raw, _ = sc.SyscallConn()
	}
	e.f = e.step
	return e
}

// do sends wire and reads into buf until the reply's empty line; it returns
// the reply's length.
func (e *exchanger) do(wire, buf []byte) (int, error) {
	e.wire, e.buf, e.n, e.err = wire, buf, 0, nil
	if e.raw == nil {
		if _, err := e.c.Write(wire); err != nil {
			return 0, err
		}
		e.wire = nil
		for !e.complete() {
			if e.n == len(buf) {
				return 0, fmt.Errorf("reply longer than %d bytes", len(buf))
			}
			m, err := e.c.Read(buf[e.n:])
			e.n += m
			if err != nil {
				return 0, err
			}
		}
		return e.n, nil
	}
	for {
		if err := e.raw.Read(e.f); err != nil {
			return 0, err
		}
		if e.err != errPartial {
			return e.n, e.err
		}
		// The socket took part of the request: write the rest the plain
		// way (it waits for room, with the deadline), then read.
		if _, err := e.c.Write(e.wire); err != nil {
			return 0, err
		}
		e.wire = nil
	}
}

var errPartial = errors.New("loadgen: request written in part")

func (e *exchanger) complete() bool {
	return e.n >= 2 && e.buf[e.n-1] == '\n' && e.buf[e.n-2] == '\n'
}

// step is the raw read callback: true ends the exchange (or hands a
// partial write back to do), false waits for the socket to be readable.
func (e *exchanger) step(fd uintptr) bool {
	if e.wire != nil {
		m, err := syscall.Write(int(fd), e.wire)
		switch {
		case err == syscall.EINTR || err == syscall.EAGAIN:
			m = 0
		case err != nil:
			e.err = os.NewSyscallError("write", err)
			return true
		}
		if m < len(e.wire) {
			e.wire, e.err = e.wire[m:], errPartial
			return true
		}
		e.wire = nil
		return false
	}
	for {
		if e.n == len(e.buf) {
			e.err = fmt.Errorf("reply longer than %d bytes", len(e.buf))
			return true
		}
		m, err := syscall.Read(int(fd), e.buf[e.n:])
		switch {
		case err == syscall.EINTR:
			continue
		case err == syscall.EAGAIN:
			return false
		case err != nil:
			e.err = os.NewSyscallError("read", err)
			return true
		case m == 0:
			e.err = io.EOF
			return true
		}
		e.n += m
		if e.complete() {
			return true
		}
	}
}

// OpenIdle opens n connections that send nothing; close them with the
// returned function.
func OpenIdle(network, addr string, n int) (func(), error) {
	conns := make([]net.Conn, 0, n)
	closeAll := func() {
		for _, c := range conns {
			c.Close()
		}
	}
	for i := 0; i < n; i++ {
		c, err := net.Dial(network, addr)
		for try := 0; errors.Is(err, syscall.EAGAIN) && try < 500; try++ {
			// The listen backlog is full: give the server time to accept.
			time.Sleep(10 * time.Millisecond)
			c, err = net.Dial(network, addr)
		}
		if err != nil {
			closeAll()
			return nil, fmt.Errorf("loadgen: idle connection %d of %d: %w", i+1, n, err)
		}
		conns = append(conns, c)
	}
	return closeAll, nil
}

// Report writes a result the way `mailnode-bench policy` prints it.
func (r Result) Report(w io.Writer) {
	fmt.Fprintf(w, "decisions/s: %.0f  (%d requests in %v)\n", r.PerSecond, r.Requests, r.Elapsed.Round(time.Millisecond))
	fmt.Fprintf(w, "latency:     p50 %v  p90 %v  p99 %v  p99.9 %v  max %v\n",
		r.P50.Round(time.Microsecond), r.P90.Round(time.Microsecond), r.P99.Round(time.Microsecond),
		r.P999.Round(time.Microsecond), r.Max.Round(time.Microsecond))
	keys := make([]string, 0, len(r.Replies))
	for k := range r.Replies {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	fmt.Fprintf(w, "client CPU:  %.1f µs/decision\n", float64(r.SelfCPU.Microseconds())/float64(r.Requests))
	fmt.Fprint(w, "replies:    ")
	for _, k := range keys {
		fmt.Fprintf(w, " %s %.1f%%", k, 100*float64(r.Replies[k])/float64(r.Requests))
	}
	fmt.Fprintln(w)
}
