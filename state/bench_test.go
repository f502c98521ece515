package state

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailnode/mailnode/inventory"
	"github.com/mailnode/mailnode/state/statetest"
)

// Benchmarks of the greylisting layer. BenchmarkGreylistCheck calls
// Greylister.Check in process; BenchmarkSideBySide sends one Postfix policy
// request stream over 8 TCP connections to postgrey (Debian's, started here
// on loopback) and to a minimal policy server around Greylister.Check (bbolt
// and Redis), and prints decisions/s, latency and the ratio to postgrey.

const benchConns = 8

var tripletSeq atomic.Int64

// newTriplet is a triplet never seen before.
func newTriplet() Triplet {
	i := tripletSeq.Add(1)
	return Triplet{
		Client:    fmt.Sprintf("10.%d.%d.%d", i>>16&255, i>>8&255, i&255),
		Sender:    fmt.Sprintf("s%d@sender%d.test", i, i%97),
		Recipient: fmt.Sprintf("u%d@example.com", i%500),
	}
}

// latencies collects per-request durations from several goroutines.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d []time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d...)
	l.mu.Unlock()
}

func (l *latencies) pct(p float64) time.Duration {
	if len(l.d) == 0 {
		return 0
	}
	sort.Slice(l.d, func(i, j int) bool { return l.d[i] < l.d[j] })
	return l.d[int(float64(len(l.d)-1)*p)]
}

// offsetClock is the real clock plus an offset tests can move forward.
type offsetClock struct{ off atomic.Int64 }

func (c *offsetClock) Now() time.Time { return time.Now().Add(time.Duration(c.off.Load())) }

func benchGreyCfg(delay time.Duration) *inventory.Greylist {
	return &inventory.Greylist{Enabled: true, Delay: inventory.Duration(delay),
		RetryWindow: inventory.Duration(48 * time.Hour), AutoWhitelistAfter: 5,
		Expire: inventory.Duration(35 * 24 * time.Hour)}
}

func BenchmarkGreylistCheck(b *testing.B) {
	stores := map[string]func(b *testing.B, clk Clock) Store{
		"bbolt": func(b *testing.B, clk Clock) Store { return openBolt(b, clk) },
		"redis": func(b *testing.B, clk Clock) Store { return openRedis(b, statetest.Redis(b), "bench:") },
	}
	for _, name := range []string{"bbolt", "redis"} {
		for _, kind := range []string{"new", "known"} {
			b.Run(name+"/"+kind, func(b *testing.B) {
				clk := &offsetClock{}
				st := stores[name](b, clk.Now)
				g, err := NewGreylister(benchGreyCfg(300*time.Second), st, clk.Now)
				if err != nil {
					b.Fatal(err)
				}
				ctx := context.Background()
				var pool []Triplet
				if kind == "known" {
					for i := 0; i < 10000; i++ {
						pool = append(pool, newTriplet())
						g.Check(ctx, pool[i])
					}
					clk.off.Add(int64(301 * time.Second))
					for _, t := range pool {
						if r, _ := g.Check(ctx, t); r.Action != "" {
							b.Fatalf("seeded triplet not passing: %s", r.Action)
						}
					}
				}
				var lat latencies
				var next atomic.Int64
				b.SetParallelism((benchConns + 1) / 2) // 2 cores: 8 goroutines
				b.ResetTimer()
				start := time.Now()
				b.RunParallel(func(pb *testing.PB) {
					var d []time.Duration
					for pb.Next() {
						t := newTriplet
						tr := Triplet{}
						if pool != nil {
							tr = pool[next.Add(1)%int64(len(pool))]
						} else {
							tr = t()
						}
						t0 := time.Now()
						res, err := g.Check(ctx, tr)
						d = append(d, time.Since(t0))
						if err != nil || (pool == nil) != (res.Action != "") {
							b.Errorf("Check: %+v %v", res, err)
							return
						}
					}
					lat.add(d)
				})
				el := time.Since(start)
				b.ReportMetric(float64(b.N)/el.Seconds(), "decisions/s")
				b.ReportMetric(float64(lat.pct(0.99).Microseconds()), "p99-µs")
			})
		}
	}
}

// policyServer is the smallest Postfix policy server around a Greylister:
// name=value lines up to an empty line, one action= reply, connection reused.
// It stands in for policyd in this benchmark only.
func policyServer(b *testing.B, g *Greylister) string {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { l.Close() })
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r, w := bufio.NewReader(c), bufio.NewWriter(c)
				var tr Triplet
				for {
					line, err := r.ReadSlice('\n')
					if err != nil {
						return
					}
					line = line[:len(line)-1]
					if len(line) > 0 {
						k, v, _ := strings.Cut(string(line), "=")
						switch k {
						case "client_address":
							tr.Client = v
						case "sender":
							tr.Sender = v
						case "recipient":
							tr.Recipient = v
						}
						continue
					}
					res, err := g.Check(context.Background(), tr)
					if err != nil {
						return // no reply: Postfix applies its default action
					}
					a := res.Action
					if a == "" {
						a = "DUNNO"
					}
					w.WriteString("action=" + a + "\n\n")
					w.Flush()
					tr = Triplet{}
				}
			}()
		}
	}()
	return l.Addr().String()
}

// policyClient is one Postfix-like connection to a policy server.
type policyClient struct {
	c net.Conn
	r *bufio.Reader
}

func dialPolicy(b *testing.B, addr string) *policyClient {
	c, err := net.Dial("tcp", addr)
	if err != nil {
		b.Fatal(err)
	}
	return &policyClient{c, bufio.NewReader(c)}
}

// ask sends one RCPT request and returns the action.
func (p *policyClient) ask(t Triplet) (string, error) {
	req := "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\n" +
		"client_address=" + t.Client + "\nclient_name=unknown\nreverse_client_name=unknown\n" +
		"helo_name=mx.sender.test\nsender=" + t.Sender + "\nrecipient=" + t.Recipient +
		"\nrecipient_count=0\nqueue_id=\ninstance=" + t.Client + "\nsize=0\n\n"
	if _, err := io.WriteString(p.c, req); err != nil {
		return "", err
	}
	var action string
	for {
		line, err := p.r.ReadString('\n')
		if err != nil {
			return "", err
		}
		line = strings.TrimRight(line, "\n")
		if line == "" {
			return action, nil
		}
		action = strings.TrimPrefix(line, "action=")
	}
}

type sbsResult struct {
	rate     float64
	p50, p99 time.Duration
}

// BenchmarkSideBySide: the same request stream against postgrey and against
// Greylister.Check behind the policy protocol, 8 connections each.
func BenchmarkSideBySide(b *testing.B) {
	const delay = 1 // second: the smallest postgrey takes
	servers := map[string]string{"postgrey": statetest.Postgrey(b, delay).Addr}
	for _, name := range []string{"bbolt", "redis"} {
		var st Store
		if name == "bbolt" {
			st = openBolt(b, nil)
		} else {
			st = openRedis(b, statetest.Redis(b), "sbs:")
		}
		g, err := NewGreylister(benchGreyCfg(delay*time.Second), st, nil)
		if err != nil {
			b.Fatal(err)
		}
		servers[name] = policyServer(b, g)
	}
	order := []string{"postgrey", "bbolt", "redis"}

	// Known triplets: seen once, then retried after the delay so they pass.
	pool := make([]Triplet, 2000)
	for i := range pool {
		pool[i] = newTriplet()
	}
	seed := func(want func(string) bool) {
		for _, name := range order {
			p := dialPolicy(b, servers[name])
			for _, t := range pool {
				if a, err := p.ask(t); err != nil || !want(a) {
					b.Fatalf("%s seeding %v: %q %v", name, t, a, err)
				}
			}
			p.c.Close()
		}
	}
	seed(func(a string) bool { return strings.HasPrefix(a, "DEFER_IF_PERMIT") || strings.HasPrefix(a, "450 ") })
	time.Sleep(delay*time.Second + 100*time.Millisecond)
	seed(func(a string) bool { return a == "DUNNO" || strings.HasPrefix(a, "PREPEND X-Greylist") })

	results := map[string]sbsResult{}
	for _, kind := range []string{"new", "known"} {
		for _, name := range order {
			b.Run(name+"/"+kind, func(b *testing.B) {
				conns := make([]*policyClient, benchConns)
				for i := range conns {
					conns[i] = dialPolicy(b, servers[name])
					defer conns[i].c.Close()
				}
				var lat latencies
				var next atomic.Int64
				var wg sync.WaitGroup
				b.ResetTimer()
				start := time.Now()
				for i, p := range conns {
					n := b.N / benchConns
					if i < b.N%benchConns {
						n++
					}
					wg.Add(1)
					go func(p *policyClient, n int) {
						defer wg.Done()
						d := make([]time.Duration, 0, n)
						for j := 0; j < n; j++ {
							var t Triplet
							if kind == "new" {
								t = newTriplet()
							} else {
								t = pool[next.Add(1)%int64(len(pool))]
							}
							t0 := time.Now()
							a, err := p.ask(t)
							d = append(d, time.Since(t0))
							if err != nil || (kind == "known") != (a == "DUNNO" || strings.HasPrefix(a, "PREPEND")) {
								b.Errorf("%s %s: %q %v", name, kind, a, err)
								return
							}
						}
						lat.add(d)
					}(p, n)
				}
				wg.Wait()
				el := time.Since(start)
				r := sbsResult{float64(b.N) / el.Seconds(), lat.pct(0.5), lat.pct(0.99)}
				results[name+"/"+kind] = r
				b.ReportMetric(r.rate, "decisions/s")
				b.ReportMetric(float64(r.p99.Microseconds()), "p99-µs")
			})
		}
	}
	fmt.Printf("\ngreylisting, %d connections, Postfix policy protocol over loopback TCP\n", benchConns)
	fmt.Printf("%-6s %-9s %14s %9s %9s %8s\n", "stream", "server", "decisions/s", "p50", "p99", "ratio")
	for _, kind := range []string{"new", "known"} {
		base := results["postgrey/"+kind].rate
		for _, name := range order {
			r := results[name+"/"+kind]
			ratio := "-"
			if base > 0 {
				ratio = fmt.Sprintf("%.1fx", r.rate/base)
			}
			fmt.Printf("%-6s %-9s %14.0f %9s %9s %8s\n", kind, name, r.rate, r.p50.Round(time.Microsecond), r.p99.Round(time.Microsecond), ratio)
		}
	}
}
