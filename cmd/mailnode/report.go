package main

import (
	"os"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/mailnode/mailnode/maillog"
)

// defaultMailLog is where Debian's rsyslog writes the mail facility, with
// logrotate's older files (mail.log.1, mail.log.2.gz, ...).
const defaultMailLog = "/var/log/mail.log*"

func reportCommand() *cli.Command {
	return &cli.Command{
		Name:  "report",
		Usage: "what shadow mode (policy.mode: shadow) would have refused, from the mail log",
		Description: `report reads the decision lines policyd and milterd wrote in shadow mode
(would_reject=, would_hold=) and prints what enforce mode would have refused or
held since --since: one row per daemon, matrix cell and reason with its count
and the reply enforce mode would have given, then up to three examples of each
with their exact replies. Read it before switching policy.mode to enforce.

--maillog names a file or a glob, and may be given more than once; files ending
in .gz are read through gzip, so logrotate's older files can be included. Whole
files last written before --since are skipped. "-" reads standard input, e.g.
  journalctl -u mailnode-policyd -u mailnode-milterd -o cat --since -24h | mailnode report --maillog -
Lines may carry a syslog prefix; every other line is ignored.`,
		Flags: []cli.Flag{
			&cli.DurationFlag{Name: "since", Value: 24 * time.Hour, Usage: "how far back to look"},
			&cli.StringSliceFlag{Name: "maillog", Value: cli.NewStringSlice(defaultMailLog), Usage: "`FILE` or glob of the mail log (repeatable; .gz read through gzip; - is stdin)"},
		},
		Action: func(c *cli.Context) error {
			if c.Duration("since") <= 0 {
				return cli.Exit("report: --since must be a positive duration, e.g. 24h", 2)
			}
			since := time.Now().Add(-c.Duration("since"))
			rp := maillog.NewReport(since)
			files, err := maillog.Files(c.StringSlice("maillog"), since)
			if err != nil {
				return cli.Exit("report: "+err.Error(), 2)
			}
			for _, f := range files {
				if f == "-" {
					err = rp.Read("stdin", os.Stdin)
				} else {
					err = rp.ReadFile(f)
				}
				if err != nil {
					return cli.Exit("report: "+err.Error(), 2)
				}
			}
			_, err = rp.WriteTo(c.App.Writer)
			return err
		},
	}
}
