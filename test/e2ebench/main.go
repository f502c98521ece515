// Command e2ebench is mailnode's end-to-end throughput benchmark (issues 9, 24,
// `make bench-e2e`): five private real Postfix instances rendered from the
// same inventory (examples/inventory.yaml, rewritten to private paths and
// loopback ports by test/harness) inside a network namespace it creates,
// with only loopback up, so nothing leaves the machine:
//
//   - bare: Postfix alone (policy and milter disabled in the inventory);
//   - mailnode: Postfix + policyd + milterd as render-config wires them
//     (DKIM RSA + Ed25519, builtin spam engine, greylisting with a 1 s delay
//     primed once so every message is looked up and passes, rate limits far
//     above the load);
//   - floor: the mailnode stack with policyd and milterd replaced by
//     `mailnode-bench dunno-server` and `null-milter` on the same
//     sockets, which negotiate the same and do nothing: the cost of the
//     policy and milter protocols to Postfix, which no sidecar can avoid;
//   - classic: Postfix + Debian OpenDKIM (the same RSA key, unix socket,
//     smtpd_milters and non_smtpd_milters) + Debian postgrey (--delay=1,
//     primed the same way, inet as Debian configures it) as
//     check_policy_service after reject_unauth_destination, added to the
//     rendered main.cf with postconf -e;
//   - rspamd: Postfix + Debian's rspamd 3.4 as the one milter (proxy worker
//     in milter mode, self-scan) doing what mailnode does with its own
//     modules: DKIM signing with the same RSA and Ed25519 keys, greylisting
//     (1 s, primed with one message) and rate limits (far above the load) on
//     a private redis-server, and its full scan of inbound mail; the
//     outside path comes from OutsideAddr, an address rspamd does not
//     count as local (see rspamd.go and OutsideAddr).
//
// Postfix's own smtp-source sends N messages (one SMTP session per message,
// 1 or 8 in parallel, bodies of 2 KiB and 64 KiB) on two paths:
//
//   - trusted→relay: from 127.0.0.2, a trust host (node.trusted_networks),
//     alice@example.com to carol@partner.org (relay domain): signing path;
//   - outside→local: from 127.0.0.1, news@outside.test (DKIM-signed, SPF
//     pass, DMARC published by a DNS server on 127.0.0.1:53 in the namespace)
//     to alice@example.com: verification and spam path.
//
// Every stack delivers to its own smtp-sink: relay domains through their
// next hop, local mailboxes through virtual_transport (not Dovecot LMTP, so
// that mailbox I/O does not hide what the sidecars cost). Accepted msg/s is
// N over smtp-source's wall time; delivered msg/s is N over the time until
// the N-th message is at the sink. After each measurement the queue must be
// empty (postqueue -p) and every Postfix queue id must have arrived exactly
// once. The table shows medians of -runs runs with min–max and the load
// average; the last line gives the sidecars' peak RSS (VmHWM).
package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/mailnode/mailnode/test/harness"
)

func main() {
	if os.Getenv(harness.EnvNetns) == "" {
		// The floor stack's baselines are mailnode-bench's; build it out
		// here, where go build reaches the module cache, for the run inside.
		bin, err := harness.BenchBinary()
		if err != nil {
			fmt.Fprintf(os.Stderr, "e2ebench: %v\n", err)
			os.Exit(1)
		}
		os.Setenv(harness.EnvBenchBin, bin)
	}
	inside, code, err := harness.RunInNetns()
	if !inside {
		if err != nil {
			fmt.Fprintf(os.Stderr, "e2ebench: %v\n", err)
			if code == 0 {
				code = 1
			}
		}
		os.Exit(code)
	}
	quick := flag.Bool("quick", false, "smoke run: a few messages per scenario, one run")
	runs := flag.Int("runs", 3, "measured runs of every scenario and stack (medians are shown)")
	scale := flag.Float64("scale", 1, "multiply the messages per scenario")
	sizes := flag.String("sizes", "2048,65536", "body sizes in bytes")
	sessions := flag.String("sessions", "1,8", "parallel smtp-source sessions")
	stacks := flag.String("stacks", strings.Join(stackNames, ","), "stacks to start")
	waitLoad := flag.Float64("wait-load", 0, "before measuring, wait (at most -wait-max) until the 1-minute load average is below this")
	waitMax := flag.Duration("wait-max", 10*time.Minute, "longest wait for -wait-load")
	verbose := flag.Bool("v", false, "log every measurement")
	perfDir := flag.String("perf", "", "record every sidecar with `perf record -g` during each measurement into this directory (profiling; figures then include perf's overhead)")
	daemonEnv := flag.String("daemon-env", "", "`K=V,...` set in the environment policyd and milterd inherit (e.g. GOMAXPROCS=1)")
	flag.BoolVar(&rspamdUpstream, "rspamd-upstream", false, "rspamd stack: Debian's proxy layout (one milter proxy passing messages to the normal workers) instead of self-scanning proxies")
	flag.Parse()
	for _, kv := range strings.Split(*daemonEnv, ",") {
		if k, v, ok := strings.Cut(kv, "="); ok {
			os.Setenv(k, v) // read by the children at start; this process has started already
		}
	}
	cfg := Config{Runs: *runs, Scale: *scale, Quick: *quick, Stacks: strings.Split(*stacks, ","), PerfDir: *perfDir}
	if cfg.PerfDir != "" {
		os.MkdirAll(cfg.PerfDir, 0o755)
	}
	if cfg.Quick {
		cfg.Runs = 1
	}
	var perr error
	if cfg.Sizes, perr = ints(*sizes); perr == nil {
		cfg.Sessions, perr = ints(*sessions)
	}
	if perr != nil {
		fmt.Fprintln(os.Stderr, "e2ebench:", perr)
		os.Exit(2)
	}
	logf := func(f string, a ...any) { fmt.Fprintf(os.Stderr, "e2ebench: "+f+"\n", a...) }
	cfg.Logf = func(string, ...any) {}
	if *verbose {
		cfg.Logf = logf
	}
	missed, err := run(cfg, *waitLoad, *waitMax, logf)
	if err != nil {
		fmt.Fprintf(os.Stderr, "e2ebench: %v\n", err)
		os.Exit(1)
	}
	if missed > 0 && !cfg.Quick {
		fmt.Printf("\n%d target(s) missed (mailnode/floor ≥ %.2f, mailnode/classic ≥ %.2f, mailnode/rspamd ≥ %.2f)\n", missed, TargetVsFloor, TargetVsClassic, TargetVsRspamd)
	}
}

func run(cfg Config, waitLoad float64, waitMax time.Duration, logf func(string, ...any)) (int, error) {
	host, _ := os.Hostname()
	fmt.Printf("mailnode e2ebench: %s, %d CPUs, %s; load avg at start %.2f\n", host, runtime.NumCPU(), kernel(), loadavg())
	b, err := Setup(cfg)
	defer b.Close()
	if err != nil {
		return 0, err
	}
	if waitLoad > 0 {
		deadline := time.Now().Add(waitMax)
		for loadavg() >= waitLoad && time.Now().Before(deadline) {
			logf("load average %.2f ≥ %.2f, waiting", loadavg(), waitLoad)
			time.Sleep(15 * time.Second)
		}
	}
	scs := cfg.Scenarios()
	results, err := RunAll(b, scs, logf)
	if err != nil {
		return 0, err
	}
	missed := Report(os.Stdout, scs, results)
	ReportRSS(os.Stdout, b)
	lost, dup := 0, 0
	for _, r := range results {
		lost += r.Lost
		dup += r.Duplicates
		if r.Lost > 0 || r.Duplicates > 0 {
			fmt.Printf("delivery: %s, %s: %d lost, %d duplicated\n", r.Stack, r.Scenario, r.Lost, r.Duplicates)
		}
	}
	if len(b.Retried) > 0 {
		fmt.Printf("measured again after a 4xx from the stack (smtp-source stops at the first): %s\n", strings.Join(b.Retried, "; "))
	}
	fmt.Printf("delivery: %d measurements, %d lost, %d duplicated, queue empty after each; load avg at end %.2f\n", len(results), lost, dup, loadavg())
	if lost > 0 || dup > 0 {
		return missed, fmt.Errorf("%d message(s) lost, %d duplicated", lost, dup)
	}
	return missed, nil
}

// RunAll measures every scenario on every stack, run after run; within a
// run the stacks take turns in a rotating order, so that a change of load
// on the machine spreads over all of them.
func RunAll(b *Bench, scs []Scenario, logf func(string, ...any)) ([]Result, error) {
	var results []Result
	names := b.cfg.Stacks
	t0 := time.Now()
	for run := 0; run < b.cfg.Runs; run++ {
		for i, sc := range scs {
			for k := range names {
				name := names[(k+i+run)%len(names)]
				r, err := b.Measure(name, sc)
				var te *TempError
				if errors.As(err, &te) {
					b.Retried = append(b.Retried, fmt.Sprintf("run %d %s %s", run+1, name, sc))
					logf("temporary failure, measuring again: %v", err)
					r, err = b.Measure(name, sc)
				}
				if err != nil {
					return results, err
				}
				b.cfg.Logf("run %d %-9s %-40s accepted %7.1f/s delivered %7.1f/s load %.2f", run+1, name, sc, r.Accepted, r.Delivered, r.Load)
				results = append(results, r)
			}
		}
		logf("run %d of %d done after %v", run+1, b.cfg.Runs, time.Since(t0).Round(time.Second))
	}
	return results, nil
}

func ints(s string) ([]int, error) {
	var l []int
	for _, f := range strings.Split(s, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(f))
		if err != nil || n <= 0 {
			return nil, fmt.Errorf("bad number %q", f)
		}
		l = append(l, n)
	}
	return l, nil
}

func kernel() string {
	b, _ := os.ReadFile("/proc/sys/kernel/osrelease")
	return "Linux " + strings.TrimSpace(string(b))
}
