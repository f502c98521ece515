package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/mailnode/mailnode/internal/manpage"
)

// genManCommand writes the manual pages from the command definitions, so
// that they never drift from --help: mailnode.8 for the program and its
// list of commands, mailnode-COMMAND.8 for each command. Hidden: the
// package build (debian/rules) runs it, nobody else needs to.
func genManCommand() *cli.Command {
	return &cli.Command{
		Name:      "gen-man",
		Usage:     "write the section 8 manual pages into DIR",
		ArgsUsage: "DIR",
		Hidden:    true,
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return cli.Exit("gen-man: want one argument, the output directory", 2)
			}
			dir := c.Args().First()
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return cli.Exit(fmt.Sprintf("gen-man: %v", err), 2)
			}
			pages, err := manpage.Pages(c.App)
			if err != nil {
				return cli.Exit(fmt.Sprintf("gen-man: %v", err), 2)
			}
			for name, text := range pages {
				if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
					return cli.Exit(fmt.Sprintf("gen-man: %v", err), 2)
				}
			}
			return nil
		},
	}
}
