package main

import "github.com/urfave/cli/v2"

func dnsCommand() *cli.Command {
	return &cli.Command{
		Name:  "dns",
		Usage: "the DNS records local domains need, and a live check of them",
		Subcommands: []*cli.Command{{
			Name:   "zone",
			Usage:  "print the zone records each local domain needs",
			Flags:  []cli.Flag{inventoryFlag()},
			Action: notImplemented("dns zone"),
		}, {
			Name:   "check",
			Usage:  "query live DNS and compare it with the inventory",
			Flags:  []cli.Flag{inventoryFlag()},
			Action: notImplemented("dns check"),
		}},
	}
}
