package main

import "github.com/urfave/cli/v2"

func policydCommand() *cli.Command {
	return &cli.Command{
		Name:   "policyd",
		Usage:  "serve the Postfix policy delegation protocol: the from/to/auth ACL matrix",
		Flags:  []cli.Flag{inventoryFlag()},
		Action: notImplemented("policyd"),
	}
}
