// Package maillog is mailnode's human mail log: one line per decision, kept
// apart from a daemon's debug log, written without ever delaying the
// decision.
//
// A Line is a time stamp, the program's name and name=value fields, e.g.
// policyd's
//
//	2026-11-24T16:03:05.123Z policyd queue_id=4XyZ1 client=mail.example.org[198.51.100.7] sasl_user="" from=<a@example.org> to=<b@example.com> state=RCPT cell=outside/none->local rcpt=1 action=DUNNO reason=inbound spam_check=on
//
// A value is written bare when it is a plain word and Go-quoted otherwise
// (Line.String); an address goes inside <> and is escaped, never quoted
// (Line.Addr). The daemons fill in the fields (package policy: one line per
// RCPT decision); this package knows nothing of their decisions.
//
// Log collects lines in memory and one goroutine writes them every
// FlushInterval, so a slow log destination never delays a reply. When the
// destination stalls and more than MaxPending bytes wait, further lines are
// dropped and counted (Dropped, OnDrop). Log is also an io.Writer for whole
// lines, so a daemon's log/slog output can share the same batching.
//
// The log is read back too: Report gathers what shadow mode would have
// refused (`mailnode report`), Why ties Postfix's lines and both daemons'
// decision lines into the story of a message (`mailnode why`).
package maillog
