package inventory

// Helpers for policyd's hot path. policyd classifies two addresses per
// request at tens of thousands of requests per second; NormalizeDomain's IDNA
// mapping and per-label regexp cost more than the rest of a decision. Nearly
// every address on the wire is plain ASCII, for which IDNA is the identity
// after lower-casing, so LookupAddress checks the labels by hand and falls
// back to SplitAddress for everything else (IDN, xn-- labels, spaces, brackets).
// The answers are the same as Classify, IsList and NormalizeAddress give; a
// fuzz test in policy_helpers_test.go holds the two paths together.

// Address is what policyd needs to know about one envelope address.
type Address struct {
	Local  string // lower-cased local part
	Domain string // normalized domain ("" when the address has none, "invalid:..." when it is not a host name)
	Class  Class  // Outside for no or invalid domain
	List   bool   // an internal list of a local domain
	// Base is the address without its extension when
	// postfix.recipient_delimiter split one off ("" otherwise): the
	// address Postfix delivers to, and the one lists and greylisting see.
	Base string
}

// Normalized returns local@domain as NormalizeAddress would.
func (a Address) Normalized() string {
	if a.Domain == "" {
		return a.Local
	}
	return a.Local + "@" + a.Domain
}

// LookupAddress normalizes and classifies addr in one pass: Class equals
// Classify(addr), List equals IsList(addr), Normalized() equals
// NormalizeAddress(addr), Base is BaseAddress(addr) when that differs.
func (inv *Inventory) LookupAddress(addr string) Address {
	var a Address
	l, d, ok, special := quickSplit(addr)
	if ok && special {
		// An xn-- (or other IDNA-reserved) label: only an inventory domain
		// is known to be valid IDNA already; anything else takes the slow path.
		_, ok = inv.idx.classes[d]
	}
	if ok {
		a.Local, a.Domain = l, d
	} else {
		a.Local, a.Domain = SplitAddress(addr)
	}
	if a.Domain != "" {
		a.Class = inv.idx.classes[a.Domain]
		if a.Class == Local {
			a.List = inv.idx.lists.has(a.Normalized())
			if !a.List && inv.idx.delim != "" {
				if a.Base = inv.idx.base(a.Local, a.Domain); a.Base != "" {
					a.List = inv.idx.lists.has(a.Base)
				}
			}
		}
	}
	return a
}

// quickSplit is SplitAddress for addresses made only of printable ASCII
// without spaces or angle brackets whose domain is a plain LDH name. ok is
// false when the slow path must decide; special is true when a label has
// hyphens in positions 3 and 4 (xn--), which IDNA validates further.
func quickSplit(addr string) (local, domain string, ok, special bool) {
	at := -1
	upper := false
	for i := 0; i < len(addr); i++ {
		c := addr[i]
		if c <= ' ' || c >= 0x7f || c == '<' || c == '>' {
			return "", "", false, false
		}
		if c == '@' {
			at = i
		}
		if 'A' <= c && c <= 'Z' {
			upper = true
		}
	}
	if at < 0 {
		return "", "", false, false
	}
	if upper {
		addr = asciiLower(addr)
	}
	d, ok, special := quickDomain(addr[at+1:])
	if !ok {
		return "", "", false, false
	}
	return addr[:at], d, true, special
}

// quickDomain checks a lower-case ASCII domain (optional trailing dot) the
// way NormalizeDomain would and returns it without the dot. special reports
// labels that IDNA treats further (xn--, hyphens in positions 3 and 4).
func quickDomain(s string) (d string, ok, special bool) {
	if len(s) > 0 && s[len(s)-1] == '.' {
		s = s[:len(s)-1]
	}
	if s == "" || len(s) > 253 {
		return "", false, false
	}
	start := 0
	for i := 0; i <= len(s); i++ {
		if i < len(s) && s[i] != '.' {
			c := s[i]
			if !('a' <= c && c <= 'z' || '0' <= c && c <= '9' || c == '-') {
				return "", false, false
			}
			continue
		}
		l := s[start:i]
		if len(l) == 0 || len(l) > 63 || l[0] == '-' || l[len(l)-1] == '-' {
			return "", false, false
		}
		if len(l) >= 4 && l[2] == '-' && l[3] == '-' {
			special = true
		}
		start = i + 1
	}
	return s, true, special
}

// lowerASCII lower-cases the ASCII letters of s, allocating only when it
// has upper-case ones.
func lowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if 'A' <= s[i] && s[i] <= 'Z' {
			return asciiLower(s)
		}
	}
	return s
}

func asciiLower(s string) string {
	b := []byte(s)
	for i, c := range b {
		if 'A' <= c && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return string(b)
}
