package main

import "github.com/urfave/cli/v2"

func milterdCommand() *cli.Command {
	return &cli.Command{
		Name:   "milterd",
		Usage:  "serve the Postfix milter: DKIM signing, inbound verification, spam gate",
		Flags:  []cli.Flag{inventoryFlag()},
		Action: notImplemented("milterd"),
	}
}
