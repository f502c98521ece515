package main

import "github.com/urfave/cli/v2"

func dkimCommand() *cli.Command {
	return &cli.Command{
		Name:  "dkim",
		Usage: "manage DKIM keys",
		Subcommands: []*cli.Command{{
			Name:   "keygen",
			Usage:  "create missing keys under dkim.key_dir and print the TXT records to publish",
			Flags:  []cli.Flag{inventoryFlag()},
			Action: notImplemented("dkim keygen"),
		}},
	}
}
