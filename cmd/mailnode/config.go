package main

import (
	"fmt"
	"slices"
	"strings"

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
		}, configRoleCommand()},
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

// configRoleCommand prints node.role. With --is it answers by exit status
// alone, which is what a unit's ExecCondition wants: 0 runs the daemon,
// 1 skips it (a null client runs no policyd), and 255, which systemd counts
// as a failure rather than a skip, for an inventory that cannot be loaded
// or a role name that does not exist: those must not pass silently.
func configRoleCommand() *cli.Command {
	return &cli.Command{
		Name:      "role",
		Usage:     "print node.role (mailnode or nullclient), or test it with --is",
		UsageText: "mailnode config role [--inventory FILE] [--is ROLE]",
		Description: `Prints the role the inventory gives this node: mailnode (the default) or
nullclient (docs/design.md, "Node roles"). With --is ROLE nothing is printed
and the exit status answers: 0 the role is ROLE, 1 it is another.

The packaged policyd unit runs "mailnode config role --is mailnode" as its
ExecCondition, so that on a null client, which needs no policy service, the
unit is skipped instead of failing.

Exit status: 0 printed or matched, 1 not matched, 255 the inventory cannot be
loaded or is invalid, or ROLE is not a role.`,
		Flags: []cli.Flag{
			inventoryFlag(),
			&cli.StringFlag{Name: "is", Usage: "exit 0 when node.role is `ROLE`, 1 when it is not"},
		},
		Action: func(c *cli.Context) error {
			want := c.String("is")
			if c.IsSet("is") && !slices.Contains(inventory.Roles, want) {
				return cli.Exit(fmt.Sprintf("config role: --is %q is not one of: %s", want, strings.Join(inventory.Roles, ", ")), 255)
			}
			path := c.String("inventory")
			inv, err := inventory.LoadWith(path, inventory.LoadOptions{})
			if err != nil {
				ps := inventory.AsProblems(err)
				for _, p := range ps {
					fmt.Fprintln(c.App.ErrWriter, p.Error())
				}
				return cli.Exit(fmt.Sprintf("%s: %d problem(s)", path, len(ps)), 255)
			}
			if !c.IsSet("is") {
				fmt.Fprintln(c.App.Writer, inv.Node.Role)
				return nil
			}
			if inv.Node.Role != want {
				return cli.Exit("", 1)
			}
			return nil
		},
	}
}
