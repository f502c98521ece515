package main

import (
	"fmt"

	"github.com/mailnode/mailnode/inventory"
	"github.com/urfave/cli/v2"
)

func configCommand() *cli.Command {
	return &cli.Command{
		Name:  "config",
		Usage: "inspect the inventory",
		Subcommands: []*cli.Command{{
			Name:  "check",
			Usage: "validate the inventory and list every problem with file:line and field",
			Description: `Loads the inventory exactly as the daemons and render-config do and prints
every problem found, one per line as FILE:LINE: FIELD: MESSAGE, then exits 1.
Prints a one-line summary and exits 0 when the inventory is valid.`,
			Flags: []cli.Flag{inventoryFlag()},
			Action: func(c *cli.Context) error {
				path := c.String("inventory")
				inv, err := inventory.Load(path)
				if err != nil {
					ps := inventory.AsProblems(err)
					for _, p := range ps {
						fmt.Fprintln(c.App.ErrWriter, p.Error())
					}
					return cli.Exit(fmt.Sprintf("%s: %d problem(s)", path, len(ps)), 1)
				}
				var mboxes int
				for _, d := range inv.LocalDomains() {
					mboxes += len(d.Mailboxes)
				}
				fmt.Fprintf(c.App.Writer, "%s: ok: node %s, %d local domain(s), %d relay domain(s), %d mailbox(es)\n",
					path, inv.Node.Hostname, len(inv.LocalDomains()), len(inv.RelayDomains()), mboxes)
				return nil
			},
		}},
	}
}
