package main

import "github.com/urfave/cli/v2"

func renderCommand() *cli.Command {
	return &cli.Command{
		Name:   "render-config",
		Usage:  "write (or diff) every Postfix, Dovecot, unbound and DNS file from the inventory",
		Flags:  []cli.Flag{inventoryFlag()},
		Action: notImplemented("render-config"),
	}
}
