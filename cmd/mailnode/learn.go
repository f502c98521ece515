package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/mailnode/mailnode/spam"
)

// maxLearnBytes bounds the message learn reads: the largest message
// Postfix accepts by default, with room for the headers delivery adds.
const maxLearnBytes = 64 << 20

func learnCommand() *cli.Command {
	return &cli.Command{
		Name:      "learn",
		Usage:     "train the spam engine with one message from standard input, as spam or as ham",
		ArgsUsage: "spam|ham",
		Description: `learn reads one message (RFC 5322, as stored) from standard input and
teaches the spam engine's Bayes classifier that it is spam or ham:

   --rspamd URL     POST URL/learnspam or URL/learnham to rspamd's controller
                    worker (port 11334 in Debian's rspamd); rspamd takes it from
                    its secure_ip addresses, the node itself by default, without
                    a password
   --spamd ADDRESS  TELL to spamd (HOST:PORT or a socket path) with
                    Message-class spam or ham and Set: local; spamd must run
                    with --allow-tell

With dovecot.spam_learning, render-config writes the IMAPSieve rules and a
wrapper that run it: a message moved into the Junk folder is learned as spam,
one moved out of it (except into Trash) as ham. A message the engine learned
as that class already is not an error.

Exit status: 0 learned, 1 the engine refused or could not be reached, 2 bad
arguments or input.`,
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "rspamd", Usage: "rspamd controller `URL`, e.g. http://127.0.0.1:11334"},
			&cli.StringFlag{Name: "spamd", Usage: "spamd `ADDRESS`, HOST:PORT or a unix socket path"},
			&cli.DurationFlag{Name: "timeout", Value: 30 * time.Second, Usage: "give up after this long"},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return cli.Exit("learn: give spam or ham", 2)
			}
			class, err := spam.ParseClass(c.Args().First())
			if err != nil {
				return cli.Exit("learn: "+err.Error(), 2)
			}
			var l spam.Learner
			switch {
			case c.String("rspamd") != "" && c.String("spamd") != "":
				return cli.Exit("learn: give --rspamd or --spamd, not both", 2)
			case c.String("rspamd") != "":
				l = &spam.RspamdLearner{ControllerURL: c.String("rspamd")}
			case c.String("spamd") != "":
				l = &spam.SpamdLearner{Address: c.String("spamd")}
			default:
				return cli.Exit("learn: give the engine: --rspamd URL or --spamd ADDRESS", 2)
			}
			msg, err := io.ReadAll(io.LimitReader(os.Stdin, maxLearnBytes+1))
			if err != nil {
				return cli.Exit(fmt.Sprintf("learn: reading the message: %v", err), 2)
			}
			if len(msg) == 0 {
				return cli.Exit("learn: no message on standard input", 2)
			}
			if len(msg) > maxLearnBytes {
				return cli.Exit(fmt.Sprintf("learn: the message is larger than %d bytes", maxLearnBytes), 2)
			}
			ctx, cancel := context.WithTimeout(context.Background(), c.Duration("timeout"))
			defer cancel()
			if err := l.Learn(ctx, class, msg); err != nil {
				return cli.Exit(fmt.Sprintf("learn %s: %v", class, err), 1)
			}
			return nil
		},
	}
}
