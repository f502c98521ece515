package dns

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"strconv"
	"strings"

	"github.com/mailnode/mailnode/inventory"
)

// MTA-STS (RFC 8461) and TLS-RPT (RFC 8460): what a local domain with
// domains[].mta_sts or domains[].tlsrpt publishes. The policy text is the
// file a web server at mta-sts.<domain> serves as
// /.well-known/mta-sts.txt (render-config writes it, see PolicyPath); the
// zone carries the TXT records that announce it and the address of
// mta-sts.<domain>.

// PolicyPath is where render-config writes a domain's policy file in its
// output tree: the web root of https://mta-sts.<domain>/.
func PolicyPath(domain string) string {
	return "mta-sts/" + domain + "/.well-known/mta-sts.txt"
}

// MTASTSPolicy is the policy file of local domain d (RFC 8461 §3.2): its
// mode, one mx line per MX host the zone names (every node of the tier, in
// tier order) and max_age, LF line ends. It is "" without mta_sts.
func MTASTSPolicy(inv *inventory.Inventory, d *inventory.Domain) string {
	m := d.MTASTS
	if m == nil {
		return ""
	}
	var b strings.Builder
	b.WriteString("version: STSv1\n")
	b.WriteString("mode: " + m.Mode + "\n")
	for _, n := range inv.TierNodes() {
		b.WriteString("mx: " + strings.ToLower(strings.TrimSuffix(n.Hostname, ".")) + "\n")
	}
	b.WriteString("max_age: " + strconv.Itoa(m.MaxAge) + "\n")
	return b.String()
}

// MTASTSID is the id of a policy text: 20 hexadecimal digits of its
// SHA-256, so the id changes whenever the policy does and is the same from
// every node of the tier (RFC 8461 §3.1 allows 1 to 32 alphanumerics).
func MTASTSID(policy string) string {
	h := sha256.Sum256([]byte(policy))
	return hex.EncodeToString(h[:10])
}

// MTASTSRecord is the TXT value at _mta-sts.<domain> for a policy text.
func MTASTSRecord(policy string) string { return "v=STSv1; id=" + MTASTSID(policy) }

// TLSRPTRecord is the TXT value at _smtp._tls.<domain> for a tlsrpt
// value: its report addresses, comma-separated without spaces.
func TLSRPTRecord(rua string) string {
	var us []string
	for _, u := range strings.Split(rua, ",") {
		if u = strings.TrimSpace(u); u != "" {
			us = append(us, u)
		}
	}
	return "v=TLSRPTv1; rua=" + strings.Join(us, ",")
}

// Policy is a parsed MTA-STS policy.
type Policy struct {
	Version string
	Mode    string
	MX      []string // patterns as written, lower case
	MaxAge  int
}

// ParsePolicy parses a policy file (RFC 8461 §3.2): "key: value" lines
// ended by LF or CRLF; unknown keys are ignored, as the RFC says. It
// refuses a policy without version STSv1, with an unknown mode, without
// a max_age of at most a year, or in mode enforce or testing without mx.
func ParsePolicy(text string) (Policy, error) {
	var p Policy
	seenAge := false
	for i, line := range strings.Split(text, "\n") {
		line = strings.TrimRight(line, "\r")
		if strings.TrimSpace(line) == "" {
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			return p, fmt.Errorf("line %d: %q is not \"key: value\"", i+1, line)
		}
		k, v = strings.TrimSpace(k), strings.TrimSpace(v)
		switch k {
		case "version":
			p.Version = v
		case "mode":
			p.Mode = v
		case "mx":
			p.MX = append(p.MX, strings.ToLower(strings.TrimSuffix(v, ".")))
		case "max_age":
			n, err := strconv.Atoi(v)
			if err != nil || n < 0 || n > inventory.MaxMTASTSMaxAge || len(v) > 10 {
				return p, fmt.Errorf("line %d: max_age %q is not seconds from 0 to %d", i+1, v, inventory.MaxMTASTSMaxAge)
			}
			p.MaxAge, seenAge = n, true
		}
	}
	switch {
	case p.Version != "STSv1":
		return p, fmt.Errorf("version %q, want STSv1", p.Version)
	case p.Mode != "enforce" && p.Mode != "testing" && p.Mode != "none":
		return p, fmt.Errorf("mode %q is not enforce, testing or none", p.Mode)
	case !seenAge:
		return p, fmt.Errorf("no max_age")
	case p.Mode != "none" && len(p.MX) == 0:
		return p, fmt.Errorf("mode %s without an mx line", p.Mode)
	}
	return p, nil
}

// MXMatches reports whether an MX host matches a policy's mx pattern
// (RFC 8461 §4.1): exactly, or "*.example.com" for one more label on the
// left. Case does not matter; trailing dots are ignored.
func MXMatches(pattern, host string) bool {
	pattern = strings.ToLower(strings.TrimSuffix(pattern, "."))
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if rest, ok := strings.CutPrefix(pattern, "*."); ok {
		label, parent, ok := strings.Cut(host, ".")
		return ok && label != "" && parent == rest
	}
	return pattern == host
}

// ParseSTSRecord parses the TXT value at _mta-sts.<domain> (RFC 8461
// §3.1): "v=STSv1; id=…" with id 1 to 32 alphanumerics; other fields are
// ignored. It returns the id.
func ParseSTSRecord(s string) (string, error) {
	fields := strings.Split(s, ";")
	if strings.TrimSpace(fields[0]) != "v=STSv1" {
		return "", fmt.Errorf("does not start with v=STSv1")
	}
	id := ""
	for _, f := range fields[1:] {
		k, v, _ := strings.Cut(strings.TrimSpace(f), "=")
		if k == "id" {
			id = v
		}
	}
	if id == "" || len(id) > 32 || strings.IndexFunc(id, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9')
	}) >= 0 {
		return "", fmt.Errorf("id %q is not 1 to 32 letters and digits", id)
	}
	return id, nil
}

// stsRecords are the zone records of d's mta_sts and tlsrpt: the policy
// announcement, mta-sts.<domain> on every node's addresses (a CNAME to
// host when no node has one) and the TLS-RPT record.
func stsRecords(inv *inventory.Inventory, d *inventory.Domain, origin, host string, addrs []netip.Addr) []Record {
	var out []Record
	if policy := MTASTSPolicy(inv, d); policy != "" {
		purpose := "MTA-STS: the policy is https://mta-sts." + d.Name + "/.well-known/mta-sts.txt"
		out = append(out, Record{Name: "_mta-sts." + origin, Type: TypeTXT, Text: MTASTSRecord(policy), Purpose: purpose})
		name := "mta-sts." + origin
		for _, ip := range addrs {
			t := TypeA
			if ip.Is6() {
				t = TypeAAAA
			}
			out = append(out, Record{Name: name, Type: t, Addr: ip, Purpose: purpose})
		}
		if len(addrs) == 0 {
			out = append(out, Record{Name: name, Type: TypeCNAME, Target: host, Purpose: purpose})
		}
	}
	if d.TLSRPT != "" {
		out = append(out, Record{Name: "_smtp._tls." + origin, Type: TypeTXT, Text: TLSRPTRecord(d.TLSRPT),
			Purpose: "TLS-RPT: where senders report TLS failures"})
	}
	return out
}
