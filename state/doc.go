// Package state is policyd's memory: greylisting with postgrey's rules and
// per-sender rate limits, kept in a Store that survives restarts (bbolt, one
// file owned by one process) or is shared by several nodes (Redis, on its own
// or behind Sentinel, whose master the store follows across a failover).
//
// # Wiring (policy package)
//
// Build both once from the inventory, with one store:
//
//	st, err := state.Open(ctx, inv.Policy.State, nil)         // nil clock: time.Now
//	gl, err := state.NewGreylister(inv.Policy.Greylist, st, nil) // nil when greylisting is off
//	rl, err := state.NewRateLimiter(inv.Policy.Ratelimit, st, nil) // nil when no limits
//	defer st.Close()
//
// Nil values are valid and never object, so the caller needs no "enabled"
// checks. Then, in the RCPT state only, after the ACL matrix has accepted the
// recipient (a 550 of the matrix always wins):
//
//   - outside sender → local recipient, no auth, no trust:
//     res, err := gl.Check(ctx, state.Triplet{Client: client_address, Sender: sender, Recipient: recipient})
//   - auth or trust (any accepted recipient):
//     res, err := rl.Check(ctx, state.Sender{Login: sasl_username, Client: client_address}, instance)
//
// res.Action == "" means no objection (answer DUNNO as the matrix says);
// otherwise answer "action=" + res.Action (a 450). res.Reason is a short
// constant for the mail log and metrics. err != nil means the store could not
// be read or written: log it and send no reply (Postfix then applies
// default_action=451 4.3.5) — never DUNNO, never a 5xx.
//
// Relay recipients are not greylisted (the relay domain's own MX does it),
// and mail from auth or trust sessions never is.
//
// # Greylisting
//
// As postgrey 1.37 (/usr/sbin/postgrey): the triplet is the client's /24
// (IPv4) or /64 (IPv6) network, the sender (lower case; +extension, BATV tag
// and VERP numbers removed) and the recipient (lower case). The first attempt
// is answered "450 4.7.1 Greylisted, please try again in N seconds", N the
// seconds left of the delay; an attempt at least Delay after the first passes
// if it comes within RetryWindow of the first, otherwise the triplet starts
// over. A passed triplet passes until it is unused for Expire. A client
// address whose triplets passed greylisting AutoWhitelistAfter times (counted
// at most once an hour, on a triplet's first pass) is whitelisted until unused
// for Expire. Clients in whitelist_clients (networks) and senders whose domain
// or a parent domain of it is in whitelist_senders are never greylisted.
//
// Chosen beyond postgrey:
//   - The null sender <> is never greylisted at RCPT. Sender address
//     verification probes (Postfix reject_unverified_sender, Exim callouts)
//     use <> and stop after RCPT; greylisting them would make other sites
//     defer our users' outgoing mail. Bounces to our users are accepted at
//     once and still go through the spam gate.
//   - Mail to postmaster@ (any local domain, any case) is never greylisted
//     (RFC 5321 4.5.1: it must always be reachable).
//
// # Rate limits
//
// Per SASL login, else per trusted client address, over a sliding hour kept
// in six 10-minute buckets (see RateWindow): a counted message stops counting
// 50 to 60 minutes later. Recipients are counted one per RCPT. A message is
// counted once, on the first RCPT that carries a new Postfix "instance"
// attribute (the RateLimiter remembers the instances it counted for an hour,
// in memory: one SMTP transaction never spans two nodes). So the policy
// wiring must pass the instance attribute; an empty instance counts a message
// on every RCPT. recipient_count at END-OF-MESSAGE is not needed. Over either
// limit the answer is "450 4.7.1 Rate limit exceeded for <who>, try again
// later" and nothing is counted, so a sender who stops is let through again
// as the window slides. Limits of 0 mean no limit; an override replaces only
// its non-zero fields; a network override applies to each address in it.
//
// # Stores
//
// Store has six methods (greylist step, rate step, get, scan, delete, close);
// the rules themselves are written once in Go (logic.go) and once as Lua for
// Redis, and TestStoresAgree runs both on one random sequence. Bolt keeps an
// in-memory buffer of recent updates and commits it once its oldest update
// is 200 ms old; a crash
// loses at most the updates of the last second (see Bolt). Redis updates are
// atomic Lua scripts and keys expire by themselves (see Redis).
package state
