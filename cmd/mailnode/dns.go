package main

import (
	"fmt"

	"github.com/mailnode/mailnode/dns"
	"github.com/mailnode/mailnode/inventory"
	"github.com/urfave/cli/v2"
)

func dnsCommand() *cli.Command {
	return &cli.Command{
		Name:  "dns",
		Usage: "the DNS records local domains need, and a live check of them",
		Subcommands: []*cli.Command{{
			Name:      "zone",
			Usage:     "print the zone records each local domain needs",
			UsageText: "mailnode dns zone --inventory FILE [--domain D]",
			Description: `Prints, in master file syntax, the records each local domain needs to receive
and send mail through this node: SOA and NS (the node as a placeholder for your
name servers), MX, the node's A/AAAA when it lies in the zone, mail./imap./pop3./
smtp. names, SPF, a DKIM TXT record for every selector whose key exists under
dkim.key_dir (run mailnode dkim keygen first), DMARC, and RFC 6186 SRV records
for IMAP, IMAPS, POP3, POP3S and submission. These are the bytes render-config
writes to dns/<domain>.zone.`,
			Flags: []cli.Flag{inventoryFlag(), domainFlag()},
			Action: func(c *cli.Context) error {
				inv, err := loadAndReport(c)
				if err != nil {
					return err
				}
				domains := inv.LocalDomains()
				if d := c.String("domain"); d != "" {
					dom := inv.Domain(d)
					if dom == nil || dom.Class != "local" {
						return cli.Exit(fmt.Sprintf("dns zone: %s is not a local domain of the inventory", d), 2)
					}
					domains = []*inventory.Domain{dom}
				}
				for i, d := range domains {
					z, err := dns.ZoneFor(inv, d)
					if err != nil {
						return cli.Exit(err.Error(), 2)
					}
					if i > 0 {
						fmt.Fprintln(c.App.Writer)
					}
					c.App.Writer.Write(z.Format())
				}
				return nil
			},
		}, {
			Name:   "check",
			Usage:  "query live DNS and compare it with the inventory",
			Flags:  []cli.Flag{inventoryFlag()},
			Action: notImplemented("dns check"),
		}},
	}
}

func domainFlag() *cli.StringFlag {
	return &cli.StringFlag{Name: "domain", Aliases: []string{"d"}, Usage: "only this local `DOMAIN`"}
}

// loadAndReport loads --inventory and prints every problem when it is invalid.
func loadAndReport(c *cli.Context) (*inventory.Inventory, error) {
	path := c.String("inventory")
	inv, err := inventory.Load(path)
	if err != nil {
		ps := inventory.AsProblems(err)
		for _, p := range ps {
			fmt.Fprintln(c.App.ErrWriter, p.Error())
		}
		return nil, cli.Exit(fmt.Sprintf("%s: %d problem(s)", path, len(ps)), 2)
	}
	return inv, nil
}
