package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/mailnode/mailnode/dkim"
	"github.com/mailnode/mailnode/dns"
	"github.com/mailnode/mailnode/inventory"
	"github.com/mailnode/mailnode/render"
)

func dkimCommand() *cli.Command {
	return &cli.Command{
		Name:  "dkim",
		Usage: "manage DKIM keys",
		Subcommands: []*cli.Command{{
			Name:  "keygen",
			Usage: "create missing keys under dkim.key_dir and print the TXT records to publish",
			Description: `For every DKIM selector of every local domain (or of --domain only), creates
<key_dir>/<domain>/<selector>.key (PKCS#8 PEM, mode 0600) unless it exists, then
prints the TXT record of every selector, created or not, in zone-file form.
An existing key is never overwritten; an existing key that is unusable (wrong
type, readable by others) is reported and makes the command exit 1.`,
			Flags: []cli.Flag{
				inventoryFlag(),
				nodeFlag(),
				&cli.StringFlag{Name: "domain", Usage: "only this local `DOMAIN`"},
			},
			Action: func(c *cli.Context) error {
				inv, err := loadAs(c, c.String("inventory"))
				if err != nil {
					return cli.Exit(err.Error(), 1)
				}
				domains := inv.LocalDomains()
				if name := c.String("domain"); name != "" {
					d := inv.Domain(name)
					if d == nil || d.Class != "local" {
						return cli.Exit(fmt.Sprintf("dkim keygen: %s is not a local domain of the inventory", name), 1)
					}
					domains = []*inventory.Domain{d}
				}
				var failed bool
				for _, d := range domains {
					for _, s := range d.DKIM {
						path := dkim.KeyPath(inv.DKIM.KeyDir, d.Name, s.Selector)
						key, created, err := dkim.EnsureKey(path, s.Algorithm)
						if created {
							fmt.Fprintf(c.App.ErrWriter, "created %s\n", path)
						}
						if err != nil {
							fmt.Fprintln(c.App.ErrWriter, err)
							failed = true
							continue
						}
						txt, err := dkim.TXTValue(key)
						if err != nil {
							fmt.Fprintln(c.App.ErrWriter, err)
							failed = true
							continue
						}
						fmt.Fprintf(c.App.Writer, "%s IN TXT %s\n", dkim.RecordName(s.Selector, d.Name), dkim.ZoneTXT(txt))
					}
				}
				if failed {
					return cli.Exit("dkim keygen: some keys are unusable", 1)
				}
				return nil
			},
		}, dkimRotateCommand(), dkimStatusCommand()},
	}
}

// dkimRotateCommand is `mailnode dkim rotate`.
func dkimRotateCommand() *cli.Command {
	return &cli.Command{
		Name:  "rotate",
		Usage: "add a new DKIM selector and key to a domain, or retire an old one",
		UsageText: `mailnode dkim rotate --inventory FILE --domain D [--algorithm rsa|ed25519] [--selector NEW] [--write]
mailnode dkim rotate --inventory FILE --domain D --retire OLD [--resolver HOST:PORT] [--write]`,
		Description: `Rotating a DKIM key takes three runs, with DNS publication in between:

1. mailnode dkim rotate --domain D [--algorithm rsa|ed25519] --write
   Creates a key for a new selector (--selector, default mxYYYYMMDD plus "r" for
   RSA or "e" for Ed25519) under dkim.key_dir and adds the selector to the
   domain's dkim list in the inventory. Without --write the key is created and the
   inventory change is only printed, as a diff, with the TXT record to publish.
   Then run render-config, publish dns/D.zone (it now has both selectors' TXT
   records) and reload milterd. milterd signs with the new selector once
   node.resolver shows its record with the key on disk (publish before sign:
   checked every minute, no reload needed); until then mail carries the old
   signature only. mailnode dkim status shows where each selector stands.

2. Wait until mailnode dns check shows dkim:NEW ok (the record is live through
   the resolver), plus the longest TTL your name servers use.

3. mailnode dkim rotate --domain D --retire OLD --write
   Refuses unless another selector of OLD's algorithm is live in DNS with the key
   on disk (asked through node.resolver or --resolver; a SERVFAIL or timeout also
   refuses), and has been for the grace period (--grace, default 48h), counted
   from the first run of this command that saw it live (recorded next to its
   key as SELECTOR.key.live-since): mail signed with OLD is still in flight and
   in queues, and receivers' caches may not have the new record yet. Then drops OLD from the inventory: after render-config and a reload,
   milterd stops signing with it and the zone no longer publishes it. The key file
   stays, because mail signed with OLD may still be verified for a while.

   Run the same command again once OLD's TXT record is gone from DNS: it checks
   that the resolver no longer finds the old key (NXDOMAIN or NODATA) and deletes
   the key file (with --write; without, it says what it would delete).

--write rewrites the inventory in place (same file mode, atomically): only the
lines of the dkim list change, comments and layout elsewhere are kept; the result
is parsed back and must describe the same inventory with only that change.

Every run ends with the step the domain's rotation is on, asked through the
same resolver: 1/5 add (the new record is not visible yet), 2/5 published,
3/5 signing (retire the old selector after a grace period), 4/5 retired (the
old record is still visible), 5/5 delete key.

Exit status: 0 done (or printed), 1 refused (DNS not ready yet), 2 usage errors.`,
		Flags: []cli.Flag{
			inventoryFlag(),
			nodeFlag(),
			&cli.StringFlag{Name: "domain", Aliases: []string{"d"}, Required: true, Usage: "the local `DOMAIN` whose key rotates"},
			&cli.StringFlag{Name: "algorithm", Value: "rsa", Usage: "key type of the new selector: `rsa` (2048 bits) or ed25519"},
			&cli.StringFlag{Name: "selector", Usage: "name of the new selector (default mxYYYYMMDD + r|e)"},
			&cli.StringFlag{Name: "retire", Usage: "retire the `OLD` selector instead (see above)"},
			&cli.StringFlag{Name: "resolver", Usage: "with --retire: ask this resolver (`HOST:PORT`) instead of node.resolver"},
			&cli.BoolFlag{Name: "write", Usage: "rewrite the inventory file (and, retiring, delete a key no longer published)"},
			&cli.DurationFlag{Name: "grace", Value: dkim.DefaultGrace, Usage: "with --retire: how long the new selector must have been live (since a run of this command first saw it) before the old one goes"},
		},
		Action: dkimRotate,
	}
}

func dkimRotate(c *cli.Context) error {
	path := c.String("inventory")
	src, err := os.ReadFile(path)
	if err != nil {
		return cli.Exit(err.Error(), 2)
	}
	inv, err := loadAndReport(c)
	if err != nil {
		return err
	}
	d := inv.Domain(c.String("domain"))
	if d == nil || d.Class != "local" {
		return cli.Exit(fmt.Sprintf("dkim rotate: %s is not a local domain of the inventory", c.String("domain")), 2)
	}
	r := dkim.Rotation{Inv: inv, Domain: d, Path: path, Src: src, Write: c.Bool("write"), Grace: c.Duration("grace")}
	var step dkim.Step
	if old := c.String("retire"); old != "" {
		if r.Resolver, err = resolverOf(c, inv, "dkim rotate"); err != nil {
			return err
		}
		r.DNS = &dns.Checker{Resolver: r.Resolver}
		ctx, cancel := context.WithTimeout(c.Context, 30*time.Second)
		defer cancel()
		step, err = r.Retire(ctx, old)
	} else {
		step, err = r.Add(c.String("algorithm"), c.String("selector"), time.Now())
	}
	var notReady *dkim.NotReadyError
	switch {
	case errors.As(err, &notReady):
		return cli.Exit(err.Error(), 1)
	case err != nil:
		return cli.Exit(err.Error(), 2)
	}
	out := c.App.Writer
	fmt.Fprint(out, step.Report)
	var diff []byte
	if step.Inventory != nil {
		diff = render.UnifiedDiff(path, path, src, step.Inventory)
		if !r.Write {
			fmt.Fprintf(out, "\nThe inventory change (not written; add --write to apply it):\n%s", diff)
		}
	}
	if r.Write {
		if err := step.Apply(path); err != nil {
			return cli.Exit(err.Error(), 2)
		}
		if step.Inventory != nil {
			fmt.Fprintf(out, "\nwrote %s:\n%s", path, diff)
		}
	}
	fmt.Fprint(out, step.Next)
	// Where the rotation stands now, asked through the same resolver.
	now := inv
	if r.Write && step.Inventory != nil {
		if ni, err := inventory.Parse(step.Inventory, path); err == nil {
			now = ni
		}
	}
	if nd := now.Domain(d.Name); nd != nil {
		res, err := resolverOf(c, now, "dkim rotate")
		if err != nil {
			return err
		}
		lookup := (&dns.Checker{Resolver: res}).Published
		ctx, cancel := context.WithTimeout(c.Context, 30*time.Second)
		defer cancel()
		states := dkim.Selectors(now, d.Name)
		dkim.CheckAll(ctx, lookup, states)
		// The grace period before retiring runs from the first run that
		// saw a selector live.
		for _, s := range states {
			if s.DNS == dkim.Published {
				if _, err := dkim.NoteLive(now.DKIM.KeyDir, s.Domain, s.Selector, time.Now()); err != nil {
					return cli.Exit(err.Error(), 2)
				}
			}
		}
		dkim.WriteStage(out, fmt.Sprintf("Rotation of %s (DNS through %s):", d.Name, res), dkim.Stage(ctx, now, nd, states, lookup))
	}
	return nil
}

// dkimStatusCommand is `mailnode dkim status`.
func dkimStatusCommand() *cli.Command {
	return &cli.Command{
		Name:      "status",
		Usage:     "show each DKIM selector's key, its record in DNS and whether milterd signs with it",
		UsageText: "mailnode dkim status --inventory FILE [--domain D] [--resolver HOST:PORT]",
		Description: `For every selector of every local domain (or of --domain): whether its key is
on disk and usable, what DNS shows for its TXT record through node.resolver (or
--resolver): published (p= is the key on disk), not-published (NXDOMAIN, NODATA,
no DKIM record), mismatch (another key, or revoked) or unknown (DNS could not
tell), and whether milterd signs with it by the publish-before-sign rule: a
selector that is not published waits while another selector of its domain is;
when none is, all sign. Then where each domain's key rotation stands (the steps
of mailnode dkim rotate).

milterd asks the same at start, on reload and every minute; over a DNS failure
it keeps its last answer, which this command, asking once, cannot know.

Exit status: 0 every selector signs, 1 one does not (no key, or held back), 2 errors.`,
		Flags: []cli.Flag{
			inventoryFlag(),
			nodeFlag(),
			&cli.StringFlag{Name: "domain", Aliases: []string{"d"}, Usage: "only this local `DOMAIN`"},
			&cli.StringFlag{Name: "resolver", Usage: "ask this resolver (`HOST:PORT`) instead of node.resolver"},
		},
		Action: func(c *cli.Context) error {
			inv, err := loadAs(c, c.String("inventory"))
			if err != nil {
				return cli.Exit(err.Error(), 2)
			}
			domain := c.String("domain")
			if domain != "" {
				if d := inv.Domain(domain); d == nil || d.Class != "local" {
					return cli.Exit(fmt.Sprintf("dkim status: %s is not a local domain of the inventory", domain), 2)
				}
			}
			res, err := resolverOf(c, inv, "dkim status")
			if err != nil {
				return err
			}
			lookup := (&dns.Checker{Resolver: res}).Published
			ctx, cancel := context.WithTimeout(c.Context, 60*time.Second)
			defer cancel()
			states := dkim.Selectors(inv, domain)
			dkim.CheckAll(ctx, lookup, states)
			out := c.App.Writer
			fmt.Fprintf(out, "DKIM selectors (DNS through %s):\n", res)
			held := dkim.WriteStatus(out, states)
			for _, d := range inv.LocalDomains() {
				if domain == "" || d.Name == domain {
					dkim.WriteStage(out, "Rotation of "+d.Name+":", dkim.Stage(ctx, inv, d, states, lookup))
				}
			}
			if held {
				return cli.Exit("", 1)
			}
			return nil
		},
	}
}

// resolverOf is the resolver a command asks: --resolver (which must be
// HOST:PORT), else node.resolver.
func resolverOf(c *cli.Context, inv *inventory.Inventory, cmd string) (string, error) {
	r := c.String("resolver")
	if r == "" {
		return inv.Node.Resolver, nil
	}
	if _, _, err := net.SplitHostPort(r); err != nil {
		return "", cli.Exit(fmt.Sprintf("%s: --resolver %q is not HOST:PORT", cmd, r), 2)
	}
	return r, nil
}
