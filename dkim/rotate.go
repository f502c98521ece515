package dkim

// Key rotation (`mailnode dkim rotate`): adding a selector with a new key,
// retiring an old selector once another of its algorithm is live in DNS,
// and deleting the retired key once DNS no longer publishes it. Each run is
// planned here as a Step; the command prints it, shows the inventory change
// as a diff, and applies it with --write.

import (
	"context"
	"crypto"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/mailnode/mailnode/inventory"
)

// RotationDNS is what a rotation asks of DNS through the node's resolver:
// package dns's Checker.
type RotationDNS interface {
	// Published returns the TXT records of name. When there are none, none
	// says how the resolver said so (NXDOMAIN, NODATA); err says that it
	// could not tell (SERVFAIL, timeout, unreachable).
	Published(ctx context.Context, name string) (recs []string, none string, err error)
	// Live reports whether selector s of domain d is published with the
	// key on disk; when it is not, found says what was found instead.
	Live(ctx context.Context, inv *inventory.Inventory, d *inventory.Domain, s inventory.Selector) (live bool, found string)
}

// Rotation is one run of a rotation on domain Domain of the inventory Inv,
// read from the file Path whose text is Src.
type Rotation struct {
	Inv    *inventory.Inventory
	Domain *inventory.Domain
	Path   string
	Src    []byte
	Write  bool // the run applies its step (--write)

	// Retiring only: DNS is asked through Resolver (named in messages).
	DNS      RotationDNS
	Resolver string
	// Grace is how long another selector must have been live before the
	// old one is retired: mail it signed is still in flight and in queues,
	// and receivers' caches may still miss the new record. Its start is the
	// first time a rotation run saw that selector live (NoteLive). Now is
	// the clock (zero: time.Now).
	Grace time.Duration
	Now   time.Time
}

// DefaultGrace is dkim rotate's --grace: two days.
const DefaultGrace = 48 * time.Hour

// LiveSincePath is the file next to a selector's key where rotation runs
// record when they first saw its record live in DNS (RFC 3339, UTC).
func LiveSincePath(keyDir, domain, selector string) string {
	return KeyPath(keyDir, domain, selector) + ".live-since"
}

// LiveSince reads when a selector was first seen live; ok is false when
// it has not been (or the file is unreadable).
func LiveSince(keyDir, domain, selector string) (t time.Time, ok bool) {
	b, err := os.ReadFile(LiveSincePath(keyDir, domain, selector))
	if err != nil {
		return time.Time{}, false
	}
	t, err = time.Parse(time.RFC3339, strings.TrimSpace(string(b)))
	return t, err == nil
}

// NoteLive records now as the time a selector was first seen live, unless
// a time is recorded already; it returns the recorded time.
func NoteLive(keyDir, domain, selector string, now time.Time) (time.Time, error) {
	if t, ok := LiveSince(keyDir, domain, selector); ok {
		return t, nil
	}
	now = now.UTC().Truncate(time.Second)
	if err := os.WriteFile(LiveSincePath(keyDir, domain, selector), []byte(now.Format(time.RFC3339)+"\n"), 0o600); err != nil {
		return time.Time{}, fmt.Errorf("dkim: %w", err)
	}
	return now, nil
}

func (r Rotation) now() time.Time {
	if r.Now.IsZero() {
		return time.Now()
	}
	return r.Now
}

// Step is what one run does: what it reports, the inventory text it leads
// to (nil when the inventory stays), the key file it deletes, and what it
// says once applied.
type Step struct {
	Report    string // printed first
	Inventory []byte // the inventory's new text; nil: unchanged
	DeleteKey string // a retired key file Apply deletes
	Next      string // printed after the change
}

// Apply writes the step: the inventory at path (atomically, same mode) and
// the deletion of a retired key.
func (s Step) Apply(path string) error {
	if s.Inventory != nil {
		if err := inventory.Rewrite(path, s.Inventory); err != nil {
			return err
		}
	}
	if s.DeleteKey != "" {
		os.Remove(s.DeleteKey + ".live-since") // the record of when it went live, if any
		return os.Remove(s.DeleteKey)
	}
	return nil
}

// NotReadyError is a refusal because DNS does not show yet what the step
// needs; the same run may succeed later. Other errors are usage or set-up
// problems.
type NotReadyError struct{ msg string }

func (e *NotReadyError) Error() string { return e.msg }

func notReady(format string, a ...any) error {
	return &NotReadyError{msg: fmt.Sprintf(format, a...)}
}

var selectorName = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

// Add plans adding a selector of algorithm alg ("rsa" or "ed25519") named
// sel (NewSelectorName when "") to the domain. It creates the selector's
// key unless it exists, with or without Write: the record to publish is
// printed from it.
func (r Rotation) Add(alg, sel string, now time.Time) (Step, error) {
	d := r.Domain
	alg = strings.ToLower(alg)
	if alg != "rsa" && alg != "ed25519" {
		return Step{}, fmt.Errorf("dkim rotate: --algorithm %q: use rsa or ed25519", alg)
	}
	sel = strings.ToLower(sel)
	if sel == "" {
		sel = NewSelectorName(r.Inv, d, alg, now)
	}
	if !selectorName.MatchString(sel) {
		return Step{}, fmt.Errorf("dkim rotate: %q is not a valid selector (letters, digits, '-')", sel)
	}
	for _, s := range d.DKIM {
		if s.Selector == sel {
			return Step{}, fmt.Errorf("dkim rotate: %s already has selector %s", d.Name, sel)
		}
	}
	var st Step
	keyPath := KeyPath(r.Inv.DKIM.KeyDir, d.Name, sel)
	key, created, err := EnsureKey(keyPath, alg)
	switch {
	case err != nil:
		return Step{}, err
	case created:
		st.Report = fmt.Sprintf("created %s (%s)\n", keyPath, alg)
	default:
		st.Report = fmt.Sprintf("using the existing key %s (%s)\n", keyPath, alg)
	}
	txt, err := TXTValue(key)
	if err != nil {
		return Step{}, err
	}
	if st.Inventory, err = r.edit(sel, alg, true); err != nil {
		return Step{}, err
	}
	var b strings.Builder
	fmt.Fprintf(&b, "\nThe record to publish (render-config writes it into dns/%s.zone):\n%s IN TXT %s\n", d.Name, RecordName(sel, d.Name), ZoneTXT(txt))
	var old []string
	for _, s := range d.DKIM {
		if s.Algorithm == alg {
			old = append(old, s.Selector)
		}
	}
	fmt.Fprintf(&b, "\nNext: render-config, publish the zone, reload milterd (it signs with every selector);\n"+
		"once `mailnode dns check --domain %s` shows dkim:%s ok, retire the old selector", d.Name, sel)
	if len(old) > 0 {
		fmt.Fprintf(&b, ": mailnode dkim rotate --domain %s --retire %s --write", d.Name, old[0])
	}
	b.WriteString("\n")
	st.Next = b.String()
	return st, nil
}

// NewSelectorName is mxYYYYMMDD plus r or e, with -2, -3... when taken by
// a selector of d or a key file.
func NewSelectorName(inv *inventory.Inventory, d *inventory.Domain, alg string, now time.Time) string {
	base := "mx" + now.UTC().Format("20060102") + alg[:1] // r or e
	taken := func(s string) bool {
		for _, x := range d.DKIM {
			if x.Selector == s {
				return true
			}
		}
		_, err := os.Stat(KeyPath(inv.DKIM.KeyDir, d.Name, s))
		return err == nil
	}
	name := base
	for i := 2; taken(name); i++ {
		name = fmt.Sprintf("%s-%d", base, i)
	}
	return name
}

// Retire plans retiring selector old. While old is in the inventory it is
// dropped once another selector of its algorithm is live in DNS with the
// key on disk; once it is out, its key file is deleted when DNS no longer
// publishes that key. Refusals are NotReadyErrors.
func (r Rotation) Retire(ctx context.Context, old string) (Step, error) {
	d := r.Domain
	old = strings.ToLower(old)
	idx := slices.IndexFunc(d.DKIM, func(s inventory.Selector) bool { return s.Selector == old })
	keyPath := KeyPath(r.Inv.DKIM.KeyDir, d.Name, old)

	if idx < 0 {
		// Second run: the selector is out of the inventory; delete its key
		// once DNS no longer publishes it.
		data, err := ReadKeyFile(keyPath)
		if errors.Is(err, ErrNoKey) {
			return Step{Report: fmt.Sprintf("%s is not a selector of %s and has no key in %s: nothing to do\n", old, d.Name, filepath.Dir(keyPath))}, nil
		}
		if err != nil {
			return Step{}, err
		}
		var p string
		for _, alg := range []string{"rsa", "ed25519"} {
			if k, err := ParseKey(keyPath, data, alg); err == nil {
				txt, _ := TXTValue(k)
				p = publicKeyOf(txt)
			}
		}
		name := RecordName(old, d.Name)
		recs, none, err := r.DNS.Published(ctx, name)
		if err != nil {
			return Step{}, notReady("dkim rotate: cannot tell whether %s is gone from DNS: %v through %s; try again later", name, err, r.Resolver)
		}
		for _, rec := range recs {
			if p != "" && publicKeyOf(rec) == p {
				return Step{}, notReady("dkim rotate: %s still publishes the old key through %s: publish the rendered zone, wait for the TTL, and run this again", name, r.Resolver)
			}
		}
		if !r.Write {
			return Step{Report: fmt.Sprintf("%s is gone from DNS (%s); with --write, %s would be deleted\n", name, orString(none, "other record"), keyPath)}, nil
		}
		return Step{DeleteKey: keyPath, Next: fmt.Sprintf("%s is gone from DNS; deleted %s\n", name, keyPath)}, nil
	}

	// First run: drop the selector once another one of its algorithm is live.
	alg := d.DKIM[idx].Algorithm
	var live, notLive []string
	for _, s := range d.DKIM {
		if s.Selector == old || s.Algorithm != alg {
			continue
		}
		if ok, found := r.DNS.Live(ctx, r.Inv, d, s); ok {
			live = append(live, s.Selector)
		} else {
			notLive = append(notLive, s.Selector+": found "+found)
		}
	}
	// The grace period runs from the first time a run saw a selector live.
	var ripe []string
	var wait []string
	now := r.now()
	for _, s := range live {
		since, err := NoteLive(r.Inv.DKIM.KeyDir, d.Name, s, now)
		if err != nil {
			return Step{}, err
		}
		if now.Sub(since) >= r.Grace {
			ripe = append(ripe, s)
		} else {
			wait = append(wait, fmt.Sprintf("%s is live since %s, so the grace period of %s ends at %s",
				s, since.Format(time.RFC3339), r.Grace, since.Add(r.Grace).Format(time.RFC3339)))
		}
	}
	if len(live) > 0 && len(ripe) == 0 {
		return Step{}, notReady("dkim rotate: will not retire %s yet: %s (mail signed with %s is still in flight and receivers' caches may miss the new record); run this again then, or pass --grace 0",
			old, strings.Join(wait, "; "), old)
	}
	live = ripe
	if len(live) == 0 {
		msg := fmt.Sprintf("dkim rotate: will not retire %s: no other %s selector of %s is live in DNS through %s", old, alg, d.Name, r.Resolver)
		if len(notLive) == 0 {
			msg += "; add one first: mailnode dkim rotate --domain " + d.Name + " --algorithm " + alg + " --write"
		} else {
			msg += "; " + strings.Join(notLive, "; ")
		}
		return Step{}, &NotReadyError{msg: msg}
	}
	newSrc, err := r.edit(old, alg, false)
	if err != nil {
		return Step{}, err
	}
	return Step{
		Report:    fmt.Sprintf("%s is live in DNS with the key on disk; retiring %s\n", strings.Join(live, ", "), old),
		Inventory: newSrc,
		Next: fmt.Sprintf("\nNext: render-config, publish the zone, reload milterd (it stops signing with %s).\n"+
			"The key %s stays; once %s no longer resolves, run this command again to delete it.\n", old, keyPath, RecordName(old, d.Name)),
	}, nil
}

// edit is the inventory text with selector sel added or removed; the
// result must load.
func (r Rotation) edit(sel, alg string, add bool) ([]byte, error) {
	out, err := inventory.EditSelectors(r.Src, r.Domain.Name, sel, alg, add)
	if err != nil {
		return nil, fmt.Errorf("dkim rotate: %s: %v", r.Path, err)
	}
	if _, err := inventory.Parse(out, r.Path); err != nil {
		return nil, fmt.Errorf("dkim rotate: the changed inventory would not load: %v", err)
	}
	return out, nil
}

// publicKeyOf is the p= value of a DKIM key record, whitespace removed.
func publicKeyOf(record string) string {
	tags, err := ParseTags(record)
	if err != nil {
		return ""
	}
	return StripFWS(tags["p"])
}

// ZoneTXT quotes a TXT value for a zone file, in strings of at most 255 bytes.
func ZoneTXT(v string) string {
	var out string
	for len(v) > 0 {
		n := min(len(v), 255)
		if out != "" {
			out += " "
		}
		out += `"` + v[:n] + `"`
		v = v[n:]
	}
	if out == "" {
		return `""`
	}
	return "( " + out + " )"
}

func orString(s, alt string) string {
	if s == "" {
		return alt
	}
	return s
}

// Stage says where the rotations of domain d stand, one line per
// algorithm, from the selectors' states (Selectors, then CheckAll) and the
// retired keys still on disk. The five steps: 1 add (the new selector is
// in the inventory, its record not visible yet), 2 published (visible, not
// signing yet), 3 signing (it signs; after a grace period, retire the
// old one), 4 retired (the old selector is out of the inventory, its
// record still visible), 5 delete key (the record is gone: the next
// --retire run deletes the key).
func Stage(ctx context.Context, inv *inventory.Inventory, d *inventory.Domain, states []SelectorState, lookup TXTLookup) []string {
	var lines []string
	for _, alg := range []string{"rsa", "ed25519"} {
		var sels []SelectorState
		for _, s := range states {
			if s.Domain == d.Name && s.Algorithm == alg {
				sels = append(sels, s)
			}
		}
		retired := retiredKeys(inv, d, alg)
		switch {
		case len(sels) >= 2:
			n, olds := sels[len(sels)-1], sels[:len(sels)-1]
			var oldNames []string
			for _, o := range olds {
				oldNames = append(oldNames, o.Selector)
			}
			old := strings.Join(oldNames, ", ")
			switch {
			case n.Key == nil:
				lines = append(lines, fmt.Sprintf("%s: step 1/5 add: %s has no usable key (%v): mailnode dkim keygen --domain %s", alg, n.Selector, n.KeyErr, d.Name))
			case n.DNS != Published:
				lines = append(lines, fmt.Sprintf("%s: step 1/5 add: %s is in the inventory, its record is %s (%s): render-config and publish dns/%s.zone; %s signs meanwhile", alg, n.Selector, n.DNS, n.Detail, d.Name, old))
			case !n.Signing:
				lines = append(lines, fmt.Sprintf("%s: step 2/5 published: %s is visible with its key; it signs from milterd's next check (within a minute) or reload", alg, n.Selector))
			default:
				since := ""
				if t, ok := LiveSince(inv.DKIM.KeyDir, d.Name, n.Selector); ok {
					since = " (live since " + t.Format(time.RFC3339) + ")"
				}
				lines = append(lines, fmt.Sprintf("%s: step 3/5 signing: %s is published and signs%s; after the grace period (--grace, default %s: mail in flight and in queues, receivers' caches), retire %s: mailnode dkim rotate --domain %s --retire %s --write", alg, n.Selector, since, DefaultGrace, old, d.Name, oldNames[0]))
			}
		case len(retired) > 0:
			for _, r := range retired {
				name := RecordName(r.selector, d.Name)
				if pub, detail := CheckPublication(ctx, lookup, d.Name, r.selector, r.key); pub == Published || pub == Unknown {
					lines = append(lines, fmt.Sprintf("%s: step 4/5 retired: %s is out of the inventory; %s is still %s %s: publish the rendered zone and wait for the TTL", alg, r.selector, name, pub, detail))
				} else {
					lines = append(lines, fmt.Sprintf("%s: step 5/5 delete key: %s is gone from DNS: mailnode dkim rotate --domain %s --retire %s --write deletes %s", alg, name, d.Name, r.selector, r.path))
				}
			}
		case len(sels) == 1:
			lines = append(lines, fmt.Sprintf("%s: no rotation in progress (%s)", alg, sels[0].Selector))
		}
	}
	return lines
}

type retiredKey struct {
	selector, path string
	key            crypto.Signer
}

// retiredKeys are the key files of alg under d's key directory whose
// selector is no longer in the inventory.
func retiredKeys(inv *inventory.Inventory, d *inventory.Domain, alg string) []retiredKey {
	dir := filepath.Dir(KeyPath(inv.DKIM.KeyDir, d.Name, "x"))
	names, _ := filepath.Glob(filepath.Join(dir, "*.key"))
	var out []retiredKey
	for _, p := range names {
		sel := strings.TrimSuffix(filepath.Base(p), ".key")
		if slices.ContainsFunc(d.DKIM, func(s inventory.Selector) bool { return s.Selector == sel }) {
			continue
		}
		data, err := ReadKeyFile(p)
		if err != nil {
			continue
		}
		if k, err := ParseKey(p, data, alg); err == nil {
			out = append(out, retiredKey{selector: sel, path: p, key: k})
		}
	}
	return out
}
