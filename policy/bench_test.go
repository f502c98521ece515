package policy_test

import (
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/mailnode/mailnode/inventory"
	"github.com/mailnode/mailnode/maillog"
	"github.com/mailnode/mailnode/policy"
	"github.com/mailnode/mailnode/test/loadgen"
	"github.com/mailnode/mailnode/test/procstat"
)

func benchInventory(b testing.TB) *inventory.Inventory {
	inv, err := inventory.Load("testdata/inventory.yaml")
	if err != nil {
		b.Fatal(err)
	}
	return inv
}

func benchMix(b testing.TB, inv *inventory.Inventory) []loadgen.Item {
	mix, err := loadgen.BuildMix(loadgen.NamesFrom(inv), inv, loadgen.DefaultShares, 4096, 1)
	if err != nil {
		b.Fatal(err)
	}
	return mix
}

// BenchmarkDecide decides the realistic mix, parsing excluded.
func BenchmarkDecide(b *testing.B) {
	inv := benchInventory(b)
	benchDecide(b, inv, benchMix(b, inv))
}

// BenchmarkDecideKept is BenchmarkDecide on the inventory as policyd keeps
// it (inventory.KeepDecisions): the same tables, so the same speed and no
// allocation.
func BenchmarkDecideKept(b *testing.B) {
	mix := benchMix(b, benchInventory(b))
	inv, err := inventory.LoadWith("testdata/inventory.yaml", inventory.LoadOptions{Keep: inventory.KeepDecisions})
	if err != nil {
		b.Fatal(err)
	}
	benchDecide(b, inv, mix)
}

// benchDecide times policy.Decide over the requests of mix against inv.
func benchDecide(b *testing.B, inv *inventory.Inventory, mix []loadgen.Item) {
	reqs := make([]policy.Request, len(mix))
	for i, it := range mix {
		r, err := policy.ParseRequest(it.Wire, policy.DefaultLimits)
		if err != nil {
			b.Fatal(err)
		}
		reqs[i] = r
	}
	opts := policy.OptionsFrom(inv)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		policy.Decide(reqs[i%len(reqs)], inv, opts)
	}
}

// BenchmarkParseRequest parses full Postfix requests (32 attributes).
func BenchmarkParseRequest(b *testing.B) {
	mix := benchMix(b, benchInventory(b))
	b.ReportAllocs()
	b.SetBytes(int64(len(mix[0].Wire)))
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := policy.ParseRequest(mix[i%len(mix)].Wire, policy.DefaultLimits); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkServer is client and server in one process over a unix socket:
// 8 persistent connections, each waiting for its reply as Postfix does,
// with the mail log written to a file. It reports decisions/s and latency.
func BenchmarkServer(b *testing.B) {
	for _, withLog := range []bool{false, true} {
		name := "maillog=off"
		if withLog {
			name = "maillog=file"
		}
		b.Run(name, func(b *testing.B) {
			inv := benchInventory(b)
			mix := benchMix(b, inv)
			sock := filepath.Join(b.TempDir(), "policy")
			ln, err := policy.Listen("unix:" + sock)
			if err != nil {
				b.Fatal(err)
			}
			s := policy.NewServer(inv)
			s.Metrics = policy.NewMetrics()
			if withLog {
				f, err := os.Create(filepath.Join(b.TempDir(), "mail.log"))
				if err != nil {
					b.Fatal(err)
				}
				defer f.Close()
				s.MailLog = maillog.New(f)
				defer s.MailLog.Close()
			}
			go s.Serve(ln)
			defer s.Shutdown(context.Background())
			b.ResetTimer()
			res, err := loadgen.Run(loadgen.Config{Network: "unix", Addr: sock, Conns: 8, Requests: max(b.N, 8), Mix: mix})
			if err != nil {
				b.Fatal(err)
			}
			if res.Mismatches > 0 {
				b.Fatalf("%d wrong replies: %s", res.Mismatches, res.FirstBad)
			}
			b.ReportMetric(res.PerSecond, "decisions/s")
			b.ReportMetric(float64(res.P50.Microseconds()), "p50-µs")
			b.ReportMetric(float64(res.P99.Microseconds()), "p99-µs")
			b.ReportMetric(float64(res.SelfCPU.Nanoseconds())/1e3/float64(res.Requests), "cpu-µs/decision")
		})
	}
}

// The server process BenchmarkIdleConnections measures runs this test
// binary again with MAILNODE_POLICY_BENCH_SOCKET set.
func TestMain(m *testing.M) {
	if sock := os.Getenv("MAILNODE_POLICY_BENCH_SOCKET"); sock != "" {
		os.Exit(benchServerMain(sock))
	}
	os.Exit(m.Run())
}

func benchServerMain(sock string) int {
	policy.RaiseNoFile()
	inv, err := inventory.Load("testdata/inventory.yaml")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	ln, err := policy.Listen("unix:" + sock)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	s := policy.NewServer(inv)
	s.Metrics = policy.NewMetrics()
	s.MailLog = maillog.New(io.Discard)
	go func() {
		io.Copy(io.Discard, os.Stdin) // the parent closes stdin to stop us
		s.Shutdown(context.Background())
	}()
	s.Serve(ln)
	return 0
}

// BenchmarkIdleConnections starts policyd's server in its own process, opens
// 1,000 idle connections to it (a tier's policyd holds a few hundred: one
// per smtpd process), runs the load over 8 more, and reports the server's
// resident memory with the idle connections open, before and after the
// load (target < 64 MiB).
func BenchmarkIdleConnections(b *testing.B) {
	const idle = 1000
	if lim, _ := policy.RaiseNoFile(); lim < idle+100 {
		b.Skipf("open file limit %d < %d", lim, idle+100)
	}
	sock := filepath.Join(b.TempDir(), "policy")
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), "MAILNODE_POLICY_BENCH_SOCKET="+sock)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		b.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		b.Fatal(err)
	}
	defer func() { stdin.Close(); cmd.Wait() }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.Dial("unix", sock)
		if err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("server did not start: %v", err)
		}
		time.Sleep(10 * time.Millisecond)
	}
	closeIdle, err := loadgen.OpenIdle("unix", sock, idle)
	if err != nil {
		b.Fatal(err)
	}
	defer closeIdle()
	time.Sleep(200 * time.Millisecond) // let the server accept them all
	idleRSS, err := procstat.RSS(cmd.Process.Pid)
	if err != nil {
		b.Fatal(err)
	}
	inv := benchInventory(b)
	b.ResetTimer()
	res, err := loadgen.Run(loadgen.Config{Network: "unix", Addr: sock, Conns: 8, Requests: max(b.N, 8), Mix: benchMix(b, inv)})
	if err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	if res.Mismatches > 0 {
		b.Fatalf("%d wrong replies: %s", res.Mismatches, res.FirstBad)
	}
	rss, err := procstat.RSS(cmd.Process.Pid)
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(idleRSS)/(1<<20), "idle-RSS-MiB")
	b.ReportMetric(float64(rss)/(1<<20), "after-load-RSS-MiB")
	b.ReportMetric(res.PerSecond, "decisions/s")
	b.ReportMetric(float64(res.P99.Microseconds()), "p99-µs")
}
