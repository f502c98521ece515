package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"

	"github.com/urfave/cli/v2"
	"gopkg.in/yaml.v3"

	"github.com/mailnode/mailnode/dkim"
	"github.com/mailnode/mailnode/dns"
	"github.com/mailnode/mailnode/inventory"
	"github.com/mailnode/mailnode/render"
)

// dkimRotateCommand is `mailnode dkim rotate`.
func dkimRotateCommand() *cli.Command {
	return &cli.Command{
		Name:  "rotate",
		Usage: "add a new DKIM selector and key to a domain, or retire an old one",
		UsageText: `mailnode dkim rotate --inventory FILE --domain D [--algorithm rsa|ed25519] [--selector NEW] [--write]
mailnode dkim rotate --inventory FILE --domain D --retire OLD [--resolver HOST:PORT] [--write]`,
		Description: `Rotating a DKIM key takes three runs, with DNS publication in between:

1. mailnode dkim rotate --domain D [--algorithm rsa|ed25519] --write
   Creates a key for a new selector (--selector, default mxYYYYMMDD plus "r" for
   RSA or "e" for Ed25519) under dkim.key_dir and adds the selector to the
   domain's dkim list in the inventory. Without --write the key is created and the
   inventory change is only printed, as a diff, with the TXT record to publish.
   Then run render-config, publish dns/D.zone (it now has both selectors' TXT
   records) and reload milterd. milterd signs with every selector listed, so mail
   carries the old and the new signature; receivers that cannot fetch the new key
   yet still verify the old one.

2. Wait until mailnode dns check shows dkim:NEW ok (the record is live through
   the resolver), plus the longest TTL your name servers use.

3. mailnode dkim rotate --domain D --retire OLD --write
   Refuses unless another selector of OLD's algorithm is live in DNS with the key
   on disk (asked through node.resolver or --resolver; a SERVFAIL or timeout also
   refuses). Then drops OLD from the inventory: after render-config and a reload,
   milterd stops signing with it and the zone no longer publishes it. The key file
   stays, because mail signed with OLD may still be verified for a while.

   Run the same command again once OLD's TXT record is gone from DNS: it checks
   that the resolver no longer finds the old key (NXDOMAIN or NODATA) and deletes
   the key file (with --write; without, it says what it would delete).

--write rewrites the inventory in place (same file mode, atomically): only the
lines of the dkim list change, comments and layout elsewhere are kept; the result
is parsed back and must describe the same inventory with only that change.

Exit status: 0 done (or printed), 1 refused (DNS not ready yet), 2 usage errors.`,
		Flags: []cli.Flag{
			inventoryFlag(),
			&cli.StringFlag{Name: "domain", Aliases: []string{"d"}, Required: true, Usage: "the local `DOMAIN` whose key rotates"},
			&cli.StringFlag{Name: "algorithm", Value: "rsa", Usage: "key type of the new selector: `rsa` (2048 bits) or ed25519"},
			&cli.StringFlag{Name: "selector", Usage: "name of the new selector (default mxYYYYMMDD + r|e)"},
			&cli.StringFlag{Name: "retire", Usage: "retire the `OLD` selector instead (see above)"},
			&cli.StringFlag{Name: "resolver", Usage: "with --retire: ask this resolver (`HOST:PORT`) instead of node.resolver"},
			&cli.BoolFlag{Name: "write", Usage: "rewrite the inventory file (and, retiring, delete a key no longer published)"},
		},
		Action: dkimRotate,
	}
}

var selectorRe = regexp.MustCompile(`^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)

func dkimRotate(c *cli.Context) error {
	path := c.String("inventory")
	src, err := os.ReadFile(path)
	if err != nil {
		return cli.Exit(err.Error(), 2)
	}
	inv, err := loadAndReport(c)
	if err != nil {
		return err
	}
	d := inv.Domain(c.String("domain"))
	if d == nil || d.Class != "local" {
		return cli.Exit(fmt.Sprintf("dkim rotate: %s is not a local domain of the inventory", c.String("domain")), 2)
	}
	if old := c.String("retire"); old != "" {
		return retireSelector(c, inv, d, path, src, strings.ToLower(old))
	}
	return addSelector(c, inv, d, path, src)
}

func addSelector(c *cli.Context, inv *inventory.Inventory, d *inventory.Domain, path string, src []byte) error {
	alg := strings.ToLower(c.String("algorithm"))
	if alg != "rsa" && alg != "ed25519" {
		return cli.Exit(fmt.Sprintf("dkim rotate: --algorithm %q: use rsa or ed25519", alg), 2)
	}
	sel := strings.ToLower(c.String("selector"))
	if sel == "" {
		sel = newSelectorName(inv, d, alg, time.Now())
	}
	if !selectorRe.MatchString(sel) {
		return cli.Exit(fmt.Sprintf("dkim rotate: %q is not a valid selector (letters, digits, '-')", sel), 2)
	}
	for _, s := range d.DKIM {
		if s.Selector == sel {
			return cli.Exit(fmt.Sprintf("dkim rotate: %s already has selector %s", d.Name, sel), 2)
		}
	}
	out := c.App.Writer
	keyPath := dkim.KeyPath(inv.DKIM.KeyDir, d.Name, sel)
	key, err := dkim.LoadKey(keyPath, alg)
	switch {
	case err == nil:
		fmt.Fprintf(out, "using the existing key %s (%s)\n", keyPath, alg)
	case errors.Is(err, dkim.ErrNoKey):
		if key, err = dkim.Generate(alg); err == nil {
			err = dkim.WriteKey(keyPath, key)
		}
		if err != nil {
			return cli.Exit(err.Error(), 2)
		}
		fmt.Fprintf(out, "created %s (%s)\n", keyPath, alg)
	default:
		return cli.Exit(err.Error(), 2)
	}
	txt, err := dkim.TXTValue(key)
	if err != nil {
		return cli.Exit(err.Error(), 2)
	}
	newSrc, err := editSelectors(src, d.Name, sel, alg, true)
	if err != nil {
		return cli.Exit(fmt.Sprintf("dkim rotate: %s: %v", path, err), 2)
	}
	if err := applyEdit(c, path, src, newSrc); err != nil {
		return err
	}
	fmt.Fprintf(out, "\nThe record to publish (render-config writes it into dns/%s.zone):\n%s IN TXT %s\n", d.Name, dkim.RecordName(sel, d.Name), zoneTXT(txt))
	var old []string
	for _, s := range d.DKIM {
		if s.Algorithm == alg {
			old = append(old, s.Selector)
		}
	}
	fmt.Fprintf(out, "\nNext: render-config, publish the zone, reload milterd (it signs with every selector);\n"+
		"once `mailnode dns check --domain %s` shows dkim:%s ok, retire the old selector", d.Name, sel)
	if len(old) > 0 {
		fmt.Fprintf(out, ": mailnode dkim rotate --domain %s --retire %s --write", d.Name, old[0])
	}
	fmt.Fprintln(out)
	return nil
}

// newSelectorName is mxYYYYMMDD plus r or e, with -2, -3... when taken.
func newSelectorName(inv *inventory.Inventory, d *inventory.Domain, alg string, now time.Time) string {
	base := "mx" + now.UTC().Format("20060102") + alg[:1] // r or e
	taken := func(s string) bool {
		for _, x := range d.DKIM {
			if x.Selector == s {
				return true
			}
		}
		_, err := os.Stat(dkim.KeyPath(inv.DKIM.KeyDir, d.Name, s))
		return err == nil
	}
	name := base
	for i := 2; taken(name); i++ {
		name = fmt.Sprintf("%s-%d", base, i)
	}
	return name
}

func retireSelector(c *cli.Context, inv *inventory.Inventory, d *inventory.Domain, path string, src []byte, old string) error {
	out := c.App.Writer
	resolver := inv.Node.Resolver
	if r := c.String("resolver"); r != "" {
		resolver = r
	}
	ck := &dns.Checker{Resolver: resolver}
	ctx, cancel := context.WithTimeout(c.Context, 30*time.Second)
	defer cancel()
	idx := slices.IndexFunc(d.DKIM, func(s inventory.Selector) bool { return s.Selector == old })
	keyPath := dkim.KeyPath(inv.DKIM.KeyDir, d.Name, old)

	if idx < 0 {
		// Second run: the selector is out of the inventory; delete its key
		// once DNS no longer publishes it.
		data, err := os.ReadFile(keyPath)
		if errors.Is(err, os.ErrNotExist) {
			fmt.Fprintf(out, "%s is not a selector of %s and has no key in %s: nothing to do\n", old, d.Name, filepath.Dir(keyPath))
			return nil
		}
		if err != nil {
			return cli.Exit(err.Error(), 2)
		}
		var p string
		for _, alg := range []string{"rsa", "ed25519"} {
			if k, err := dkim.ParseKey(keyPath, data, alg); err == nil {
				txt, _ := dkim.TXTValue(k)
				p = dns.DKIMKeyOf(txt)
			}
		}
		name := dkim.RecordName(old, d.Name)
		recs, problem := ck.TXT(ctx, name)
		switch problem {
		case "", dns.ProblemNoData, dns.ProblemNXDomain:
		default:
			return cli.Exit(fmt.Sprintf("dkim rotate: cannot tell whether %s is gone from DNS: %s through %s; try again later", name, problem, resolver), 1)
		}
		for _, r := range recs {
			if p != "" && dns.DKIMKeyOf(r) == p {
				return cli.Exit(fmt.Sprintf("dkim rotate: %s still publishes the old key through %s: publish the rendered zone, wait for the TTL, and run this again", name, resolver), 1)
			}
		}
		if !c.Bool("write") {
			fmt.Fprintf(out, "%s is gone from DNS (%s); with --write, %s would be deleted\n", name, orString(problem, "other record"), keyPath)
			return nil
		}
		if err := os.Remove(keyPath); err != nil {
			return cli.Exit(err.Error(), 2)
		}
		fmt.Fprintf(out, "%s is gone from DNS; deleted %s\n", name, keyPath)
		return nil
	}

	// First run: drop the selector once another one of its algorithm is live.
	alg := d.DKIM[idx].Algorithm
	var live []string
	var notLive []string
	for _, s := range d.DKIM {
		if s.Selector == old || s.Algorithm != alg {
			continue
		}
		r := ck.DKIM(ctx, inv, d, s)
		if r.Status == dns.StatusOK || r.Status == dns.StatusWarn {
			live = append(live, s.Selector)
		} else {
			notLive = append(notLive, fmt.Sprintf("%s: found %s (%s)", s.Selector, r.Found, orString(r.Detail, r.Problem)))
		}
	}
	if len(live) == 0 {
		msg := fmt.Sprintf("dkim rotate: will not retire %s: no other %s selector of %s is live in DNS through %s", old, alg, d.Name, resolver)
		if len(notLive) == 0 {
			msg += "; add one first: mailnode dkim rotate --domain " + d.Name + " --algorithm " + alg + " --write"
		} else {
			msg += "; " + strings.Join(notLive, "; ")
		}
		return cli.Exit(msg, 1)
	}
	newSrc, err := editSelectors(src, d.Name, old, alg, false)
	if err != nil {
		return cli.Exit(fmt.Sprintf("dkim rotate: %s: %v", path, err), 2)
	}
	fmt.Fprintf(out, "%s is live in DNS with the key on disk; retiring %s\n", strings.Join(live, ", "), old)
	if err := applyEdit(c, path, src, newSrc); err != nil {
		return err
	}
	fmt.Fprintf(out, "\nNext: render-config, publish the zone, reload milterd (it stops signing with %s).\n"+
		"The key %s stays; once %s no longer resolves, run this command again to delete it.\n", old, keyPath, dkim.RecordName(old, d.Name))
	return nil
}

func orString(s, alt string) string {
	if s == "" {
		return alt
	}
	return s
}

// applyEdit prints the change as a diff and, with --write, writes it.
func applyEdit(c *cli.Context, path string, src, newSrc []byte) error {
	out := c.App.Writer
	if _, err := inventory.Parse(newSrc, path); err != nil {
		return cli.Exit(fmt.Sprintf("dkim rotate: the changed inventory would not load: %v", err), 2)
	}
	diff := render.UnifiedDiff(path, path, src, newSrc)
	if !c.Bool("write") {
		fmt.Fprintf(out, "\nThe inventory change (not written; add --write to apply it):\n%s", diff)
		return nil
	}
	if err := writeFileAtomic(path, newSrc); err != nil {
		return cli.Exit(err.Error(), 2)
	}
	fmt.Fprintf(out, "\nwrote %s:\n%s", path, diff)
	return nil
}

func writeFileAtomic(path string, data []byte) error {
	st, err := os.Stat(path)
	if err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*")
	if err != nil {
		return err
	}
	tmp := f.Name()
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(st.Mode().Perm())
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
	}
	return err
}

// editSelectors adds (add) or removes the selector sel of domain in the
// inventory text src. It edits the text in place where the dkim list is in
// block style (only the lines of that entry change) and falls back to
// re-encoding the YAML node tree otherwise. Either way the result is
// decoded again and must equal the original with exactly that change.
func editSelectors(src []byte, domain, sel, alg string, add bool) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		return nil, err
	}
	if doc.Kind != yaml.DocumentNode || len(doc.Content) == 0 {
		return nil, fmt.Errorf("not a YAML document")
	}
	idx, item := findDomain(doc.Content[0], domain)
	if item == nil {
		return nil, fmt.Errorf("no domain %s in the domains list", domain)
	}
	verify := func(out []byte) bool { return sameButSelector(src, out, idx, sel, alg, add) }
	if out, ok := editText(src, item, sel, alg, add); ok && verify(out) {
		return out, nil
	}
	editNode(item, sel, alg, add)
	var b bytes.Buffer
	enc := yaml.NewEncoder(&b)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, err
	}
	enc.Close()
	if !verify(b.Bytes()) {
		return nil, fmt.Errorf("could not edit the dkim list of %s safely; edit it by hand", domain)
	}
	return b.Bytes(), nil
}

func mapValue(m *yaml.Node, key string) (*yaml.Node, *yaml.Node) {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil, nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if m.Content[i].Value == key {
			return m.Content[i], m.Content[i+1]
		}
	}
	return nil, nil
}

func findDomain(root *yaml.Node, domain string) (int, *yaml.Node) {
	_, seq := mapValue(root, "domains")
	if seq == nil || seq.Kind != yaml.SequenceNode {
		return -1, nil
	}
	for i, it := range seq.Content {
		_, n := mapValue(it, "name")
		if n == nil {
			continue
		}
		if norm, err := inventory.NormalizeDomain(n.Value); err == nil && norm == domain {
			return i, it
		}
	}
	return -1, nil
}

// lastLine is the last source line a node occupies (as far as its scalars show).
func lastLine(n *yaml.Node) int {
	l := n.Line
	for _, c := range n.Content {
		l = max(l, lastLine(c))
	}
	if n.Kind == yaml.ScalarNode && (n.Style == yaml.LiteralStyle || n.Style == yaml.FoldedStyle) {
		l += strings.Count(n.Value, "\n")
	}
	return l
}

// editText edits the block-style dkim list of item in place.
func editText(src []byte, item *yaml.Node, sel, alg string, add bool) ([]byte, bool) {
	lines := strings.SplitAfter(string(src), "\n")
	_, list := mapValue(item, "dkim")
	if list == nil || list.Kind != yaml.SequenceNode || list.Style&yaml.FlowStyle != 0 || len(list.Content) == 0 {
		return nil, false
	}
	entry := func(e *yaml.Node) string {
		_, s := mapValue(e, "selector")
		if s == nil {
			return ""
		}
		return strings.ToLower(s.Value)
	}
	// dash is the column (0-based) of an entry's "- ".
	dash := func(e *yaml.Node) (int, bool) {
		line := lines[e.Line-1]
		col := e.Column - 1
		i := strings.LastIndexByte(line[:min(col, len(line))], '-')
		if i < 0 || strings.TrimSpace(line[:i]) != "" {
			return 0, false // not the first line of its entry
		}
		return i, true
	}
	if add {
		last := list.Content[len(list.Content)-1]
		d, ok := dash(last)
		if !ok {
			return nil, false
		}
		ind := strings.Repeat(" ", d)
		var text string
		if last.Style&yaml.FlowStyle != 0 || last.Kind != yaml.MappingNode {
			text = fmt.Sprintf("%s- {selector: %s, algorithm: %s}\n", ind, sel, alg)
		} else {
			inner := strings.Repeat(" ", last.Column-1)
			text = fmt.Sprintf("%s- selector: %s\n%salgorithm: %s\n", ind, sel, inner, alg)
		}
		at := lastLine(last) // insert after this line (1-based)
		if at > len(lines) {
			return nil, false
		}
		if !strings.HasSuffix(lines[at-1], "\n") {
			lines[at-1] += "\n"
		}
		lines = slices.Insert(lines, at, text)
		return []byte(strings.Join(lines, "")), true
	}
	for i, e := range list.Content {
		if entry(e) != sel {
			continue
		}
		if _, ok := dash(e); !ok {
			return nil, false
		}
		from, to := e.Line, lastLine(e) // 1-based, inclusive
		if i+1 < len(list.Content) && list.Content[i+1].Line <= to {
			return nil, false // shares a line with the next entry
		}
		if len(list.Content) == 1 {
			return nil, false // the list would be empty: let the encoder write []
		}
		lines = slices.Delete(lines, from-1, to)
		return []byte(strings.Join(lines, "")), true
	}
	return nil, false
}

// editNode makes the same change on the node tree.
func editNode(item *yaml.Node, sel, alg string, add bool) {
	_, list := mapValue(item, "dkim")
	if add {
		e := &yaml.Node{Kind: yaml.MappingNode, Style: yaml.FlowStyle, Content: []*yaml.Node{
			{Kind: yaml.ScalarNode, Value: "selector"}, {Kind: yaml.ScalarNode, Value: sel},
			{Kind: yaml.ScalarNode, Value: "algorithm"}, {Kind: yaml.ScalarNode, Value: alg},
		}}
		if list == nil || list.Kind != yaml.SequenceNode {
			list = &yaml.Node{Kind: yaml.SequenceNode}
			k, v := mapValue(item, "dkim")
			if k != nil {
				*v = *list
				list = v
			} else {
				item.Content = append(item.Content, &yaml.Node{Kind: yaml.ScalarNode, Value: "dkim"}, list)
			}
		}
		list.Content = append(list.Content, e)
		return
	}
	if list == nil {
		return
	}
	list.Content = slices.DeleteFunc(list.Content, func(e *yaml.Node) bool {
		_, s := mapValue(e, "selector")
		return s != nil && strings.ToLower(s.Value) == sel
	})
}

// sameButSelector reports whether newSrc decodes to oldSrc plus (add) or
// minus the selector entry of domain number idx, and nothing else.
func sameButSelector(oldSrc, newSrc []byte, idx int, sel, alg string, add bool) bool {
	var o, n map[string]any
	if yaml.Unmarshal(oldSrc, &o) != nil || yaml.Unmarshal(newSrc, &n) != nil {
		return false
	}
	od, ok1 := domainAt(o, idx)
	nd, ok2 := domainAt(n, idx)
	if !ok1 || !ok2 {
		return false
	}
	isSel := func(e any) bool {
		m, ok := e.(map[string]any)
		return ok && strings.EqualFold(fmt.Sprint(m["selector"]), sel)
	}
	if add {
		l, _ := nd["dkim"].([]any)
		if len(l) == 0 {
			return false
		}
		m, ok := l[len(l)-1].(map[string]any)
		if !ok || len(m) != 2 || m["selector"] != sel || m["algorithm"] != alg {
			return false
		}
		if ol, had := od["dkim"].([]any); had && len(ol) > 0 || len(l) > 1 {
			nd["dkim"] = l[:len(l)-1]
		} else {
			if _, had := od["dkim"]; had {
				nd["dkim"] = od["dkim"]
			} else {
				delete(nd, "dkim")
			}
		}
	} else {
		ol, _ := od["dkim"].([]any)
		nl, _ := nd["dkim"].([]any)
		if slices.IndexFunc(nl, isSel) >= 0 || slices.IndexFunc(ol, isSel) < 0 {
			return false
		}
		od["dkim"] = slices.DeleteFunc(slices.Clone(ol), isSel)
		if len(nl) == 0 {
			nd["dkim"] = []any{}
		}
	}
	return reflect.DeepEqual(o, n)
}

func domainAt(doc map[string]any, idx int) (map[string]any, bool) {
	l, ok := doc["domains"].([]any)
	if !ok || idx < 0 || idx >= len(l) {
		return nil, false
	}
	m, ok := l[idx].(map[string]any)
	return m, ok
}
