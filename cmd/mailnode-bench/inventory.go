package main

import (
	"github.com/urfave/cli/v2"

	"github.com/mailnode/mailnode/test/invgen"
)

func inventoryCommand() *cli.Command {
	return &cli.Command{
		Name:  "inventory",
		Usage: "print a large generated inventory (make bench-render renders one of 10,000 domains)",
		Description: `Prints a valid inventory with -domains domains (every tenth a relay domain)
and -mailboxes mailboxes spread over the local ones, each local domain with
aliases, a list and DKIM selectors (see test/invgen):

  mailnode-bench inventory -domains 10000 -mailboxes 100000 > /tmp/bench.yaml
  mailnode render-config -i /tmp/bench.yaml --out /tmp/out`,
		Flags: []cli.Flag{
			&cli.IntFlag{Name: "domains", Value: 10000, Usage: "domains (every tenth a relay domain)"},
			&cli.IntFlag{Name: "mailboxes", Value: 100000, Usage: "mailboxes, spread over the local domains"},
		},
		Action: func(cx *cli.Context) error {
			if cx.Int("domains") < 1 || cx.Int("mailboxes") < 0 {
				return cli.Exit("inventory: need -domains >= 1 and -mailboxes >= 0", 2)
			}
			_, err := cx.App.Writer.Write(invgen.Generate(cx.Int("domains"), cx.Int("mailboxes")))
			return err
		},
	}
}
