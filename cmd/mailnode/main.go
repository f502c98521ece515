// Command mailnode turns stock Postfix + Dovecot into an independent mail
// node driven by one domain inventory. Each subcommand lives in its own file
// of this package: config.go, render.go, policyd.go, milterd.go, dkim.go, dns.go,
// state.go, report.go. Each only wires flags to the package that does the work; the
// load generators of `make bench` are a program of their own,
// cmd/mailnode-bench.
package main

import (
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/mailnode/mailnode/internal/sysmon"
	"github.com/mailnode/mailnode/inventory"
)

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"

func newApp() *cli.App {
	return &cli.App{
		Name:    "mailnode",
		Usage:   "run Postfix + Dovecot as an independent mail node from one domain inventory",
		Version: version,
		Description: `mailnode reads one inventory (YAML) that lists the node, its local domains
(mailboxes, aliases, internal lists) and its relay domains (backup MX), and from it
renders the whole Postfix, Dovecot, unbound and DNS configuration, and runs the two
sidecars Postfix consults: policyd (the from/to/auth ACL matrix) and milterd (DKIM
signing, inbound verification, spam gating).

Start with:  mailnode config check --inventory examples/inventory.yaml`,
		EnableBashCompletion: true,
		Commands: []*cli.Command{
			configCommand(),
			renderCommand(),
			policydCommand(),
			milterdCommand(),
			dkimCommand(),
			dnsCommand(),
			stateCommand(),
			reportCommand(),
			whyCommand(),
			learnCommand(),
			genManCommand(),
			loadInventoryCommand(),
		},
	}
}

func main() {
	sysmon.KeepAwake(os.Args, "policyd", "milterd")
	useLoadHelper = os.Getenv("MAILNODE_LOAD_IN_PROCESS") == ""
	if err := newApp().Run(os.Args); err != nil {
		fmt.Fprintln(os.Stderr, "mailnode:", err)
		os.Exit(exitCode(err))
	}
}

// exitCode lets commands choose their exit status with cli.Exit.
func exitCode(err error) int {
	if e, ok := err.(cli.ExitCoder); ok {
		return e.ExitCode()
	}
	return 1
}

// nodeFlag is --node: the tier node (tier.nodes) the inventory is loaded
// as; its hostname and addresses become node.hostname and node.addresses.
func nodeFlag() *cli.StringFlag {
	return &cli.StringFlag{
		Name:    "node",
		Usage:   "load the inventory as this tier node (a hostname of tier.nodes; default node.hostname)",
		EnvVars: []string{"MAILNODE_NODE"},
	}
}

// loadAs loads the inventory at path as the node --node names.
func loadAs(c *cli.Context, path string) (*inventory.Inventory, error) {
	return inventory.LoadWith(path, inventory.LoadOptions{Node: c.String("node")})
}

// inventoryFlag is the --inventory flag every command shares.
func inventoryFlag() *cli.StringFlag {
	return &cli.StringFlag{
		Name:     "inventory",
		Aliases:  []string{"i"},
		Usage:    "the inventory `FILE` (YAML) describing the node and its domains",
		EnvVars:  []string{"MAILNODE_INVENTORY"},
		Required: true,
	}
}
