package acl

import "strings"

// SafeReply reports whether a reply may leave policyd as its action=
// value. It is an allowlist, checked on every answer just before it is
// written: DUNNO, a 4xx (greylisting, rate limits), or one of the matrix's
// 550 texts, on one line. Anything else (OK in any spelling, since Postfix
// reads access actions without regard to case; PERMIT, REJECT, a 5xx that
// is not the matrix's, an empty action, a line break) is refused, and
// policyd then sends no reply at all, so Postfix applies its
// default_action (451 4.3.5): a defect can delay mail but never accept it
// or open the relay.
func SafeReply(r string) bool {
	for i := 0; i < len(r); i++ {
		if c := r[i]; c < ' ' || c == 0x7f {
			return false
		}
	}
	if r == "DUNNO" {
		return true
	}
	if len(r) > 4 && r[0] == '4' && digit(r[1]) && digit(r[2]) && r[3] == ' ' {
		return true
	}
	switch {
	case strings.HasPrefix(r, replyAuthRequired), strings.HasPrefix(r, replyForeignSender):
		return strings.HasSuffix(r, ">")
	case strings.HasPrefix(r, replyRelayDenied):
		return strings.HasSuffix(r, replyRelayDeniedEnd)
	case strings.HasPrefix(r, replyListPrefix):
		return strings.HasSuffix(r, replyListEnd)
	}
	return false
}

// ForeignSenderReply is the matrix's "Please use own mail service" reply
// for address, echoed as policyd echoes an envelope sender. milterd gives
// it for a header From: the login does not own (policy.sender_login: strict).
func ForeignSenderReply(address string) string {
	return replyForeignSender + echo(address) + ">"
}

func digit(c byte) bool { return c >= '0' && c <= '9' }
