package maillog

import (
	"errors"
	"fmt"
	"regexp"
	"strings"
)

// MaxQuery bounds what `mailnode why` and the status page's /why may be
// asked: an address is at most 254 bytes (RFC 5321).
const MaxQuery = 254

// queueID is a Postfix queue id, short or long.
var queueID = regexp.MustCompile(`^[0-9A-Za-z]{6,20}$`)

// CheckQuery checks a question for Stories: a queue id, "<>" (the null
// sender) or an address: printable ASCII with one "@" or more and none of
// space, quotes, angle brackets, backslash or control characters. Its
// errors do not repeat the question (the status page shows them).
func CheckQuery(q string) error {
	switch {
	case q == "":
		return errors.New("the question is missing: give a queue id or an address")
	case len(q) > MaxQuery:
		return fmt.Errorf("the question is %d bytes long; at most %d", len(q), MaxQuery)
	case q == "<>", queueID.MatchString(q):
		return nil
	case !strings.Contains(q, "@"):
		return errors.New("the question is neither a queue id (6 to 20 letters and digits) nor an address (with @)")
	}
	for _, c := range []byte(q) {
		if c <= ' ' || c >= 0x7f || strings.IndexByte(`"<>\`, c) >= 0 {
			return fmt.Errorf("the question holds a character no address has (%q)", c)
		}
	}
	return nil
}

// Question reads what `mailnode why` is asked as one types it: the spaces
// around it and the angle brackets the log writes around an address
// (<alice@example.com>) are dropped, "<>" (the null sender) kept; then
// CheckQuery. (The status page's /why takes q as its links write it and
// checks it with CheckQuery alone.)
func Question(s string) (string, error) {
	q := strings.TrimSpace(s)
	if q != "<>" && strings.HasPrefix(q, "<") && strings.HasSuffix(q, ">") {
		q = q[1 : len(q)-1]
	}
	return q, CheckQuery(q)
}
