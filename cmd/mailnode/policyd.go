package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"runtime"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/mailnode/mailnode/internal/daemon"
	"github.com/mailnode/mailnode/internal/drift"
	"github.com/mailnode/mailnode/internal/sdnotify"
	"github.com/mailnode/mailnode/internal/statuspage"
	"github.com/mailnode/mailnode/inventory"
	"github.com/mailnode/mailnode/maillog"
	"github.com/mailnode/mailnode/policy"
	"github.com/mailnode/mailnode/state"
)

func policydCommand() *cli.Command {
	return &cli.Command{
		Name:  "policyd",
		Usage: "serve the Postfix policy delegation protocol: the from/to/auth ACL matrix",
		Description: `policyd answers Postfix's check_policy_service requests with the ACL matrix of
the inventory: DUNNO where the matrix accepts, "550 5.7.1 <text>" where it
rejects, never OK. Malformed requests get no reply (Postfix then applies its
default_action, 451 4.3.5).

Greylisting (policy.greylist) and rate limits (policy.ratelimit) keep their
state in policy.state: a bbolt file this process owns (a second process on
the same file fails at start, naming the file), or Redis shared by several
nodes. When the store fails, the request gets no reply and Postfix answers
451 4.3.5 (default_action): never a pass, never a 5xx.

Drift guard: policyd logs the digest of its inventory at start and on reload
and compares it, then every --drift-interval, with the one render-config left
in postfix.config_directory (mailnode-inventory.digest). While they differ
it warns in the log, sets mailnode_policy_inventory_drift to 1 and adds a
"warning:" line to /healthz (still 200).

Signals: SIGHUP reloads the inventory (a broken one is logged and the running
one kept; open connections stay open; greylisting and rate limit settings
change, the store stays open: changing policy.state needs a restart);
SIGTERM and SIGINT drain: stop accepting, finish the requests in flight,
close the store, exit 0. SIGUSR1 logs one status line: goroutines, heap in
use, open descriptors, open connections.

Memory: policyd keeps only the lookup tables it decides with. A start or a
reload loads the new inventory while the running one answers, with the
garbage collector at GOGC=25 and a soft limit (GOMEMLIMIT) of 64 MiB, or
twice what policyd holds if that is more, unless the environment sets
GOMEMLIMIT; the freed pages go back to the system once the new inventory
is in.

Logs: debug and warnings go to stderr (log/slog, logfmt); the mail log, one
line per decision, goes to --maillog.

Status page: with --metrics or policy.metrics_listen, / is a read-only page:
policyd's and milterd's state with their inventory digests (milterd probed at
--peer-metrics, default milter.metrics_listen), the decisions per matrix cell
over the last hour (a table and a chart), the latest 50 rejections, each
linking to /why?q=QUEUE-ID|ADDRESS (the story mailnode why tells, read from
--why-maillog), the greylist's size, the metrics' values. /healthz?format=json
adds the inventory digest.`,
		Flags: []cli.Flag{
			inventoryFlag(),
			nodeFlag(),
			&cli.StringFlag{Name: "listen", Usage: "`unix:PATH` or inet:HOST:PORT to listen on (default: policy.listen of the inventory)"},
			&cli.StringFlag{Name: "metrics", Usage: "`HOST:PORT` serving Prometheus /metrics, /healthz and a read-only status page at / (default: policy.metrics_listen; off when empty)"},
			&cli.StringFlag{Name: "maillog", Value: "-", Usage: "`FILE` to append the mail log to; \"-\" is stdout, \"off\" disables it"},
			&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error"},
			&cli.DurationFlag{Name: "idle-timeout", Value: 330 * time.Second, Usage: "close a connection idle this long between requests (Postfix closes its own after 300s)"},
			&cli.DurationFlag{Name: "request-timeout", Value: 10 * time.Second, Usage: "time a client has to send one whole request"},
			driftIntervalFlag(),
			whyMaillogFlag(),
			peerMetricsFlag("milterd", "milter.metrics_listen"),
			&cli.DurationFlag{Name: "drain-timeout", Value: 10 * time.Second, Usage: "on SIGTERM, how long requests in flight may take before connections are cut"},
		},
		Action: runPolicyd,
	}
}

func runPolicyd(cx *cli.Context) error {
	var level slog.Level
	if err := level.UnmarshalText([]byte(cx.String("log-level"))); err != nil {
		return cli.Exit(fmt.Sprintf("policyd: --log-level: %v", err), 2)
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: level}))

	path := cx.String("inventory")
	inv, loaded, err := loadForDaemon(path, cx.String("node"), inventory.KeepDecisions, nil)
	if err != nil {
		return cli.Exit(fmt.Sprintf("policyd: %v", err), 1)
	}
	if inv.NullClient() {
		return cli.Exit(fmt.Sprintf("policyd: %s: %s is a null client (node.role: nullclient): its Postfix asks no policy service; run only milterd there", path, inv.Node.Hostname), 2)
	}
	inv.Prefault()
	listen := cx.String("listen")
	if listen == "" {
		listen = inv.Policy.Listen
	}
	metricsAddr := cx.String("metrics")
	if !cx.IsSet("metrics") {
		metricsAddr = inv.Policy.MetricsListen
	}
	if n, err := policy.RaiseNoFile(); err != nil {
		log.Warn("policyd: cannot raise the open file limit", "err", err)
	} else {
		log.Debug("policyd: open file limit", "limit", n)
	}

	srv := policy.NewServer(inv)
	srv.Log = log
	var store state.Store
	if policy.NeedsState(inv) {
		if store, err = openState(inv); err != nil {
			return cli.Exit(fmt.Sprintf("policyd: %v", err), 1)
		}
		defer store.Close()
		if n := commitProcs(store, os.Getenv("GOMAXPROCS"), runtime.GOMAXPROCS(0)); n != runtime.GOMAXPROCS(0) {
			runtime.GOMAXPROCS(n)
			log.Debug("policyd: one more Go processor than cores for the bbolt commits", "gomaxprocs", n)
		}
		if b, ok := store.(*state.Bolt); ok {
			if nice, err := b.CommitNice(); err != nil {
				log.Warn("policyd: bbolt commits run at policyd's priority", "err", err)
			} else {
				log.Debug("policyd: bbolt commits run at a lower priority", "nice", fmt.Sprintf("+%d", nice))
			}
		}
		if err := srv.UseState(store, nil); err != nil {
			return cli.Exit(fmt.Sprintf("policyd: %v", err), 1)
		}
	}
	srv.IdleTimeout = cx.Duration("idle-timeout")
	srv.RequestTimeout = cx.Duration("request-timeout")
	metrics := policy.NewMetrics()
	srv.Metrics = metrics

	switch ml := cx.String("maillog"); ml {
	case "off", "":
	case "-":
		srv.MailLog = maillog.New(os.Stdout)
	default:
		f, err := os.OpenFile(ml, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
		if err != nil {
			return cli.Exit(fmt.Sprintf("policyd: --maillog: %v", err), 1)
		}
		defer f.Close()
		srv.MailLog = maillog.New(f)
	}
	if srv.MailLog != nil {
		srv.MailLog.OnDrop = metrics.LogDropped
		defer srv.MailLog.Close()
	}

	// The signals are ours before anything listens: a SIGHUP from an
	// admin or systemd's reload right after start would otherwise end the
	// process (Go's default for SIGHUP) instead of reloading it.
	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	ln, err := policy.Listen(listen)
	if err != nil {
		return cli.Exit(fmt.Sprintf("policyd: %v", err), 1)
	}
	var serving atomic.Bool
	serving.Store(true)
	guard := &drift.Guard{Daemon: "policyd", Log: log, OnCheck: func(s drift.State) {
		metrics.Inventory(s.Running, s.Installed, s.Warning())
	}}
	guard.Set(inv.Digest, inv.Postfix.ConfigDirectory)
	defer guard.Start(cx.Duration("drift-interval"))()

	var curStore atomic.Pointer[storeRef] // the page reads it; SIGHUP may open one
	curStore.Store(&storeRef{store})
	page := statuspage.New("policyd", version, metrics.Registry, "mailnode_policy_")
	page.Set("inventory", path)
	page.Set("listen", listen)
	policydStatus(page, inv, store)
	page.Digest = guardDigests(guard)
	page.Peer = func() *statuspage.Peer {
		inv := srv.Inventory()
		return peerOf(cx, "milterd", inv.MilterEnabled(), "milter.enabled", inv.Milter.MetricsListen, "milter.metrics_listen")
	}
	page.Decisions, page.Series, page.Rejections = metrics.Recent(), policy.CellNames(), metrics.Rejections()
	page.Why = &statuspage.Why{Logs: cx.StringSlice("why-maillog")}
	page.Greylist = func(ctx context.Context) ([]statuspage.Row, error) {
		return greylistRows(ctx, srv.Inventory(), curStore.Load().Store)
	}
	if metricsAddr != "" {
		stop, err := daemon.ServeMetrics(log, "policyd", metricsAddr, metrics.Handler(serving.Load), page)
		if err != nil {
			ln.Close()
			return cli.Exit(fmt.Sprintf("policyd: --metrics: %v", err), 1)
		}
		defer stop()
	}

	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	log.Info("policyd: serving", "listen", listen, "inventory", path,
		"local_domains", len(inv.LocalDomains()), "relay_domains", len(inv.RelayDomains()),
		"sender_login", inv.Policy.SenderLogin, "mode", inv.Policy.Mode, "greylist", greylistSummary(inv), "ratelimit", inv.Policy.Ratelimit != nil,
		"state", stateSummary(inv, store))
	log.Info("policyd: inventory loaded", loaded.attrs()...)
	defer daemon.StatusOnSIGUSR1(log, "policyd", srv.OpenConnections)()
	releaseMemory()
	daemon.Notify(log, "policyd", sdnotify.Ready)

	for {
		select {
		case err := <-done:
			serving.Store(false)
			return cli.Exit(fmt.Sprintf("policyd: %v", err), 1)
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				daemon.Notify(log, "policyd", sdnotify.Reloading)
				before := srv.Inventory()
				if st := reloadInventory(log, srv, metrics, path, cx.String("node"), store); st != nil {
					store = st
					curStore.Store(&storeRef{st})
					defer st.Close()
				}
				running := srv.Inventory()
				guard.Set(running.Digest, running.Postfix.ConfigDirectory)
				result := " ok"
				if srv.Inventory() == before {
					result = " refused, the running inventory kept (see the log)"
				}
				policydStatus(page, srv.Inventory(), store)
				page.Set("last reload", time.Now().UTC().Format(time.RFC3339)+result)
				releaseMemory()
				daemon.Notify(log, "policyd", sdnotify.Ready)
				continue
			}
			daemon.Notify(log, "policyd", sdnotify.Stopping)
			log.Info("policyd: draining", "signal", sig.String(), "open_connections", srv.OpenConnections())
			serving.Store(false)
			ctx, cancel := context.WithTimeout(context.Background(), cx.Duration("drain-timeout"))
			err := srv.Shutdown(ctx)
			cancel()
			if err := <-done; !errors.Is(err, policy.ErrServerClosed) {
				log.Warn("policyd: serve", "err", err)
			}
			if err != nil {
				log.Warn("policyd: drain cut short; connections closed", "err", err)
			}
			log.Info("policyd: stopped")
			return nil
		}
	}
}

// reloadInventory is SIGHUP: load, validate, swap; keep the old one on error.
// The store stays open (one owner of a bbolt file); when the reloaded
// inventory is the first to turn greylisting or rate limits on, the store
// is opened now and returned (the caller closes it at exit).
func reloadInventory(log *slog.Logger, srv *policy.Server, m *policy.Metrics, path, node string, store state.Store) (opened state.Store) {
	inv, loaded, err := loadForDaemon(path, node, inventory.KeepDecisions, srv.Inventory())
	if err != nil {
		m.Reloaded(false)
		for _, p := range inventory.AsProblems(err) {
			log.Error("policyd: reload failed; keeping the running inventory", "problem", p.Error())
		}
		return nil
	}
	if inv.NullClient() {
		inv.Release()
		m.Reloaded(false)
		log.Error("policyd: reload failed; keeping the running inventory", "problem", path+": node.role is nullclient now, and a null client runs no policyd")
		return nil
	}
	old := srv.Inventory()
	if inv.Policy.Listen != old.Policy.Listen {
		log.Warn("policyd: policy.listen changed; restart policyd to move the socket", "listen", inv.Policy.Listen)
	}
	if store != nil && !inv.Policy.State.Equal(old.Policy.State) {
		log.Warn("policyd: policy.state changed; the open store stays until policyd restarts", "running", stateSummary(old, store))
	}
	if store == nil && policy.NeedsState(inv) {
		st, err := openState(inv)
		if err == nil {
			err = srv.UseState(st, nil)
			if err != nil {
				st.Close()
			}
		}
		if err != nil {
			inv.Release()
			m.Reloaded(false)
			log.Error("policyd: reload failed; keeping the running inventory", "problem", err.Error())
			return nil
		}
		opened = st
	}
	if err := srv.SetInventory(inv); err != nil {
		inv.Release()
		m.Reloaded(false)
		log.Error("policyd: reload failed; keeping the running inventory", "problem", err.Error())
		return opened
	}
	// The old tables go once the requests deciding with them have
	// answered; only then are the new ones read in whole, so that the two
	// are never resident together.
	select {
	case <-old.Release():
	case <-time.After(srv.RequestTimeout + time.Second):
		log.Warn("policyd: a request still holds the replaced inventory; its tables go when it answers")
	}
	inv.Prefault()
	m.Reloaded(true)
	log.Info("policyd: inventory reloaded", "inventory", path,
		"local_domains", len(inv.LocalDomains()), "relay_domains", len(inv.RelayDomains()),
		"sender_login", inv.Policy.SenderLogin, "mode", inv.Policy.Mode, "greylist", greylistSummary(inv), "ratelimit", inv.Policy.Ratelimit != nil)
	log.Info("policyd: inventory loaded", loaded.attrs()...)
	return opened
}

// policydStatus fills in the status page's rows from the running inventory.
func policydStatus(page *statuspage.Page, inv *inventory.Inventory, store state.Store) {
	page.Set("mode", inv.Policy.Mode)
	page.Set("sender_login", inv.Policy.SenderLogin)
	page.Set("domains", fmt.Sprintf("%d local, %d relay", len(inv.LocalDomains()), len(inv.RelayDomains())))
	page.Set("greylist", greylistSummary(inv))
	page.Set("ratelimit", fmt.Sprint(inv.Policy.Ratelimit != nil))
	page.Set("state", stateSummary(inv, store))
}

// openState opens policy.state; the error names the file or URL.
func openState(inv *inventory.Inventory) (state.Store, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	st, err := state.Open(ctx, inv.Policy.State, nil)
	if err != nil {
		return nil, fmt.Errorf("policy.state (%s): %w", stateSummary(inv, nil), err)
	}
	return st, nil
}

// commitProcs is the number of Go processors (GOMAXPROCS) policyd runs
// with: with a bbolt store, one more than the runtime's default (cur),
// unless the environment sets GOMAXPROCS (env). A bbolt commit is one
// goroutine that keeps a processor busy for tens to hundreds of
// milliseconds at a time; with one processor per core, decisions woken
// meanwhile wait for the others. With one more, they keep every core, and
// the kernel, sharing the cores, preempts the commit for them as they wake
// (the more readily as the store commits on a thread at a lower priority,
// state/boltprio.go). At 10 M entries and 10,000 decisions/s on two
// cores, paced, p99 new / known went from 2.8–5.2 / 2.9–7.5 ms to
// 2.0–2.5 / 2.2–2.6 ms (three alternating runs; docs/scaling.md).
func commitProcs(st state.Store, env string, cur int) int {
	if _, ok := st.(*state.Bolt); !ok || env != "" {
		return cur
	}
	return cur + 1
}

func stateSummary(inv *inventory.Inventory, st state.Store) string {
	if !policy.NeedsState(inv) && st == nil {
		return "unused"
	}
	return state.Name(inv.Policy.State)
}

func greylistSummary(inv *inventory.Inventory) string {
	g := inv.Policy.Greylist
	if g == nil || !g.Enabled {
		return "off"
	}
	return fmt.Sprintf("delay %s", g.Delay.D())
}

// storeRef holds the store policyd uses (nil: none), for the status page.
type storeRef struct{ state.Store }

// greylistRows are the status page's greylist section: the triplets and
// auto-whitelisted clients in the store (state.Count).
func greylistRows(ctx context.Context, inv *inventory.Inventory, st state.Store) ([]statuspage.Row, error) {
	if g := inv.Policy.Greylist; g == nil || !g.Enabled || st == nil {
		return []statuspage.Row{{Name: "greylisting", Value: "off"}}, nil
	}
	rows := []statuspage.Row{{Name: "greylisting", Value: greylistSummary(inv) + ", " + stateSummary(inv, st)}}
	for _, c := range []struct{ name, prefix string }{{"triplets", state.PrefixTriplet}, {"auto-whitelisted clients", state.PrefixClient}} {
		n, err := state.Count(ctx, st, c.prefix)
		if err != nil {
			return rows, err
		}
		rows = append(rows, statuspage.Row{Name: c.name, Value: fmt.Sprint(n)})
	}
	return rows, nil
}

func driftIntervalFlag() cli.Flag {
	return &cli.DurationFlag{Name: "drift-interval", Value: drift.Interval, EnvVars: []string{"MAILNODE_DRIFT_INTERVAL"},
		Usage: "how often to compare the inventory's digest with the installed Postfix config's (also at start and on reload)"}
}
