package main

import (
	"fmt"
	"time"

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
writes to dns/<domain>.zone.

With tier.nodes the zone is the tier's, the same from every node: each node
is an NS and an MX of equal preference (round robin), has its A/AAAA when in
the zone and an SRV record per service; the client names carry every node's
addresses and SPF lists them all.`,
			Flags: []cli.Flag{inventoryFlag(), nodeFlag(), domainFlag()},
			Action: func(c *cli.Context) error {
				inv, err := loadAndReport(c)
				if err != nil {
					return err
				}
				if err := noZoneOnNullClient(inv); err != nil {
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
			Name:      "check",
			Usage:     "query live DNS and compare it with the inventory",
			UsageText: "mailnode dns check --inventory FILE [--domain D] [--resolver HOST:PORT] [--json]",
			Description: `Asks live DNS, through node.resolver (or --resolver), whether what the
inventory needs is published, and prints for every check what was expected, what
was found, and ok, warn or fail. The expected side is the zone render-config
writes (mailnode dns zone) and the DKIM keys on disk.

Node checks (once, for every node of tier.nodes): a, aaaa (the A/AAAA records of
node.hostname equal node.addresses), ptr:ADDR (each address's PTR names the
node's hostname, which resolves back to it: forward-confirmed). Local domain
checks: ns (the parent zone's own servers, asked directly on port 53, delegate
the domain to the NS set the zone lists), soa, mx (an MX points at
node.hostname; with a tier, every node is an MX at one preference and no
outsider shares it), spf (the SPF policy evaluates to pass for every node
address: RFC 7208 with its lookup limits), dkim:SELECTOR (the
TXT record carries the key on disk), dmarc (one record, parseable), name:LABEL
(mail, imap, pop3, smtp have the node's addresses), srv:SERVICE (RFC 6186,
recommended). With domains[].mta_sts: mta-sts (one v=STSv1 record, a valid id;
another id than the rendered policy's warns), name:mta-sts, mta-sts-policy (the
policy fetched from every address of mta-sts.DOMAIN over HTTPS, verified against
the system's CAs or SSL_CERT_FILE, parses, has the inventory's mode and max_age,
and its mx lines and the MX records match each other); with domains[].tlsrpt:
tlsrpt (one v=TLSRPTv1 record with the inventory's rua=). Relay domains:
mx-backup (recommended).

A question that gets no records says why: NXDOMAIN, NODATA, SERVFAIL, REFUSED,
timeout or unreachable. Recommended checks and caveats are warn and do not fail
the run. Exit status: 0 when every required check passes, 1 when one fails, 2
when the inventory or the flags are wrong.`,
			Flags: []cli.Flag{inventoryFlag(), nodeFlag(), &cli.StringFlag{Name: "domain", Aliases: []string{"d"}, Usage: "only this local or relay `DOMAIN` (node checks run too)"},
				&cli.StringFlag{Name: "resolver", Usage: "ask this recursive resolver (`HOST:PORT`) instead of node.resolver"},
				&cli.BoolFlag{Name: "json", Usage: "print the report as JSON"},
				&cli.DurationFlag{Name: "timeout", Value: 3 * time.Second, Usage: "wait this long for each answer (a question is sent twice)"},
			},
			Action: dnsCheck,
		}},
	}
}

func domainFlag() *cli.StringFlag {
	return &cli.StringFlag{Name: "domain", Aliases: []string{"d"}, Usage: "only this local `DOMAIN`"}
}

// loadAndReport loads --inventory and prints every problem when it is invalid.
// noZoneOnNullClient refuses the zone commands for a null client: its
// domains receive their mail on the mail node behind postfix.relayhost, whose
// inventory describes their zones; the null client only adds DKIM records.
func noZoneOnNullClient(inv *inventory.Inventory) error {
	if !inv.NullClient() {
		return nil
	}
	return cli.Exit(fmt.Sprintf("%s is a null client (node.role: nullclient): its domains' zones are the mail node's (render them from that inventory); publish this host's DKIM records, which mailnode dkim keygen prints and mailnode dkim status checks", inv.Node.Hostname), 2)
}

func loadAndReport(c *cli.Context) (*inventory.Inventory, error) {
	path := c.String("inventory")
	inv, err := loadAs(c, path)
	if err != nil {
		ps := inventory.AsProblems(err)
		for _, p := range ps {
			fmt.Fprintln(c.App.ErrWriter, p.Error())
		}
		return nil, cli.Exit(fmt.Sprintf("%s: %d problem(s)", path, len(ps)), 2)
	}
	return inv, nil
}

func dnsCheck(c *cli.Context) error {
	inv, err := loadAndReport(c)
	if err != nil {
		return err
	}
	if err := noZoneOnNullClient(inv); err != nil {
		return err
	}
	domains := append(inv.LocalDomains(), inv.RelayDomains()...)
	if d := c.String("domain"); d != "" {
		dom := inv.Domain(d)
		if dom == nil || dom.Class == "" {
			return cli.Exit(fmt.Sprintf("dns check: %s is not a domain of the inventory", d), 2)
		}
		domains = []*inventory.Domain{dom}
	}
	resolver, err := resolverOf(c, inv, "dns check")
	if err != nil {
		return err
	}
	ck := &dns.Checker{Resolver: resolver, Timeout: c.Duration("timeout")}
	rep := ck.Run(c.Context, inv, domains)
	if c.Bool("json") {
		err = rep.WriteJSON(c.App.Writer)
	} else {
		err = rep.WriteTable(c.App.Writer)
	}
	if err != nil {
		return cli.Exit(err.Error(), 2)
	}
	if !rep.OK {
		return cli.Exit("", 1)
	}
	return nil
}
