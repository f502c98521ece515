// Package manpage renders section 8 manual pages from urfave/cli command
// definitions, so that they never drift from --help: one page for the
// program and its list of commands, one per command. `mailnode gen-man`
// (hidden; the package build runs it) writes them.
package manpage

import (
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"
)

// Pages renders one page per visible command and one for the program,
// keyed by file name.
func Pages(app *cli.App) (map[string]string, error) {
	pages := map[string]string{}
	top := &cli.App{
		Name:        app.Name,
		Usage:       app.Usage,
		Description: mdEscape(app.Description) + "\n\nEach command has a page of its own: " + strings.Join(seeAlso(app), ", ") + ".",
		Flags:       app.Flags,
		Commands:    manCommands(app.Commands),
		UsageText:   app.Name + " [--help] [--version] COMMAND [options]",
	}
	text, err := top.ToManWithSection(8)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", app.Name, err)
	}
	pages[app.Name+".8"] = text
	for _, cmd := range app.Commands {
		if cmd.Hidden || cmd.Name == "help" {
			continue
		}
		name := app.Name + "-" + cmd.Name
		usage := app.Name + " " + cmd.Name + " [options]"
		if len(cmd.Subcommands) > 0 {
			usage = app.Name + " " + cmd.Name + " COMMAND [options]"
		}
		page := &cli.App{
			Name:        name,
			Usage:       cmd.Usage,
			Description: mdEscape(cmd.Description) + "\n\nSee also: " + app.Name + "(8).",
			Flags:       cmd.Flags,
			Commands:    manCommands(cmd.Subcommands),
			UsageText:   usage,
		}
		if page.Description == "\n\nSee also: "+app.Name+"(8)." {
			page.Description = cmd.Usage + "." + page.Description
		}
		text, err := page.ToManWithSection(8)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		pages[name+".8"] = text
	}
	return pages, nil
}

func seeAlso(app *cli.App) []string {
	var refs []string
	for _, cmd := range app.Commands {
		if !cmd.Hidden && cmd.Name != "help" {
			refs = append(refs, app.Name+"-"+cmd.Name+"(8)")
		}
	}
	return refs
}

// manCommands are the commands a page lists: without the help command
// urfave/cli adds, descriptions escaped.
func manCommands(cmds []*cli.Command) []*cli.Command {
	var out []*cli.Command
	for _, c := range cmds {
		if c.Name == "help" {
			continue
		}
		cc := *c
		cc.Description = mdEscape(c.Description)
		out = append(out, &cc)
	}
	return out
}

// mdEscape keeps a description's text as written: the page is rendered
// from Markdown, where "<text>" would vanish as HTML and "_" or "*" start
// emphasis.
var mdEscape = strings.NewReplacer(`\`, `\\`, "<", `\<`, ">", `\>`, "*", `\*`, "_", `\_`).Replace
