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
			Description: `Loads the inventory as render-config does and prints every problem found,
one per line as FILE:LINE: FIELD: MESSAGE. It refuses what would break the node
or open it: values that would change the meaning of the file they are written
into (line breaks, separators, comment characters), plain-text passwords,
trusted networks that take in the Internet, two daemons on one address, alias
targets that name nothing, and, on this machine, a dovecot.mail_user or unix
user that does not exist or that Dovecot would refuse (uid below 100).

Exit status: 0 valid (a one-line summary is printed), 1 problems found,
2 the file cannot be read or is not YAML at all.`,
			Flags: []cli.Flag{inventoryFlag(), nodeFlag(), noHostChecksFlag()},
			Action: func(c *cli.Context) error {
				inv, err := loadChecked(c, 1)
				if err != nil {
					return err
				}
				var mboxes int
				for _, d := range inv.LocalDomains() {
					mboxes += len(d.Mailboxes)
				}
				node := inv.Node.Hostname
				if inv.InTier() {
					node += fmt.Sprintf(" (one of a tier of %d)", len(inv.Tier.Nodes))
				}
				fmt.Fprintf(c.App.Writer, "%s: ok: node %s, %d local domain(s), %d relay domain(s), %d mailbox(es)\n",
					c.String("inventory"), node, len(inv.LocalDomains()), len(inv.RelayDomains()), mboxes)
				return nil
			},
		}},
	}
}

// noHostChecksFlag turns off the checks against this machine's users.
func noHostChecksFlag() *cli.BoolFlag {
	return &cli.BoolFlag{
		Name:  "no-host-checks",
		Usage: "do not check the inventory against this machine (its system users): for an inventory checked or rendered elsewhere than on its node",
	}
}

// loadChecked loads --inventory with the checks against this machine
// (unless --no-host-checks) and prints every problem: exit status 2 when
// the file cannot be read at all, invalidCode when it was read and found
// wrong.
func loadChecked(c *cli.Context, invalidCode int) (*inventory.Inventory, error) {
	path := c.String("inventory")
	o := inventory.LoadOptions{Node: c.String("node")}
	if !c.Bool("no-host-checks") {
		o.Host = inventory.ThisHost()
	}
	inv, err := inventory.LoadWith(path, o)
	if err != nil {
		ps := inventory.AsProblems(err)
		for _, p := range ps {
			fmt.Fprintln(c.App.ErrWriter, p.Error())
		}
		code := invalidCode
		if inventory.Unreadable(err) {
			code = 2
		}
		return nil, cli.Exit(fmt.Sprintf("%s: %d problem(s)", path, len(ps)), code)
	}
	return inv, nil
}
