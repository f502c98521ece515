package inventory

import "strings"

// Address extensions (postfix.recipient_delimiter): with "+", bob+news@
// reaches bob@. Postfix looks up the whole address first and the base
// address only when the whole one is unknown; it never splits postmaster,
// MAILER-DAEMON or double-bounce, nor (when "-" is a delimiter) owner-foo
// and foo-request, nor at the first character or off an empty extension.
// The node mirrors that, for its local domains only, so that the matrix,
// the lists and greylisting see the address Postfix delivers to.

// RecipientDelimiterChars are the characters postfix.recipient_delimiter
// may hold: none of them can occur in a host name, a map key's syntax or a
// main.cf value's.
const RecipientDelimiterChars = "+-=_~"

// splitExtension returns the local part without its extension; ok is false
// when Postfix would not split it.
func splitExtension(local, delims string) (base string, ok bool) {
	if delims == "" {
		return "", false
	}
	switch strings.ToLower(local) {
	case "postmaster", "mailer-daemon", "double-bounce":
		return "", false
	}
	if strings.IndexByte(delims, '-') >= 0 {
		l := strings.ToLower(local)
		if strings.HasPrefix(l, "owner-") || (len(l) > 8 && strings.HasSuffix(l, "-request")) {
			return "", false
		}
	}
	i := strings.IndexAny(local, delims)
	if i <= 0 || i == len(local)-1 {
		return "", false
	}
	return local[:i], true
}

// base returns local@domain without its extension when the domain is local,
// the whole address is not itself a mailbox, alias or list, and Postfix
// would split it; "" otherwise. local and domain are normalized.
func (x *index) base(local, domain string) string {
	if x.delim == "" || domain == "" || x.classes[domain] != Local {
		return ""
	}
	b, ok := splitExtension(local, x.delim)
	if !ok {
		return ""
	}
	full := local + "@" + domain
	if x.virtual.has(full) || x.isMailbox(full) || x.routed[full] {
		return ""
	}
	return b + "@" + domain
}

// BaseAddress returns the normalized address without its extension where
// postfix.recipient_delimiter makes Postfix deliver bob+news@ to bob@, and
// NormalizeAddress(addr) everywhere else.
func (inv *Inventory) BaseAddress(addr string) string {
	l, d := SplitAddress(addr)
	if b := inv.idx.base(l, d); b != "" {
		return b
	}
	if d == "" {
		return l
	}
	return l + "@" + d
}
