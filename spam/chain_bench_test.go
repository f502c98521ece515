package spam_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailnode/mailnode/inventory"
	"github.com/mailnode/mailnode/milter"
	"github.com/mailnode/mailnode/resolver"
	"github.com/mailnode/mailnode/spam"
	"github.com/mailnode/mailnode/spam/spamtest"
)

// benchZone answers every lookup the chain makes for the bench messages:
// SPF and DMARC of the sender domain (the same for every message, so
// cached after the first), and two DNSBL zones, asked about a different
// client address for every message (NXDOMAIN: not listed; never cached).
const benchZone = `
sender.test.          IN TXT "v=spf1 ip4:10.0.0.0/8 -all"
_dmarc.sender.test.   IN TXT "v=DMARC1; p=reject"
sender.test.          IN MX 10 mx.sender.test.
mx.sender.test.       IN A 10.0.0.1
`

// benchMessage is a plain-text message with a body of size bytes.
func benchMessage(size int) (headers [][2]string, body []byte) {
	headers = [][2]string{
		{"Received", " from mx.sender.test (mx.sender.test [198.51.100.7])\r\n\tby mx1.example.com (Postfix) with ESMTP id 4ABCD1234\r\n\tfor <bob@example.com>; Sun, 1 Mar 2026 12:00:00 +0000 (UTC)"},
		{"From", " Alice Sender <alice@sender.test>"},
		{"To", " Bob <bob@example.com>"},
		{"Subject", " Quarterly figures"},
		{"Date", " Sun, 1 Mar 2026 11:59:00 +0000"},
		{"Message-ID", " <20260301115900.1234@sender.test>"},
		{"MIME-Version", " 1.0"},
		{"Content-Type", " text/plain; charset=utf-8"},
	}
	line := "The figures for the quarter are attached below, as discussed on Monday.\r\n"
	var b strings.Builder
	for b.Len() < size {
		b.WriteString(line)
	}
	return headers, []byte(b.String()[:size])
}

// clients numbers the bench messages' client addresses (10.x.y.z). With
// spread 1<<24 each message comes from a new one, across runs too, so
// that its DNSBL lookups never hit the resolver's cache ("cold"); with
// spread 256 the same 256 clients come back ("warm").
var clients atomic.Uint32

// runChain pushes one message through a Transaction the way milterd's
// backend does (64 KiB body chunks, as Postfix sends them).
func runChain(f *milter.Filter, spread uint32, headers [][2]string, body []byte) milter.Result {
	i := clients.Add(1) % spread
	client := fmt.Sprintf("10.%d.%d.%d", i>>16&0xff, i>>8&0xff, i&0xff)
	tx := f.NewTransaction(milter.Envelope{ClientAddr: client, Helo: "mx.sender.test", Sender: "alice@sender.test", ClientHost: "mx.sender.test"})
	defer tx.Close()
	tx.AddRcpt("bob@example.com")
	for _, h := range headers {
		tx.Header(h[0], h[1])
	}
	tx.EndOfHeaders()
	for b := body; len(b) > 0; {
		n := min(len(b), 65535)
		tx.Body(b[:n])
		b = b[n:]
	}
	return tx.End(context.Background())
}

// chainFilter is milterd's Filter with the inbound chain for inv, its DNS
// through r, and eng as the engine (nil: builtin).
func chainFilter(tb testing.TB, inv *inventory.Inventory, r *resolver.Client, eng spam.Engine) *milter.Filter {
	f := milter.NewFilter(inv, nil, r.LookupTXT)
	f.Checks = milter.InboundChecks(inv, r, r.LookupTXT)
	if eng != nil {
		f.Checks[len(f.Checks)-1].(*milter.SpamCheck).Engine = eng
	}
	f.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	f.CheckTimeout = time.Minute
	return f
}

func benchSetup(tb testing.TB) (*inventory.Inventory, *resolver.Client, *spamtest.DNS) {
	d := spamtest.StartDNS(tb, benchZone)
	inv, err := inventory.Load("../examples/inventory.yaml")
	if err != nil {
		tb.Fatal(err)
	}
	inv.Spam.DNSBL = []string{"bl.test", "bl2.test"}
	return inv, resolver.NewClient(d.Addr, time.Second), d
}

// measureChain runs n messages through f, conc at a time, after one
// warm-up message, and returns messages/s and the p50 and p99 latency in
// milliseconds of one message (NewTransaction to End).
func measureChain(tb testing.TB, f *milter.Filter, spread uint32, headers [][2]string, body []byte, conc, n int, timer func(start bool)) (msgs, p50, p99 float64) {
	res := runChain(f, spread, headers, body)
	if v := res.Decision.Verdict; !v.Scored || v.EngineErr != "" || res.Reject {
		tb.Fatalf("warm-up message: %+v", v)
	}
	lat := make([]time.Duration, n)
	var wg sync.WaitGroup
	next := make(chan int, conc)
	timer(true)
	start := time.Now()
	for w := 0; w < conc; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				t0 := time.Now()
				runChain(f, spread, headers, body)
				lat[i] = time.Since(t0)
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	el := time.Since(start)
	timer(false)
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) float64 {
		return float64(lat[min(len(lat)-1, int(p*float64(len(lat))))].Microseconds()) / 1000
	}
	return float64(n) / el.Seconds(), pct(0.50), pct(0.99)
}

// BenchmarkChain: the whole inbound chain (SPF, DKIM, DMARC, spam) on a
// 64 KiB message from outside to a local mailbox, DNS answered by an
// in-process server on loopback, 8 messages at a time, with each engine
// side by side: builtin alone, then the real rspamd and the real spamd
// (started here, inside the test namespace; skipped outside one). Reports
// messages/s and the p50/p99 latency the chain adds to one message.
// builtin-warm is builtin with 256 clients that come back (their DNSBL
// answers cached); every other run has a new client per message.
func BenchmarkChain(b *testing.B) {
	// The garbage collector set as milterd sets it.
	defer milter.TuneRuntime()()
	inv, r, d := benchSetup(b)
	headers, body := benchMessage(64 << 10)
	engines := []struct {
		name   string
		spread uint32
		start  func(testing.TB) spam.Engine
	}{
		{"builtin-warm", 256, nil},
		{"builtin", 1 << 24, nil},
		{"rspamd", 1 << 24, func(tb testing.TB) spam.Engine {
			e := spamtest.StartRspamd(tb, d.Addr)
			if !e.WaitLog("hyperscan database", 3*time.Minute) {
				tb.Logf("rspamd: hyperscan not loaded after 3 minutes; measuring anyway")
			}
			return &spam.Rspamd{URL: e.URL, Timeout: 60 * time.Second}
		}},
		{"spamd", 1 << 24, func(tb testing.TB) spam.Engine {
			return &spam.Spamd{Address: spamtest.StartSpamd(tb).Addr, Timeout: 60 * time.Second}
		}},
	}
	for _, e := range engines {
		name := e.name + "/64KiB/c8"
		var eng spam.Engine
		if e.start != nil {
			if !spamtest.InNetns() {
				b.Run(name, func(b *testing.B) { b.Skip("real engines run only inside a test network namespace (as root)") })
				continue
			}
			// Started once for all runs of the sub-benchmark; stopped when
			// BenchmarkChain ends.
			eng = e.start(b)
		}
		b.Run(name, func(b *testing.B) {
			f := chainFilter(b, inv, r, eng)
			b.SetBytes(int64(len(body)))
			msgs, p50, p99 := measureChain(b, f, e.spread, headers, body, 8, b.N, func(start bool) {
				if start {
					b.ResetTimer()
				} else {
					b.StopTimer()
				}
			})
			b.ReportMetric(msgs, "msgs/s")
			b.ReportMetric(p50, "p50-ms")
			b.ReportMetric(p99, "p99-ms")
		})
	}
}
