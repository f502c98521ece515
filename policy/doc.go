// Package policy is policyd: the from/to/auth ACL matrix of docs/design.md
// served to Postfix over its SMTP access policy delegation protocol
// (SMTPD_POLICY_README).
//
// The package has two halves, as everything in mailnode:
//
//   - Decide is a pure function of (request, inventory, options) that returns
//     one Decision record: the matrix cell (sender class, recipient class,
//     none/auth/trust), the action, a named Reason and the exact reply. The
//     matrix itself is package acl, which milterd shares; Decide adds the
//     protocol state and the wire form. It answers only DUNNO or a 550 —
//     never OK, never an empty action — so a wrong answer cannot open the
//     relay: Postfix's own permit_mynetworks, permit_sasl_authenticated,
//     reject_unauth_destination still follow.
//   - Server does the I/O: framing, limits and timeouts, one goroutine per
//     Postfix connection, many requests per connection, hot inventory
//     reload, metrics and the mail log (package maillog). Postfix holds one
//     policy connection per smtpd process, a few hundred per policyd at
//     most; 1,000 idle ones add 6-7 MiB to policyd's memory. On a malformed
//     request or internal trouble it sends no reply, logs a warning and
//     closes the connection; Postfix then applies default_action (451 4.3.5).
//
// Postfix frames every reject of a policy service as an access-table
// result: the client sees "550 5.7.1 <rcpt>: Recipient address rejected:
// " followed by policyd's text (test/policy_e2e_test.go checks it whole).
//
// Protocol choices (SMTPD_POLICY_README leaves them to the server):
//
//   - Unknown attributes are ignored; a repeated attribute is accepted and
//     the last value wins; an empty value is a value ("sender=" is the null
//     sender, "sasl_username=" an unauthenticated session).
//   - A line is "name=value" ended by LF (a CR before the LF is dropped); an
//     empty line ends the request. A line without "=", an empty name, a NUL
//     byte anywhere, a line longer than Limits.MaxLine, more than
//     Limits.MaxAttributes attributes or a request attribute other than
//     smtpd_access_policy is malformed: no reply, the connection is closed.
//   - The matrix is decided at protocol_state RCPT (sender restrictions
//     arrive there under smtpd_delay_reject). Every other state is answered
//     DUNNO; nothing is ever prepended, so never at END-OF-MESSAGE either. A
//     request without protocol_state is decided as RCPT, the stricter reading.
package policy
