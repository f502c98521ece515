package main

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime/debug"
	"strings"

	"github.com/mailnode/mailnode/render"
	"github.com/urfave/cli/v2"
)

func renderCommand() *cli.Command {
	return &cli.Command{
		Name:      "render-config",
		Usage:     "write (or diff) every Postfix, Dovecot, unbound and DNS file from the inventory",
		UsageText: "mailnode render-config --inventory FILE --out DIR [--check] [--postmap]",
		Description: `Renders the whole configuration of the node from the inventory into the
staging tree DIR:

   DIR/postfix/   main.cf, master.cf and the map sources transport, relay_domains,
                  relay_recipient_maps, tls_policy, virtual_mailbox_domains,
                  virtual_mailbox_maps, virtual_alias_maps, sender_login_maps,
                  quota_recipients, aliases; sasl_passwd (the smarthost login,
                  mode 0600)
                                                    -> install as postfix.config_directory
   DIR/dovecot/   dovecot.conf, users (passwd-file), sieve/ (dovecot.sieve)
                                                    -> install as dovecot.config_directory
   DIR/unbound/   unbound.conf                      -> the node's own resolver
   DIR/dns/       <domain>.zone for each local domain, to publish

A null client (node.role: nullclient) gets DIR/postfix/ with main.cf, master.cf,
tls_policy and sasl_passwd, and DIR/unbound/: no Dovecot, no domain maps and no
zones (its domains' zones are the mail node's).

Files name the installed paths from the inventory, never DIR, so the same
inventory always gives the same bytes. When postfix.config_directory is
DIR/postfix (a private instance), Postfix runs straight from the tree.

Each file is replaced atomically (temporary file + rename) and only when its
bytes change; zone files of domains no longer in the inventory are removed.
DKIM TXT records appear for every selector whose key exists under
dkim.key_dir (mailnode dkim keygen creates them).

With --check nothing is written: a unified diff of what would change is
printed and the exit status is 1 when anything differs, 0 when DIR is up to
date. With --postmap the map sources are compiled after writing (postmap,
postalias for aliases), which Postfix needs before it (re)loads, and so are
the Sieve scripts under DIR/dovecot/sieve/ (sievec, with DIR's dovecot.conf).

The inventory is checked as by config check, against this machine too
(--no-host-checks to render elsewhere); an inventory config check refuses is
refused here and nothing is written.

Exit status: 0 ok, 1 differences (--check), 2 invalid inventory or error.`,
		Flags: []cli.Flag{
			inventoryFlag(),
			nodeFlag(),
			noHostChecksFlag(),
			&cli.StringFlag{Name: "out", Aliases: []string{"o"}, Required: true,
				Usage: "the staging `DIR` to write (created when missing)"},
			&cli.BoolFlag{Name: "check", Usage: "write nothing; print a unified diff against DIR and exit 1 when anything differs"},
			&cli.BoolFlag{Name: "postmap", Usage: "after writing, compile every Postfix map source with postmap/postalias and every Sieve script with sievec"},
		},
		Action: func(c *cli.Context) error {
			// A large inventory and every file rendered from it are in memory
			// at once; collecting more often near 192 MiB keeps the peak under
			// 256 MiB at 10,000 domains for a few percent more CPU. GOMEMLIMIT
			// in the environment overrides it.
			if os.Getenv("GOMEMLIMIT") == "" {
				debug.SetMemoryLimit(192 << 20)
			}
			inv, err := loadChecked(c, 2)
			if err != nil {
				return err
			}
			files, err := render.Render(inv)
			if err != nil {
				return cli.Exit(err.Error(), 2)
			}
			out := c.String("out")
			if c.Bool("check") {
				diff, err := render.Check(out, files)
				if err != nil {
					return cli.Exit(err.Error(), 2)
				}
				if len(diff) > 0 {
					c.App.Writer.Write(diff)
					return cli.Exit("", 1)
				}
				return nil
			}
			changed, err := render.Write(out, files)
			if err != nil {
				return cli.Exit(err.Error(), 2)
			}
			for _, n := range changed {
				fmt.Fprintf(c.App.Writer, "wrote %s\n", filepath.Join(out, n))
			}
			if c.Bool("postmap") {
				if err := postmap(filepath.Join(out, "postfix"), render.PostfixMapsFor(inv)); err != nil {
					return cli.Exit(err.Error(), 2)
				}
				if err := sievec(out, files); err != nil {
					return cli.Exit(err.Error(), 2)
				}
			}
			return nil
		},
	}
}

// postmap compiles every map source in dir (the rendered postfix/ tree,
// which holds the main.cf postmap reads with -c).
func postmap(dir string, maps []struct{ Name, Compiler string }) error {
	for _, m := range maps {
		cmd := exec.Command(m.Compiler, "-c", dir, "hash:"+filepath.Join(dir, m.Name))
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("%s %s: %w", m.Compiler, m.Name, err)
		}
	}
	return nil
}

// sievec compiles the rendered Sieve scripts (dovecot.sieve) next to
// their sources with the rendered dovecot.conf, so that Dovecot, which
// runs them as the mail user and cannot write there, finds them compiled.
func sievec(out string, files render.Files) error {
	for _, name := range files.Names() {
		if !strings.HasPrefix(name, render.SieveDir+"/") || !strings.HasSuffix(name, ".sieve") {
			continue
		}
		cmd := exec.Command("sievec", "-c", filepath.Join(out, "dovecot", "dovecot.conf"), filepath.Join(out, name))
		cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
		if err := cmd.Run(); err != nil {
			return fmt.Errorf("sievec %s: %w", name, err)
		}
	}
	return nil
}
