// Package milter is mailnode's Postfix milter (milterd): it DKIM-signs mail
// that local senders submit and, on exactly the mail the ACL matrix (package
// acl) spam-checks, verifies SPF, DKIM and DMARC (one Authentication-Results
// header) and runs the spam gate (X-Spam-* headers, tag, reject or hold).
//
// The package is three layers, outside in:
//
//   - Server (server.go, guard.go, backend.go): the listening socket
//     (Listen), the go-milter protocol server, and a guard that checks every
//     packet's framing before go-milter parses it, with limits and timeouts.
//     The backend drives one Transaction per message.
//   - Transaction (transaction.go): one message as it streams: bounded
//     header storage, the body hashed chunk by chunk (never buffered), and at
//     the end a Result: the Decision and the header changes to make.
//   - Decide (decide.go): the pure decision which message gets signed,
//     verified or passed, made once the headers are known.
//
// The inbound checks are listed once, in order, in spamchecks.go (checks.go
// holds the DKIM one); verdict.go turns their results into the spam verdict.
// antivirus.go streams checked (and, by default, signed) messages to clamd
// as they arrive and refuses a virus at the end (spam.antivirus).
// srs.go rewrites the envelope sender of mail forwarded off the node at the
// end of the message and serves Postfix the SRS reversal over a socketmap
// (forwarding.srs).
// build.go makes the Filter from an inventory at start and on each reload,
// keeping the DNS resolver when node.resolver did not change. runtime.go
// tunes the Go runtime for milterd. Tests drive a Transaction directly, or a
// Server over a socket with package miltertest's client.
//
// The contract it implements is docs/design.md ("milterd"); docs/flow.md
// walks a message through it.
package milter
