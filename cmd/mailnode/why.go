package main

import (
	"fmt"
	"os"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/mailnode/mailnode/maillog"
)

func whyCommand() *cli.Command {
	return &cli.Command{
		Name:      "why",
		Usage:     "the story of a message (QUEUE-ID) or of every message from or to an ADDRESS, from the mail log",
		ArgsUsage: "QUEUE-ID|ADDRESS",
		Description: `why reads the mail log — Postfix's own lines and the decision lines of policyd
and milterd — and prints, in order, what happened to a message: each
recipient's policy decision (matrix cell, reason, greylisting or rate limit
state), milterd's decision (signatures made, SPF/DKIM/DMARC results, the spam
score with its builtin and engine parts and its symbols, the verdict), and
Postfix's own lines: the client, queueing, refusals, and each recipient's
delivery status (sent, deferred, bounced) with its relay and reason.

With a queue id: that message, after the earlier temporary refusals (greylisting,
rate limits) of its sender and recipients. With an address (anything with "@";
"<>" is the null sender): every message and refused recipient whose envelope
sender or recipient is that address since --since, each as a story, oldest first.
A message an alias forwarded off the node with an SRS sender is found by the
sender it arrived with, by the SRS one, and by the alias (Postfix's orig_to=).

How lines are tied together: Postfix's and milterd's lines by the queue id.
policyd's lines carry queue_id when Postfix had one at RCPT time, which it has
not for a message's first recipient; such a line is tied to Postfix's refusal
of the same client address, sender and recipient within three seconds (a RCPT
refused by policyd, or by Postfix after policyd's DUNNO), or else to the
message of the same client address and sender whose session was open then
(each recipient decided once per message). A recipient refused before any was
accepted has no queue id (NOQUEUE) and is a story of its own.

--maillog names a file or a glob, and may be given more than once; files ending
in .gz are read through gzip, so logrotate's older files can be included. Whole
files last written before --since are skipped. "-" reads standard input, e.g.
  journalctl -u postfix@- -u mailnode-policyd -u mailnode-milterd -o short-iso-precise --since -24h | mailnode why --maillog - alice@example.com
Syslog time stamps without a year are read in the local time zone.

Exit status: 0 when a story was found, 1 when none, 2 on bad arguments or an
unreadable log.`,
		Flags: []cli.Flag{
			&cli.DurationFlag{Name: "since", Value: 24 * time.Hour, Usage: "how far back to look"},
			&cli.StringSliceFlag{Name: "maillog", Value: cli.NewStringSlice(defaultMailLog), Usage: "`FILE` or glob of the mail log (repeatable; .gz read through gzip; - is stdin)"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return cli.Exit("why: give one QUEUE-ID or ADDRESS", 2)
			}
			if c.Duration("since") <= 0 {
				return cli.Exit("why: --since must be a positive duration, e.g. 24h", 2)
			}
			query, err := maillog.Question(c.Args().First())
			if err != nil {
				return cli.Exit("why: "+err.Error(), 2)
			}
			since := time.Now().Add(-c.Duration("since"))
			w := maillog.NewWhy(since)
			files, err := maillog.Files(c.StringSlice("maillog"), since)
			if err != nil {
				return cli.Exit("why: "+err.Error(), 2)
			}
			for _, f := range files {
				if f == "-" {
					err = w.Read("stdin", os.Stdin)
				} else {
					err = w.ReadFile(f)
				}
				if err != nil {
					return cli.Exit("why: "+err.Error(), 2)
				}
			}
			stories := w.Stories(query)
			if len(stories) == 0 {
				return cli.Exit(fmt.Sprintf("why: nothing about %s in %d log lines since %s", query, w.Lines, since.Format(time.RFC3339)), 1)
			}
			for i, s := range stories {
				if i > 0 {
					fmt.Fprintln(c.App.Writer)
				}
				if _, err := s.WriteTo(c.App.Writer); err != nil {
					return err
				}
			}
			return nil
		},
	}
}
