// Package acl is the from/to/auth ACL matrix of docs/design.md as a pure
// function, shared by both daemons: policyd (package policy) answers
// Postfix with its verdict at RCPT time, and milterd (package milter) asks
// it whether a message is spam-checked.
//
// A Cell names one square of the matrix: the sender's class (local, relay,
// outside), how the session is authorized (none, SASL, trusted network) and
// the recipient's class. Decide classifies one envelope into its Cell and
// applies the matrix's rules, with the two refinements the inventory adds
// (internal lists; policy.sender_login: strict), returning one Verdict: accept
// or reject, a named Reason, the exact 550 reply text and whether the mail is
// spam-checked. SpamCheck and SpamCheckAny answer that last question for a
// cell or a message; IsNullSender and NullSenderClass say how the null
// sender is classified.
//
// The package holds no state and does no I/O; it imports only package
// inventory. Greylisting and rate limits, which need state, stay in policyd.
package acl
