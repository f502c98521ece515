package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/mailnode/mailnode/inventory"
	"github.com/mailnode/mailnode/policy"
)

func policydCommand() *cli.Command {
	return &cli.Command{
		Name:  "policyd",
		Usage: "serve the Postfix policy delegation protocol: the from/to/auth ACL matrix",
		Description: `policyd answers Postfix's check_policy_service requests with the ACL matrix of
the inventory: DUNNO where the matrix accepts, "550 5.7.1 <text>" where it
rejects, never OK. Malformed requests get no reply (Postfix then applies its
default_action, 451 4.3.5).

Signals: SIGHUP reloads the inventory (a broken one is logged and the running
one kept; open connections stay open); SIGTERM and SIGINT drain: stop
accepting, finish the requests in flight, close, exit 0.

Logs: debug and warnings go to stderr (log/slog, logfmt); the mail log, one
line per decision, goes to --maillog.`,
		Flags: []cli.Flag{
			inventoryFlag(),
			&cli.StringFlag{Name: "listen", Usage: "`unix:PATH` or inet:HOST:PORT to listen on (default: policy.listen of the inventory)"},
			&cli.StringFlag{Name: "metrics", Usage: "`HOST:PORT` serving Prometheus /metrics and /healthz (default: policy.metrics_listen; off when empty)"},
			&cli.StringFlag{Name: "maillog", Value: "-", Usage: "`FILE` to append the mail log to; \"-\" is stdout, \"off\" disables it"},
			&cli.StringFlag{Name: "log-level", Value: "info", Usage: "debug, info, warn or error"},
			&cli.DurationFlag{Name: "idle-timeout", Value: 330 * time.Second, Usage: "close a connection idle this long between requests (Postfix closes its own after 300s)"},
			&cli.DurationFlag{Name: "request-timeout", Value: 10 * time.Second, Usage: "time a client has to send one whole request"},
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
	inv, err := inventory.Load(path)
	if err != nil {
		return cli.Exit(fmt.Sprintf("policyd: %v", err), 1)
	}
	listen := cx.String("listen")
	if listen == "" {
		listen = inv.Policy.Listen
	}
	metricsAddr := cx.String("metrics")
	if !cx.IsSet("metrics") {
		metricsAddr = inv.Policy.MetricsListen
	}
	if n, err := raiseNoFile(); err != nil {
		log.Warn("policyd: cannot raise the open file limit", "err", err)
	} else {
		log.Debug("policyd: open file limit", "limit", n)
	}

	srv := policy.NewServer(inv)
	srv.Log = log
	srv.IdleTimeout = cx.Duration("idle-timeout")
	srv.RequestTimeout = cx.Duration("request-timeout")
	metrics := policy.NewMetrics()
	srv.Metrics = metrics

	switch ml := cx.String("maillog"); ml {
	case "off", "":
	case "-":
		srv.MailLog = policy.NewMailLog(os.Stdout)
	default:
		f, err := os.OpenFile(ml, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o640)
		if err != nil {
			return cli.Exit(fmt.Sprintf("policyd: --maillog: %v", err), 1)
		}
		defer f.Close()
		srv.MailLog = policy.NewMailLog(f)
	}
	if srv.MailLog != nil {
		srv.MailLog.OnDrop = metrics.LogDropped
		defer srv.MailLog.Close()
	}

	ln, err := policy.Listen(listen)
	if err != nil {
		return cli.Exit(fmt.Sprintf("policyd: %v", err), 1)
	}
	var serving atomic.Bool
	serving.Store(true)
	if metricsAddr != "" {
		mln, err := net.Listen("tcp", metricsAddr)
		if err != nil {
			ln.Close()
			return cli.Exit(fmt.Sprintf("policyd: --metrics: %v", err), 1)
		}
		hs := &http.Server{Handler: metrics.Handler(serving.Load), ReadHeaderTimeout: 10 * time.Second}
		go hs.Serve(mln)
		defer hs.Close()
		log.Info("policyd: metrics", "addr", mln.Addr().String())
	}

	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	log.Info("policyd: serving", "listen", listen, "inventory", path,
		"local_domains", len(inv.LocalDomains()), "relay_domains", len(inv.RelayDomains()),
		"sender_login", inv.Policy.SenderLogin)

	sigs := make(chan os.Signal, 4)
	signal.Notify(sigs, syscall.SIGHUP, syscall.SIGTERM, syscall.SIGINT)
	defer signal.Stop(sigs)
	for {
		select {
		case err := <-done:
			serving.Store(false)
			return cli.Exit(fmt.Sprintf("policyd: %v", err), 1)
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				reloadInventory(log, srv, metrics, path)
				continue
			}
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
func reloadInventory(log *slog.Logger, srv *policy.Server, m *policy.Metrics, path string) {
	inv, err := inventory.Load(path)
	if err != nil {
		m.Reloaded(false)
		for _, p := range inventory.AsProblems(err) {
			log.Error("policyd: reload failed; keeping the running inventory", "problem", p.Error())
		}
		return
	}
	if inv.Policy.Listen != srv.Inventory().Policy.Listen {
		log.Warn("policyd: policy.listen changed; restart policyd to move the socket", "listen", inv.Policy.Listen)
	}
	srv.SetInventory(inv)
	m.Reloaded(true)
	log.Info("policyd: inventory reloaded", "inventory", path,
		"local_domains", len(inv.LocalDomains()), "relay_domains", len(inv.RelayDomains()),
		"sender_login", inv.Policy.SenderLogin)
}

// raiseNoFile lifts the soft open-file limit to the hard one: every smtpd
// process holds a policy connection, and a benchmark opens thousands.
func raiseNoFile() (uint64, error) {
	var l syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
		return 0, err
	}
	if l.Cur < l.Max {
		l.Cur = l.Max
		if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &l); err != nil {
			return 0, err
		}
	}
	return l.Cur, nil
}
