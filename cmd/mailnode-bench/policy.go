package main

import (
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	gomilter "github.com/d--j/go-milter"
	"github.com/urfave/cli/v2"

	"github.com/mailnode/mailnode/inventory"
	"github.com/mailnode/mailnode/milter"
	"github.com/mailnode/mailnode/policy"
	"github.com/mailnode/mailnode/test/loadgen"
	"github.com/mailnode/mailnode/test/procstat"
)

func policyCommand() *cli.Command {
	return &cli.Command{
		Name:  "policy",
		Usage: "replay a realistic mix of Postfix policy requests against a running policyd",
		Description: `Opens -c persistent connections to --addr and sends -n requests in total,
each connection waiting for every reply before its next request, as Postfix
does. The mix is mostly inbound mail to local mailboxes, with relay-domain
traffic, relay attempts, forged local senders, authenticated submission and
trusted hosts (see test/loadgen). With --inventory (the server's) every
reply is checked against policy.Decide; without it the names of
examples/inventory.yaml are used and replies are only counted.

--idle N opens N more connections that stay silent through the run, and
--pid PID prints that process's RSS (VmRSS) before and after, and its CPU
time per decision.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "addr", Required: true, Usage: "`unix:PATH` or inet:HOST:PORT of policyd"},
			&cli.IntFlag{Name: "c", Value: 8, Usage: "persistent connections"},
			&cli.IntFlag{Name: "n", Value: 200000, Usage: "requests in total"},
			&cli.StringFlag{Name: "inventory", Aliases: []string{"i"}, Usage: "the server's inventory `FILE`: check every reply"},
			&cli.IntFlag{Name: "idle", Usage: "idle connections to hold open during the run"},
			&cli.IntFlag{Name: "pid", Usage: "policyd's process id, to report its memory"},
			&cli.DurationFlag{Name: "settle", Usage: "with --idle: wait this long before the run and report RSS again (how memory settles with idle connections)"},
			&cli.IntFlag{Name: "mix", Value: 4096, Usage: "distinct requests in the mix"},
			&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "seed of the mix"},
		},
		Action: runBenchPolicy,
	}
}

func dunnoServerCommand() *cli.Command {
	return &cli.Command{
		Name:  "dunno-server",
		Usage: "the baseline: a policy server that answers DUNNO to everything without looking",
		Description: `Run it in place of policyd and point "mailnode-bench policy" at it to see
what the machine gives a do-nothing Go server at the same moment: the ceiling
policyd's figures should be read against on a shared machine.`,
		Flags:  []cli.Flag{&cli.StringFlag{Name: "listen", Required: true, Usage: "`unix:PATH` or inet:HOST:PORT"}},
		Action: runDunnoServer,
	}
}

func nullMilterCommand() *cli.Command {
	return &cli.Command{
		Name:  "null-milter",
		Usage: "the baseline: a milter that accepts everything without looking",
		Description: `Negotiates with Postfix exactly what milterd negotiates (the same events,
replies and macros: milter.ServerOptions) and accepts every message at its
end. Run in milterd's place, it shows what the milter protocol alone costs
Postfix (make bench-e2e's "floor" stack runs it beside dunno-server).`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "listen", Required: true, Usage: "`unix:PATH` or inet:HOST:PORT"},
			&cli.StringFlag{Name: "sign", Usage: "an RSA key `FILE` (PEM, as dkim.key_dir holds): instead of nothing, sign a fixed digest with it at each message's end and insert a DKIM-Signature field, served by milterd's own server (its negotiation and connection guard): milterd's signing path without its work (mailnode-bench milter's sign-only line)"},
			&cli.StringFlag{Name: "domain", Value: "bench.example", Usage: "d= of the --sign field"},
			&cli.StringFlag{Name: "selector", Value: "bench", Usage: "s= of the --sign field"},
		},
		Action: runNullMilter,
	}
}

func runDunnoServer(cx *cli.Context) error {
	ln, err := listenUntilSignal(policy.Listen, cx.String("listen"))
	if err != nil {
		return err
	}
	loadgen.ServeDunno(ln, 0) // until the signal closes ln
	return nil
}

func runNullMilter(cx *cli.Context) error {
	ln, err := listenUntilSignal(milter.Listen, cx.String("listen"))
	if err != nil {
		return err
	}
	if key := cx.String("sign"); key != "" {
		s, err := newSignOnly(key, cx.String("domain"), cx.String("selector"))
		if err != nil {
			ln.Close()
			return cli.Exit(fmt.Sprintf("bench: --sign: %v", err), 1)
		}
		return serveSignOnly(ln, s) // nil once the signal closes ln
	}
	// What any milter costs the MTA, whatever it does, for the end-to-end
	// benchmark's floor: milterd's negotiation, no work. Returns when ln is
	// closed.
	srv := gomilter.NewServer(milter.ServerOptions(func() gomilter.Milter { return gomilter.NoOpMilter{} })...)
	if err := srv.Serve(ln); err != nil && !errors.Is(err, gomilter.ErrServerClosed) && !errors.Is(err, net.ErrClosed) {
		return err
	}
	return nil
}

func runBenchPolicy(cx *cli.Context) error {
	network, addr, err := inventory.ParseListen(cx.String("addr"))
	if err != nil {
		return cli.Exit(fmt.Sprintf("bench: --addr: %v", err), 2)
	}
	names := loadgen.ExampleNames
	var inv *inventory.Inventory
	if p := cx.String("inventory"); p != "" {
		if inv, err = inventory.Load(p); err != nil {
			return cli.Exit(fmt.Sprintf("bench: %v", err), 1)
		}
		names = loadgen.NamesFrom(inv)
	}
	mix, err := loadgen.BuildMix(names, inv, loadgen.DefaultShares, cx.Int("mix"), cx.Uint64("seed"))
	if err != nil {
		return cli.Exit(fmt.Sprintf("bench: %v", err), 1)
	}
	idle, pid := cx.Int("idle"), cx.Int("pid")
	if idle > 0 {
		if _, err := policy.RaiseNoFile(); err != nil {
			fmt.Fprintf(os.Stderr, "bench: cannot raise the open file limit: %v\n", err)
		}
	}
	rss := func(when string) {
		if pid == 0 {
			return
		}
		if b, err := procstat.RSS(pid); err == nil {
			fmt.Printf("server RSS %-22s %6.1f MiB\n", when+":", float64(b)/(1<<20))
		} else {
			fmt.Fprintf(os.Stderr, "bench: RSS of %d: %v\n", pid, err)
		}
	}
	fmt.Printf("policy bench: %s, %d connections, %d requests, mix of %d\n", cx.String("addr"), cx.Int("c"), cx.Int("n"), len(mix))
	rss("at start")
	if idle > 0 {
		t0 := time.Now()
		closeIdle, err := loadgen.OpenIdle(network, addr, idle)
		if err != nil {
			return cli.Exit(fmt.Sprintf("bench: %v", err), 1)
		}
		defer closeIdle()
		time.Sleep(200 * time.Millisecond) // let the server accept them all
		fmt.Printf("opened %d idle connections in %v\n", idle, time.Since(t0).Round(time.Millisecond))
		rss(fmt.Sprintf("with %d idle", idle))
		if d := cx.Duration("settle"); d > 0 {
			time.Sleep(d)
			rss(fmt.Sprintf("%d idle after %v", idle, d))
		}
	}
	cpu0, _ := procstat.CPU(pid)
	res, err := loadgen.Run(loadgen.Config{Network: network, Addr: addr, Conns: cx.Int("c"), Requests: cx.Int("n"), Mix: mix})
	if err != nil {
		return cli.Exit(fmt.Sprintf("bench: %v", err), 1)
	}
	res.Report(os.Stdout)
	if pid != 0 {
		if cpu1, err := procstat.CPU(pid); err == nil {
			fmt.Printf("server CPU:  %.1f µs/decision\n", float64((cpu1-cpu0).Microseconds())/float64(res.Requests))
		}
	}
	rss("after the run")
	if inv != nil {
		fmt.Printf("checked:     %d mismatches\n", res.Mismatches)
		if res.Mismatches > 0 {
			return cli.Exit(fmt.Sprintf("bench: wrong replies, first: %s", res.FirstBad), 1)
		}
	}
	return nil
}
