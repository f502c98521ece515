package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/mailnode/mailnode/inventory"
	"github.com/mailnode/mailnode/milter"
	"github.com/urfave/cli/v2"
)

func milterdCommand() *cli.Command {
	return &cli.Command{
		Name:  "milterd",
		Usage: "serve the Postfix milter: DKIM signing, inbound verification, spam gate",
		Description: `Postfix uses milterd as smtpd_milters and non_smtpd_milters. It signs mail
whose From: domain is local and that comes from an authenticated session, a
trusted client or sendmail(1) on the node, with every DKIM selector of that
domain, and verifies the DKIM signatures of inbound mail (outside sender to a
local recipient), adding one Authentication-Results header.

milterd refuses to start, naming the file, when a configured key is missing,
readable by others or of the wrong type (create keys with: mailnode dkim keygen).
A unix socket is created mode 0660, group postfix; TCP only on loopback.`,
		Flags: []cli.Flag{
			inventoryFlag(),
			&cli.StringFlag{Name: "listen", Usage: "`unix:PATH` or inet:HOST:PORT (default: milter.listen of the inventory)"},
			&cli.DurationFlag{Name: "dns-timeout", Value: 5 * time.Second, Usage: "timeout of one DNS lookup through node.resolver"},
		},
		Action: func(c *cli.Context) error {
			inv, err := inventory.Load(c.String("inventory"))
			if err != nil {
				return cli.Exit(err.Error(), 1)
			}
			keys, err := milter.LoadKeys(inv)
			if err != nil {
				return cli.Exit(fmt.Sprintf("milterd: refusing to start:\n%v", err), 1)
			}
			listen := c.String("listen")
			if listen == "" {
				listen = inv.Milter.Listen
			}
			ln, err := milter.Listen(listen)
			if err != nil {
				return cli.Exit(err.Error(), 1)
			}
			log := slog.New(slog.NewTextHandler(os.Stderr, nil))
			f := milter.NewFilter(inv, keys, milter.ResolverLookup(inv.Node.Resolver, c.Duration("dns-timeout")))
			f.Log = log
			f.CheckTimeout = 2 * c.Duration("dns-timeout")
			srv := milter.NewServer(f)
			var nkeys int
			for _, k := range keys {
				nkeys += len(k)
			}
			log.Info("milterd listening", "listen", listen, "domains", len(keys), "keys", nkeys)
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			go func() {
				<-ctx.Done()
				sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				srv.Shutdown(sctx)
				ln.Close()
			}()
			return srv.Serve(ln)
		},
	}
}
