package main

import (
	"context"
	"fmt"
	"time"

	"github.com/mailnode/mailnode/inventory"
	"github.com/mailnode/mailnode/state"
	"github.com/urfave/cli/v2"
)

func stateCommand() *cli.Command {
	return &cli.Command{
		Name:  "state",
		Usage: "list, explain and delete greylist entries and rate counters",
		Description: `Opens the store policy.state of the inventory names: the bbolt file
(policy.state.path) or Redis (policy.state.url, or the master that
policy.state.sentinel names). A bbolt file has one owner process: while
policyd runs, these commands wait one second for the file and then fail;
stop policyd first, or use Redis, which any number of processes share.

Keys read as postgrey's: grey/t/NETWORK/SENDER/RECIPIENT for a triplet,
grey/c/ADDRESS for a client's auto-whitelist count, rate/u/LOGIN and
rate/c/ADDRESS for the hourly counters of a SASL user or a trusted client.`,
		Subcommands: []*cli.Command{
			{
				Name:      "list",
				Usage:     "print stored entries, sorted by key",
				ArgsUsage: " ",
				Flags: []cli.Flag{
					inventoryFlag(),
					nodeFlag(),
					&cli.BoolFlag{Name: "greylist", Usage: "only greylist triplets and client counters"},
					&cli.BoolFlag{Name: "rate", Usage: "only rate counters"},
					&cli.StringFlag{Name: "prefix", Usage: "only keys starting with `PREFIX` (e.g. grey/t/198.51.100.0/24/)"},
				},
				Action: func(c *cli.Context) error {
					prefix := c.String("prefix")
					switch {
					case prefix != "":
					case c.Bool("greylist") && !c.Bool("rate"):
						prefix = state.PrefixGrey
					case c.Bool("rate") && !c.Bool("greylist"):
						prefix = state.PrefixRate
					}
					return withState(c, func(ctx context.Context, _ *inventory.Inventory, st state.Store) error {
						n, err := state.List(ctx, st, prefix, time.Now(), c.App.Writer)
						if err != nil {
							return err
						}
						fmt.Fprintf(c.App.ErrWriter, "%d entr%s\n", n, plural(n, "y", "ies"))
						return nil
					})
				},
			},
			{
				Name:  "explain",
				Usage: "say what policyd would decide now for a triplet or a sender, and why",
				Description: `With --recipient: the greylisting decision for the triplet of --client,
--sender (empty for the null sender) and --recipient, the keys it uses,
what is stored under them and which whitelist applies.
With --user LOGIN, or --client ADDRESS alone: the rate limits in effect
for that SASL user or trusted client and what the last hour used.
Nothing is changed.`,
				ArgsUsage: " ",
				Flags: []cli.Flag{
					inventoryFlag(),
					nodeFlag(),
					&cli.StringFlag{Name: "client", Usage: "client `ADDRESS` (as Postfix's client_address)"},
					&cli.StringFlag{Name: "sender", Usage: "envelope `SENDER`"},
					&cli.StringFlag{Name: "recipient", Usage: "envelope `RECIPIENT`"},
					&cli.StringFlag{Name: "user", Usage: "SASL `LOGIN` (rate limits)"},
				},
				Action: func(c *cli.Context) error {
					if c.String("recipient") == "" && c.String("user") == "" && c.String("client") == "" {
						return cli.Exit("state explain: give --client, --sender and --recipient (greylisting), or --user or --client (rate limits)", 2)
					}
					return withState(c, func(ctx context.Context, inv *inventory.Inventory, st state.Store) error {
						var out string
						var err error
						if c.String("recipient") != "" {
							if c.String("client") == "" {
								return cli.Exit("state explain: greylisting needs --client too", 2)
							}
							g, gerr := state.NewGreylister(inv.Policy.Greylist, st, nil)
							if gerr != nil {
								return gerr
							}
							out, err = g.Explain(ctx, state.Triplet{Client: c.String("client"), Sender: c.String("sender"), Recipient: c.String("recipient")})
						} else {
							r, rerr := state.NewRateLimiter(inv.Policy.Ratelimit, st, nil)
							if rerr != nil {
								return rerr
							}
							out, err = r.Explain(ctx, state.Sender{Login: c.String("user"), Client: c.String("client")})
						}
						if err != nil {
							return err
						}
						fmt.Fprint(c.App.Writer, out)
						return nil
					})
				},
			},
			{
				Name:      "delete",
				Usage:     "delete entries by key, by prefix, or the ones a triplet or sender uses",
				ArgsUsage: "[KEY...]",
				Description: `Deletes each KEY given (as "state list" prints them), every key under
--prefix (which must start with grey/ or rate/), the triplet of --client,
--sender and --recipient, or the rate counter of --user. A deleted triplet
is greylisted again on its next attempt; a deleted counter starts from zero.`,
				Flags: []cli.Flag{
					inventoryFlag(),
					nodeFlag(),
					&cli.StringFlag{Name: "prefix", Usage: "delete every key starting with `PREFIX`"},
					&cli.StringFlag{Name: "client", Usage: "client `ADDRESS` of the triplet (or trusted client's counter without --recipient)"},
					&cli.StringFlag{Name: "sender", Usage: "envelope `SENDER` of the triplet"},
					&cli.StringFlag{Name: "recipient", Usage: "envelope `RECIPIENT` of the triplet"},
					&cli.StringFlag{Name: "user", Usage: "SASL `LOGIN` whose rate counter to delete"},
				},
				Action: func(c *cli.Context) error {
					keys := c.Args().Slice()
					switch {
					case c.String("recipient") != "":
						if c.String("client") == "" {
							return cli.Exit("state delete: a triplet needs --client too", 2)
						}
						tk, _ := state.GreylistKeys(state.Triplet{Client: c.String("client"), Sender: c.String("sender"), Recipient: c.String("recipient")})
						keys = append(keys, tk)
					case c.String("user") != "" || c.String("client") != "":
						k, _ := state.RateKey(state.Sender{Login: c.String("user"), Client: c.String("client")})
						keys = append(keys, k)
					}
					if len(keys) == 0 && c.String("prefix") == "" {
						return cli.Exit("state delete: name KEYs, --prefix, a triplet (--client --sender --recipient) or --user", 2)
					}
					return withState(c, func(ctx context.Context, _ *inventory.Inventory, st state.Store) error {
						n := 0
						for _, k := range keys {
							ok, err := st.Delete(ctx, k)
							if err != nil {
								return err
							}
							if ok {
								n++
							} else {
								fmt.Fprintf(c.App.ErrWriter, "%s: no such entry\n", k)
							}
						}
						if p := c.String("prefix"); p != "" {
							m, err := state.DeleteMatching(ctx, st, p)
							n += m
							if err != nil {
								return err
							}
						}
						fmt.Fprintf(c.App.Writer, "deleted %d entr%s\n", n, plural(n, "y", "ies"))
						return nil
					})
				},
			},
		},
	}
}

// withState loads the inventory, opens its store, runs f and closes the
// store (a bbolt store commits what f changed before the command exits).
func withState(c *cli.Context, f func(context.Context, *inventory.Inventory, state.Store) error) error {
	inv, err := loadAs(c, c.String("inventory"))
	if err != nil {
		return cli.Exit(err.Error(), 1)
	}
	ctx, cancel := context.WithTimeout(c.Context, time.Minute)
	defer cancel()
	st, err := state.Open(ctx, inv.Policy.State, nil)
	if err != nil {
		return cli.Exit(err.Error(), 1)
	}
	err = f(ctx, inv, st)
	if cerr := st.Close(); err == nil && cerr != nil {
		err = cerr
	}
	if err != nil {
		if _, ok := err.(cli.ExitCoder); ok {
			return err
		}
		return cli.Exit(err.Error(), 1)
	}
	return nil
}

func plural(n int, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}
