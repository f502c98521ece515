package dkim

// Publish before sign: a selector signs once DNS shows its TXT record with
// the public half of the key on disk. Signing with a key receivers cannot
// fetch only makes dkim=fail; the rule below keeps a new selector out of
// the signatures until it is published, without turning a node whose zone
// is not published at all (a test network, a node being built) into one
// that signs nothing.

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/mailnode/mailnode/inventory"
)

// Publication is what DNS shows for one selector.
type Publication string

const (
	Published    Publication = "published"     // a DKIM record with this key's p=
	NotPublished Publication = "not-published" // NXDOMAIN, NODATA, or no DKIM key record
	Mismatch     Publication = "mismatch"      // DKIM records, none with this key (or revoked: empty p=)
	Unknown      Publication = "unknown"       // DNS could not tell (SERVFAIL, timeout, unreachable)
)

// TXTLookup returns the TXT records of name, each one string. When there
// are none, none says how DNS said so (NXDOMAIN, NODATA); err says that
// DNS could not tell. It is RotationDNS.Published.
type TXTLookup func(ctx context.Context, name string) (recs []string, none string, err error)

// SelectorState is one selector of a local domain: its key, what DNS shows
// and whether it signs.
type SelectorState struct {
	Domain, Selector, Algorithm string
	Key                         crypto.Signer // nil: no usable key (KeyErr says why)
	KeyErr                      error
	DNS                         Publication
	Detail                      string // what DNS said, when not Published
	Signing                     bool
	// SignsWith are, for a selector held back, the published selectors
	// of its domain that sign instead (shared by the domain's states).
	SignsWith []string
}

// CheckPublication asks lookup for the selector's record and compares its
// p= with the public half of key.
func CheckPublication(ctx context.Context, lookup TXTLookup, domain, selector string, key crypto.Signer) (Publication, string) {
	name := RecordName(selector, domain)
	want, err := TXTValue(key)
	if err != nil {
		return Unknown, err.Error()
	}
	recs, none, err := lookup(ctx, name)
	if err != nil {
		return Unknown, fmt.Sprintf("%s: %v", name, err)
	}
	if len(recs) == 0 {
		return NotPublished, fmt.Sprintf("%s: %s", name, orString(none, "no TXT record"))
	}
	p := publicKeyOf(want)
	var others int
	for _, r := range recs {
		tags, err := ParseTags(r)
		if err != nil {
			continue
		}
		if v, ok := tags["v"]; ok && StripFWS(v) != "DKIM1" {
			continue
		}
		pub, ok := tags["p"]
		if !ok {
			continue
		}
		if StripFWS(pub) == p {
			return Published, ""
		}
		others++
	}
	if others == 0 {
		return NotPublished, fmt.Sprintf("%s: no DKIM key record among %d TXT", name, len(recs))
	}
	return Mismatch, fmt.Sprintf("%s: p= is another key than the one on disk (or revoked)", name)
}

// DecideSigning sets Signing and Why of every state, domain by domain:
//   - a selector without a usable key never signs;
//   - a published selector signs;
//   - one not (yet) published, or published with another key, signs only
//     when no selector of its domain is published: then every selector
//     with a key signs, as before publication was checked, since holding
//     them all back would leave the domain's mail unsigned.
//
// Unknown counts as not published: the caller keeps the last answer over a
// DNS failure (see milter.Publisher).
func DecideSigning(states []SelectorState) {
	published := map[string][]string{}
	for _, s := range states {
		if s.Key != nil && s.DNS == Published {
			published[s.Domain] = append(published[s.Domain], s.Selector)
		}
	}
	for i := range states {
		s := &states[i]
		pub := published[s.Domain]
		s.SignsWith = nil
		switch {
		case s.Key == nil:
			s.Signing = false
		case s.DNS == Published:
			s.Signing = true
		case len(pub) > 0:
			s.Signing, s.SignsWith = false, pub
		default:
			s.Signing = true
		}
	}
}

// Why says why the selector signs or not, as DecideSigning decided. It is
// made when asked (the log, the status page, dkim status): a node with
// thousands of selectors does not keep a sentence for each.
func (s *SelectorState) Why() string {
	switch {
	case s.Key == nil:
		return fmt.Sprintf("no usable key: %v", s.KeyErr)
	case s.DNS == Published && s.Signing:
		return "published with the key on disk"
	case !s.Signing && len(s.SignsWith) > 0:
		return fmt.Sprintf("waits for its record (%s: %s); %s signs with %s", s.DNS, s.Detail, s.Domain, strings.Join(s.SignsWith, ", "))
	case s.Signing:
		return fmt.Sprintf("no selector of %s is published (%s: %s): every selector signs", s.Domain, s.DNS, s.Detail)
	}
	return "not decided"
}

// Selectors lists the selectors of inv's local domains (or of domain
// only), in inventory order, with their keys loaded from dkim.key_dir.
func Selectors(inv *inventory.Inventory, domain string) []SelectorState {
	var out []SelectorState
	for _, d := range inv.LocalDomains() {
		if domain != "" && d.Name != domain {
			continue
		}
		for _, s := range d.DKIM {
			st := SelectorState{Domain: d.Name, Selector: s.Selector, Algorithm: s.Algorithm, DNS: Unknown}
			st.Key, st.KeyErr = LoadKey(KeyPath(inv.DKIM.KeyDir, d.Name, s.Selector), s.Algorithm)
			if st.KeyErr != nil {
				st.Key = nil
			}
			out = append(out, st)
		}
	}
	return out
}

// CheckAll asks DNS about every state with a key and decides signing.
func CheckAll(ctx context.Context, lookup TXTLookup, states []SelectorState) {
	for i := range states {
		s := &states[i]
		if s.Key == nil {
			continue
		}
		s.DNS, s.Detail = CheckPublication(ctx, lookup, s.Domain, s.Selector, s.Key)
	}
	DecideSigning(states)
}

// WriteStatus writes states as the table of `mailnode dkim status` (one
// selector a line: domain, selector, algorithm, key, DNS, signing, why) and
// reports whether any selector does not sign.
func WriteStatus(w io.Writer, states []SelectorState) (held bool) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "DOMAIN\tSELECTOR\tALGORITHM\tKEY\tDNS\tSIGNING\tWHY")
	for _, s := range states {
		key := "present"
		if s.Key == nil {
			key = "missing"
			if !errors.Is(s.KeyErr, ErrNoKey) {
				key = "unusable"
			}
		}
		sign := "yes"
		if !s.Signing {
			sign, held = "no", true
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", s.Domain, s.Selector, s.Algorithm, key, s.DNS, sign, s.Why())
	}
	tw.Flush()
	return held
}

// WriteStage writes a rotation's stage lines (Stage) under a title; nothing
// when there are none.
func WriteStage(w io.Writer, title string, lines []string) {
	if len(lines) == 0 {
		return
	}
	fmt.Fprintf(w, "\n%s\n", title)
	for _, l := range lines {
		fmt.Fprintf(w, "  %s\n", l)
	}
}
