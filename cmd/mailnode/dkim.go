package main

import (
	"errors"
	"fmt"

	"github.com/mailnode/mailnode/dkim"
	"github.com/mailnode/mailnode/inventory"
	"github.com/urfave/cli/v2"
)

func dkimCommand() *cli.Command {
	return &cli.Command{
		Name:  "dkim",
		Usage: "manage DKIM keys",
		Subcommands: []*cli.Command{{
			Name:  "keygen",
			Usage: "create missing keys under dkim.key_dir and print the TXT records to publish",
			Description: `For every DKIM selector of every local domain (or of --domain only), creates
<key_dir>/<domain>/<selector>.key (PKCS#8 PEM, mode 0600) unless it exists, then
prints the TXT record of every selector, created or not, in zone-file form.
An existing key is never overwritten; an existing key that is unusable (wrong
type, readable by others) is reported and makes the command exit 1.`,
			Flags: []cli.Flag{
				inventoryFlag(),
				&cli.StringFlag{Name: "domain", Usage: "only this local `DOMAIN`"},
			},
			Action: func(c *cli.Context) error {
				inv, err := inventory.Load(c.String("inventory"))
				if err != nil {
					return cli.Exit(err.Error(), 1)
				}
				domains := inv.LocalDomains()
				if name := c.String("domain"); name != "" {
					d := inv.Domain(name)
					if d == nil || d.Class != "local" {
						return cli.Exit(fmt.Sprintf("dkim keygen: %s is not a local domain of the inventory", name), 1)
					}
					domains = []*inventory.Domain{d}
				}
				var failed bool
				for _, d := range domains {
					for _, s := range d.DKIM {
						path := dkim.KeyPath(inv.DKIM.KeyDir, d.Name, s.Selector)
						key, err := dkim.LoadKey(path, s.Algorithm)
						if errors.Is(err, dkim.ErrNoKey) {
							if key, err = dkim.Generate(s.Algorithm); err == nil {
								err = dkim.WriteKey(path, key)
							}
							if err == nil {
								fmt.Fprintf(c.App.ErrWriter, "created %s\n", path)
							}
						}
						if err != nil {
							fmt.Fprintln(c.App.ErrWriter, err)
							failed = true
							continue
						}
						txt, err := dkim.TXTValue(key)
						if err != nil {
							fmt.Fprintln(c.App.ErrWriter, err)
							failed = true
							continue
						}
						fmt.Fprintf(c.App.Writer, "%s IN TXT %s\n", dkim.RecordName(s.Selector, d.Name), zoneTXT(txt))
					}
				}
				if failed {
					return cli.Exit("dkim keygen: some keys are unusable", 1)
				}
				return nil
			},
		}, dkimRotateCommand()},
	}
}

// zoneTXT quotes a TXT value for a zone file, in strings of at most 255 bytes.
func zoneTXT(v string) string {
	var out string
	for len(v) > 0 {
		n := min(len(v), 255)
		if out != "" {
			out += " "
		}
		out += `"` + v[:n] + `"`
		v = v[n:]
	}
	if out == "" {
		return `""`
	}
	return "( " + out + " )"
}
