package inventory

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
)

// Mailbox quotas (dovecot.quota, domains[].mailboxes[].quota): a size is
// a whole number with an optional unit, k, M, G or T (powers of 1024, any
// case, an optional trailing B); without a unit it is bytes.

var sizeRe = regexp.MustCompile(`^([0-9]{1,15})\s*([kKmMgGtT]?)[bB]?$`)

// ParseSize reads a quota size ("500M", "1G", "100k", "1048576") and
// returns it in bytes and in the form Dovecot's quota_rule takes
// ("500M", "100K", "1048576B").
func ParseSize(s string) (bytes int64, dovecot string, err error) {
	m := sizeRe.FindStringSubmatch(strings.TrimSpace(s))
	if m == nil {
		return 0, "", fmt.Errorf("%q is not a size: a whole number with an optional unit k, M, G or T (e.g. 500M, 1G)", s)
	}
	n, _ := strconv.ParseInt(m[1], 10, 64)
	unit := strings.ToUpper(m[2])
	shift := map[string]uint{"": 0, "K": 10, "M": 20, "G": 30, "T": 40}[unit]
	if n == 0 {
		return 0, "", fmt.Errorf("%q: a quota of 0 would refuse every message; leave the field out for no limit", s)
	}
	if n > (1<<62)>>shift {
		return 0, "", fmt.Errorf("%q is too large", s)
	}
	if unit == "" {
		unit = "B"
	}
	return n << shift, m[1] + unit, nil
}

// QuotaOn reports whether any mailbox has a quota (dovecot.quota or a
// mailbox's own).
func (inv *Inventory) QuotaOn() bool {
	if inv.Dovecot.Quota != "" {
		return true
	}
	for i := range inv.Domains {
		for _, m := range inv.Domains[i].Mailboxes {
			if m.Quota != "" {
				return true
			}
		}
	}
	return false
}

// MailboxQuota returns a mailbox's storage limit in Dovecot's form, its
// own or dovecot.quota's ("" when it has none).
func (inv *Inventory) MailboxQuota(m Mailbox) string {
	q := m.Quota
	if q == "" {
		q = inv.Dovecot.Quota
	}
	if q == "" {
		return ""
	}
	_, d, err := ParseSize(q)
	if err != nil {
		return "" // Load has refused such an inventory already
	}
	return d
}
