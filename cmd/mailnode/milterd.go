package main

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/mailnode/mailnode/dkim"
	"github.com/mailnode/mailnode/internal/daemon"
	"github.com/mailnode/mailnode/internal/drift"
	"github.com/mailnode/mailnode/internal/sdnotify"
	"github.com/mailnode/mailnode/internal/statuspage"
	"github.com/mailnode/mailnode/inventory"
	"github.com/mailnode/mailnode/maillog"
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
domain. Inbound mail that the ACL matrix spam-checks (outside sender,
unauthenticated, to a local recipient) gets SPF, DKIM and DMARC in one
Authentication-Results header and the spam gate (spam.engine builtin, rspamd or
spamd): X-Spam-Score/Status/Symbols, the subject tag over tag_score, 550 5.7.1
over reject_score or for a failing DMARC p=reject (the hold queue instead with
spam.quarantine). All DNS goes to node.resolver.

With spam.antivirus, every spam-checked message and (scan_outbound, the
default) every signed one is streamed to clamd as it arrives: a virus gets
550 5.7.1 Virus found: <signature>; clamd down or failing gets 451 4.7.1
(on_failure tempfail, the default) or passes unscanned (accept).

milterd refuses to start, naming the file, when a configured key is missing,
readable by others or of the wrong type (create keys with: mailnode dkim keygen).
A unix socket is created mode 0660, group postfix; TCP only on loopback.

SRS (forwarding.srs, default on; milter.enabled on a mail node): a message
from an outside sender that an alias or list forwards off the node leaves
with its envelope sender rewritten to SRS0=HHHH=TT=domain=local@ the alias's
domain (the whole message: local copies carry it too). milterd also serves
Postfix's virtual_alias_maps a socketmap (mailnode-srs beside the milter
socket) that turns such an address, when its hash verifies and it is at most
21 days old, back into the original sender; any other is an unknown user.
The secrets are forwarding.srs_secret_file (one a line, at least 16 bytes,
the first signs, all verify; mode 0640 or stricter), read at start and on
reload; milterd refuses to start without it. Every node of a tier needs the
same file.

The garbage collector runs at GOGC=400 with a soft limit of 256 MiB
(GOMEMLIMIT) unless the environment sets either: milterd's live heap is small,
and fewer collections keep their pauses off the messages. A reload runs at
GOGC=10 with a soft limit of 64 MiB (or twice what milterd holds, if that
is more; GOMEMLIMIT in the environment is left alone), and the freed pages go
back to the system after each of its steps. It keeps what did not change:
the domains when the new inventory's are the same (a change of mailboxes,
aliases or settings), and each key whose file holds the same key pair. It
installs the new inventory first, with the keys signing before, and the
new keys once DNS has been asked about them (publish before sign).

Publish before sign: at start, on reload and every --dkim-check-interval,
milterd asks node.resolver for each selector's TXT record. A selector whose
record is missing or carries another key than the one on disk does not sign
while another selector of its domain is published (a new selector waits for
its record); when none of a domain's selectors is published, all sign, as
before the check. Over a DNS failure a selector keeps its last answer. The
log says each selector's state at start, every change, and at reload each
selector new, changed or held back ("dkim selector held back until DNS
publishes its key") with a line counting them all ("dkim selectors
checked"); mailnode dkim status and the status page list every selector.

Drift guard: milterd logs the digest of its inventory at start and on reload
and compares it, then every --drift-interval, with the one render-config left
in postfix.config_directory (mailnode-inventory.digest); while they differ it
logs a warning ("inventory drift") when the drift starts or changes and on
every reload.

Signals: SIGHUP reloads the inventory and the keys (connections opened
afterwards use them; when either is broken the running ones are kept and the
error is logged); SIGTERM and SIGINT stop accepting and let open sessions end.
SIGUSR1 logs one status line: goroutines, heap in use, open descriptors.

Metrics: with --metrics or milter.metrics_listen, Prometheus /metrics
(mailnode_milter_*: messages by action, signatures by domain, selector and
algorithm, SPF/DKIM/DMARC results, spam verdicts, virus scans, engine, clamd
and DNS latency, errors by kind, shadow mode's would-rejects), /healthz
(?format=json adds the inventory digest), and at / a read-only status page:
version, uptime, mode, keys, last reload, milterd's and policyd's state with
their inventory digests (policyd probed at --peer-metrics, default
policy.metrics_listen), the DKIM selectors with what DNS shows of them, the
metrics' values.`,
		Flags: []cli.Flag{
			inventoryFlag(),
			nodeFlag(),
			&cli.StringFlag{Name: "listen", Usage: "`unix:PATH` or inet:HOST:PORT (default: milter.listen of the inventory)"},
			&cli.StringFlag{Name: "metrics", Usage: "`HOST:PORT` serving Prometheus /metrics, /healthz and a read-only status page at / (default: milter.metrics_listen; off when empty)"},
			&cli.DurationFlag{Name: "dns-timeout", Value: 5 * time.Second, Usage: "timeout of one DNS lookup through node.resolver"},
			driftIntervalFlag(),
			peerMetricsFlag("policyd", "policy.metrics_listen"),
			&cli.DurationFlag{Name: "dkim-check-interval", Value: milter.PublishInterval, EnvVars: []string{"MAILNODE_DKIM_CHECK_INTERVAL"},
				Usage: "how often to ask node.resolver whether each DKIM selector is published (also at start and on reload)"},
		},
		Action: func(c *cli.Context) error {
			milter.TuneRuntime()
			inv, loaded, err := loadForDaemon(c.String("inventory"), c.String("node"), inventory.KeepDomains, nil)
			if err != nil {
				return cli.Exit(err.Error(), 1)
			}
			keys, err := milter.LoadKeys(inv, nil)
			if err != nil {
				return cli.Exit(fmt.Sprintf("milterd: refusing to start:\n%v", err), 1)
			}
			srsSecrets, err := milter.LoadSRS(inv)
			if err != nil {
				return cli.Exit(fmt.Sprintf("milterd: refusing to start:\n%v", err), 1)
			}
			listen := c.String("listen")
			if listen == "" {
				listen = inv.Milter.Listen
			}
			// SIGHUP is ours before anything listens: a reload right after
			// start (an admin, systemd) would otherwise end the process, Go's
			// default for SIGHUP. It waits in hup until the reloader runs.
			hup := make(chan os.Signal, 1)
			signal.Notify(hup, syscall.SIGHUP)
			defer signal.Stop(hup)
			ln, err := milter.Listen(listen)
			if err != nil {
				return cli.Exit(err.Error(), 1)
			}
			// The log (a decision line per message) is written every
			// maillog.FlushInterval rather than a system call per line.
			logw := maillog.New(os.Stderr)
			defer logw.Close()
			log := slog.New(slog.NewTextHandler(logw, nil))
			// One caching resolver on node.resolver for every check, DKIM
			// key lookups included, kept across reloads while
			// node.resolver stays the same.
			metrics := milter.NewMetrics()
			b := &milter.Builder{DNSTimeout: c.Duration("dns-timeout"), Log: log, Metrics: metrics}
			defer b.Close()
			// forwarding.srs: the secrets for the Filters, and the
			// reversal Postfix asks over a socketmap.
			b.SetSRS(srsSecrets)
			srsMap := &milter.SRSMap{Log: log, Metrics: metrics, Listen: c.String("listen")}
			if err := srsMap.Update(inv, srsSecrets); err != nil {
				ln.Close()
				return cli.Exit(err.Error(), 1)
			}
			defer srsMap.Close()
			build := b.Filter
			// Publish before sign: a selector DNS does not show with its
			// key waits while another of its domain is published.
			pub := &milter.Publisher{Log: log, Timeout: c.Duration("dns-timeout")}
			srv := milter.NewServer(build(inv, pub.Update(inv, keys)))
			pub.Apply = func(inv *inventory.Inventory, keys map[string][]dkim.Key) { srv.SetFilter(build(inv, keys)) }
			pubCtx, stopPub := context.WithCancel(context.Background())
			defer stopPub()
			go pub.Run(pubCtx, c.Duration("dkim-check-interval"))
			// The drift guard: in the log, the metrics and /healthz.
			guard := &drift.Guard{Daemon: "milterd", Log: log, OnCheck: func(s drift.State) {
				metrics.Inventory(s.Running, s.Installed, s.Warning())
			}}
			guard.Set(inv.Digest, inv.Postfix.ConfigDirectory)
			defer guard.Start(c.Duration("drift-interval"))()
			var serving atomic.Bool
			serving.Store(true)
			page := statuspage.New("milterd", version, metrics.Registry, "mailnode_milter_")
			milterdStatus(page, c.String("inventory"), listen, inv, keys)
			page.Digest = guardDigests(guard)
			var running atomic.Pointer[inventory.Inventory] // the page reads it; SIGHUP replaces it
			running.Store(inv)
			page.Peer = func() *statuspage.Peer {
				inv := running.Load()
				return peerOf(c, "policyd", inv.PolicyEnabled(), "policy.enabled", inv.Policy.MetricsListen, "policy.metrics_listen")
			}
			page.Selectors = func() []statuspage.Selector { return selectorRows(pub.States()) }
			stopMetrics, err := serveMilterMetrics(c, inv, metrics, page, serving.Load, log)
			if err != nil {
				ln.Close()
				return err
			}
			defer stopMetrics()
			// SIGHUP: reload the inventory and the keys; keep the running
			// ones when either is broken (a missing key must not stop signing).
			loadedKeys := keys // the keys a reload compares its own with (LoadKeys)
			go func() {
				for range hup {
					func() {
						defer loadingGC(reloadGCPercent)()
						daemon.Notify(log, "milterd", sdnotify.Reloading)
						path := c.String("inventory")
						// refuse keeps what runs, says why (status page, log) and
						// tells systemd the reload is over.
						refuse := func(what, kept string, err error) {
							metrics.Reloaded(false)
							page.Set("last reload", time.Now().UTC().Format(time.RFC3339)+" refused"+what+": "+err.Error())
							log.Error("milterd: reload refused, keeping the running "+kept, "inventory", path, "err", err)
							guard.Check()
							daemon.Notify(log, "milterd", sdnotify.Ready)
						}
						ninv, reloaded, err := loadForDaemon(path, c.String("node"), inventory.KeepDomains, running.Load())
						if err != nil {
							refuse("", "inventory", err)
							return
						}
						// Each step's garbage goes back before the next one
						// allocates: what the reload holds at its top is the
						// running filter and the new one, little more.
						releaseMemory()
						newKeys, err := milter.LoadKeys(ninv, loadedKeys)
						releaseMemory()
						if err != nil {
							refuse(" (keys)", "keys", err)
							return
						}
						newSRS, err := milter.LoadSRS(ninv)
						if err != nil {
							refuse(" (srs)", "inventory and SRS secrets", err)
							return
						}
						loadedKeys = newKeys
						// The new inventory first, with the keys that sign now
						// (Stage); then, once DNS has been asked about the new
						// keys, those that sign. The running inventory is let
						// go before the DNS round, not after it.
						b.SetSRS(newSRS)
						pub.Stage(ninv)
						if err := srsMap.Update(ninv, newSRS); err != nil {
							log.Error("milterd: srs socketmap", "err", err)
						}
						running.Store(ninv)
						releaseMemory()
						signing := pub.Update(ninv, newKeys)
						releaseMemory()
						srv.SetFilter(build(ninv, signing))
						metrics.Reloaded(true)
						milterdStatus(page, path, listen, ninv, newKeys)
						page.Set("last reload", time.Now().UTC().Format(time.RFC3339)+" ok")
						log.Info("milterd: inventory reloaded", append([]any{"inventory", path, "domains", len(newKeys)}, reloaded.attrs()...)...)
						guard.Set(ninv.Digest, ninv.Postfix.ConfigDirectory)
						releaseMemory()
						daemon.Notify(log, "milterd", sdnotify.Ready)
					}()
				}
			}()
			var nkeys int
			for _, k := range keys {
				nkeys += len(k)
			}
			rsaSigner := "crypto/rsa"
			if dkim.OpenSSLRSA {
				rsaSigner = "openssl"
			}
			log.Info("milterd listening", "listen", listen, "domains", len(keys), "keys", nkeys, "rsa_signer", rsaSigner, "mode", inv.Policy.Mode,
				"srs_socketmap", srsMap.Path())
			log.Info("milterd: inventory loaded", loaded.attrs()...)
			defer daemon.StatusOnSIGUSR1(log, "milterd", nil)()
			ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
			defer stop()
			releaseMemory()
			daemon.Notify(log, "milterd", sdnotify.Ready)
			go func() {
				<-ctx.Done()
				daemon.Notify(log, "milterd", sdnotify.Stopping)
				serving.Store(false)
				sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
				defer cancel()
				srv.Shutdown(sctx)
				ln.Close()
				srsMap.Close()
			}()
			return srv.Serve(ln)
		},
	}
}
