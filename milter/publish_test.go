package milter

import (
	"context"
	"crypto/ed25519"
	"errors"
	"io"
	"log/slog"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	gomilter "github.com/d--j/go-milter"
	mdns "github.com/miekg/dns"

	"github.com/mailnode/mailnode/dkim"
	"github.com/mailnode/mailnode/dns/dnstest"
	"github.com/mailnode/mailnode/inventory"
	"github.com/mailnode/mailnode/milter/miltertest"
	"github.com/mailnode/mailnode/test/harness"
)

func txtRecord(t *testing.T, k dkim.Key) string {
	t.Helper()
	v, err := dkim.TXTValue(k.Signer)
	if err != nil {
		t.Fatal(err)
	}
	return dkim.RecordName(k.Selector, k.Domain) + " 60 IN TXT " + dkim.ZoneTXT(v)
}

// TestPublishBeforeSign: through a real milter socket, with node.resolver
// on the test DNS server. example.com's RSA selector is published, its new
// Ed25519 one not yet: mail carries one signature, the log says why; once
// the record is there, the next check signs with both. A record with
// another key holds a selector back too; a DNS failure keeps the last
// answer. example.net publishes nothing: its only selector signs.
func TestPublishBeforeSign(t *testing.T) {
	local, _ := testKeys(t)
	rsaCom, edCom := local["example.com"][0], local["example.com"][1]
	srvDNS := dnstest.Start(t, "example.com. 60 IN SOA ns.example.com. h.example.com. 1 3600 600 86400 1\n"+
		"example.net. 60 IN SOA ns.example.net. h.example.net. 1 3600 600 86400 1\n"+txtRecord(t, rsaCom))
	inv := testInventory(t)
	inv.Node.Resolver = srvDNS.Addr
	logs := &harness.SyncBuffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))

	f, _ := testFilter(t)
	p := &Publisher{Log: log, Timeout: time.Second}
	build := func(inv *inventory.Inventory, keys map[string][]dkim.Key) *Filter {
		nf := *f
		nf.Keys = keys
		return &nf
	}
	srv := NewServer(build(inv, p.Update(inv, local)))
	p.Apply = func(inv *inventory.Inventory, keys map[string][]dkim.Key) { srv.SetFilter(build(inv, keys)) }
	path := serve(t, srv)

	signatures := func(from string) []string {
		t.Helper()
		r, err := miltertest.Submit(miltertest.NewClient("unix", path), localMessage(from))
		if err != nil || r.Action.Type != gomilter.ActionAccept {
			t.Fatalf("submit: %v %v", err, r)
		}
		var sels []string
		for _, m := range r.Mods {
			if m.Type == gomilter.ActionInsertHeader && m.HeaderName == "DKIM-Signature" {
				for _, tag := range strings.Split(m.HeaderValue, ";") {
					if v, ok := strings.CutPrefix(strings.TrimSpace(tag), "s="); ok {
						sels = append(sels, v)
					}
				}
			}
		}
		slices.Sort(sels)
		return sels
	}
	state := func(domain, sel string) dkim.SelectorState {
		for _, s := range p.States() {
			if s.Domain == domain && s.Selector == sel {
				return s
			}
		}
		t.Fatalf("no state for %s/%s", domain, sel)
		return dkim.SelectorState{}
	}

	if got := signatures("alice@example.com"); strings.Join(got, ",") != "mx2026r" {
		t.Errorf("before publication: signed with %q, want mx2026r only", got)
	}
	if s := state("example.com", "mx2026e"); s.Signing || s.DNS != dkim.NotPublished || !strings.Contains(s.Why(), "example.com signs with mx2026r") {
		t.Errorf("mx2026e before publication: %+v", s)
	}
	if !strings.Contains(logs.String(), `level=WARN msg="milterd: dkim selector held back until DNS publishes its key" domain=example.com selector=mx2026e dns=not-published signing=no`) {
		t.Errorf("log:\n%s", logs)
	}
	if got := signatures("carol@example.net"); strings.Join(got, ",") != "mx2026r" {
		t.Errorf("example.net, nothing published: signed with %q, want its only selector", got)
	}

	// Published with another key: a mismatch, still held back.
	other := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	wrong, _ := dkim.NewKey("example.com", "mx2026e", "ed25519", other)
	if err := srvDNS.Add(txtRecord(t, wrong)); err != nil {
		t.Fatal(err)
	}
	p.Check()
	if s := state("example.com", "mx2026e"); s.Signing || s.DNS != dkim.Mismatch {
		t.Errorf("mx2026e with another key: %+v", s)
	}

	// The right record: the next check signs with both, without a reload.
	if err := srvDNS.Replace(dkim.RecordName("mx2026e", "example.com"), txtRecord(t, edCom)); err != nil {
		t.Fatal(err)
	}
	p.Check()
	if got := signatures("alice@example.com"); strings.Join(got, ",") != "mx2026e,mx2026r" {
		t.Errorf("after publication: signed with %q", got)
	}
	if !strings.Contains(logs.String(), "domain=example.com selector=mx2026e dns=published signing=yes") {
		t.Errorf("log lacks the change:\n%s", logs)
	}

	// SERVFAIL: the last answer stands.
	srvDNS.Fail(dkim.RecordName("mx2026e", "example.com"), mdns.TypeTXT, mdns.RcodeServerFailure)
	p.Check()
	if s := state("example.com", "mx2026e"); !s.Signing || s.DNS != dkim.Published || !strings.Contains(s.Detail, "keeping the last answer") {
		t.Errorf("over a DNS failure: %+v", s)
	}
}

func serve(t *testing.T, srv *Server) string {
	t.Helper()
	path := t.TempDir() + "/milter.sock"
	ln, err := Listen("unix:" + path)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		ln.Close()
		<-done
	})
	return path
}

func TestDecideSigning(t *testing.T) {
	k := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	st := []dkim.SelectorState{
		{Domain: "a.test", Selector: "old", Key: k, DNS: dkim.Published},
		{Domain: "a.test", Selector: "new", Key: k, DNS: dkim.NotPublished, Detail: "NXDOMAIN"},
		{Domain: "a.test", Selector: "gone", KeyErr: errFake},
		{Domain: "b.test", Selector: "only", Key: k, DNS: dkim.Unknown, Detail: "timeout"},
	}
	dkim.DecideSigning(st)
	want := []bool{true, false, false, true}
	for i, s := range st {
		if s.Signing != want[i] {
			t.Errorf("%s/%s: signing %v (%s)", s.Domain, s.Selector, s.Signing, s.Why())
		}
	}
}

var errFake = &inventory.Problem{Msg: "missing"}

// States answers with the last round while a check waits for DNS: the
// status page asks it and must not hang on a slow node.resolver.
func TestPublisherStatesDuringCheck(t *testing.T) {
	local, _ := testKeys(t)
	inv := testInventory(t)
	answer := func(context.Context, string) ([]string, string, error) { return nil, "NXDOMAIN", nil }
	p := &Publisher{Log: slog.New(slog.DiscardHandler), Lookup: answer}
	p.Update(inv, local)
	before := p.States()
	if len(before) == 0 {
		t.Fatal("no states after Update")
	}
	release, entered := make(chan struct{}), make(chan struct{}, 64)
	p.Lookup = func(ctx context.Context, name string) ([]string, string, error) {
		entered <- struct{}{}
		select {
		case <-release:
		case <-ctx.Done():
		}
		return nil, "NXDOMAIN", nil
	}
	done := make(chan struct{})
	go func() { p.Check(); close(done) }()
	<-entered // the check holds the publisher's lock and waits for DNS
	got := make(chan []dkim.SelectorState, 1)
	go func() { got <- p.States() }()
	select {
	case s := <-got:
		if len(s) != len(before) || s[0].DNS != before[0].DNS {
			t.Errorf("during a check: %+v, want the last round %+v", s, before)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("States waited for the check's DNS")
	}
	close(release)
	<-done
}

// A reload logs each selector new, changed or held back and a line
// counting them all, not every selector again: at 9,000 domains those
// lines were 2 MiB of milterd's reload peak.
func TestPublisherReloadLogsChanges(t *testing.T) {
	local, _ := testKeys(t)
	inv := testInventory(t)
	rsaCom, edCom := local["example.com"][0], local["example.com"][1]
	published := map[string]string{dkim.RecordName(rsaCom.Selector, rsaCom.Domain): rsaCom.Selector}
	var mu sync.Mutex
	lookup := func(ctx context.Context, name string) ([]string, string, error) {
		mu.Lock()
		defer mu.Unlock()
		for _, k := range []dkim.Key{rsaCom, edCom} {
			if dkim.RecordName(k.Selector, k.Domain) == name && published[name] != "" {
				v, err := dkim.TXTValue(k.Signer)
				return []string{v}, "", err
			}
		}
		return nil, "NXDOMAIN", nil
	}
	logs := &harness.SyncBuffer{}
	p := &Publisher{Log: slog.New(slog.NewTextHandler(logs, nil)), Lookup: lookup}
	seen := 0 // lines read before
	lines := func() []string {
		t.Helper()
		all := strings.Split(strings.TrimSpace(logs.String()), "\n")
		var out []string
		for _, l := range all[seen:] {
			if strings.Contains(l, "dkim selector") {
				out = append(out, l)
			}
		}
		seen = len(all)
		return out
	}
	has := func(ls []string, want string) bool {
		return slices.ContainsFunc(ls, func(l string) bool { return strings.Contains(l, want) })
	}

	p.Update(inv, local) // start: every selector, and the count
	start := lines()
	if len(start) != 4 || !has(start, "selectors=3 signing=2 held_back=1 new_or_changed=3") {
		t.Fatalf("at start:\n%s", strings.Join(start, "\n"))
	}

	p.Update(inv, local) // a reload, nothing changed: the one held back, and the count
	again := lines()
	if len(again) != 2 || !has(again, "selector=mx2026e dns=not-published signing=no") ||
		!has(again, "selectors=3 signing=2 held_back=1 new_or_changed=0") {
		t.Fatalf("a reload with nothing changed:\n%s", strings.Join(again, "\n"))
	}

	mu.Lock()
	published[dkim.RecordName(edCom.Selector, edCom.Domain)] = edCom.Selector
	mu.Unlock()
	p.Update(inv, local) // mx2026e published since
	changed := lines()
	if len(changed) != 2 || !has(changed, "domain=example.com selector=mx2026e dns=published signing=yes") ||
		!has(changed, "selectors=3 signing=3 held_back=0 new_or_changed=1") {
		t.Fatalf("a reload after publication:\n%s", strings.Join(changed, "\n"))
	}
}

// A reload keeps each key whose file holds the same key pair, and a
// domain whose keys all stay keeps its slice: the keys are held once, not
// twice, while milterd reloads. A key replaced on disk, or a selector
// added, is loaded anew.
func TestLoadKeysKeepsUnchanged(t *testing.T) {
	inv := testInventory(t)
	inv.DKIM.KeyDir = t.TempDir()
	local, _ := testKeys(t)
	rsaPEM, err := os.ReadFile("../dkim/testdata/rsa2048.key")
	if err != nil {
		t.Fatal(err)
	}
	for _, ks := range local {
		for _, k := range ks {
			path := dkim.KeyPath(inv.DKIM.KeyDir, k.Domain, k.Selector)
			if k.Algorithm == "rsa" { // k.Signer is OpenSSL's: the file it came from
				err = errors.Join(os.MkdirAll(filepath.Dir(path), 0o700), os.WriteFile(path, rsaPEM, 0o600))
			} else {
				err = dkim.WriteKey(path, k.Signer)
			}
			if err != nil {
				t.Fatal(err)
			}
		}
	}
	first, err := LoadKeys(inv, nil)
	if err != nil {
		t.Fatal(err)
	}
	// A key kept across reloads must not keep the inventory it was loaded
	// with: no name of a key is the inventory's own memory (a reload that
	// added a domain kept the whole previous inventory's strings).
	for d, ks := range first {
		for i, k := range ks {
			dom := inv.Domain(d)
			sel := dom.DKIM[i]
			if unsafe.StringData(k.Domain) == unsafe.StringData(dom.Name) || unsafe.StringData(k.Selector) == unsafe.StringData(sel.Selector) ||
				unsafe.StringData(k.Algorithm) == unsafe.StringData(sel.Algorithm) {
				t.Errorf("%s/%s: the key's names are the inventory's strings", d, k.Selector)
			}
		}
	}
	again, err := LoadKeys(inv, first)
	if err != nil {
		t.Fatal(err)
	}
	for d, ks := range first {
		if len(again[d]) != len(ks) || &again[d][0] != &ks[0] {
			t.Errorf("%s: the keys were loaded anew though no file changed", d)
		}
	}

	// example.com's Ed25519 key replaced on disk.
	other := ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize))
	replaced := dkim.KeyPath(inv.DKIM.KeyDir, "example.com", "mx2026e")
	if err := errors.Join(os.Remove(replaced), dkim.WriteKey(replaced, other)); err != nil {
		t.Fatal(err)
	}
	third, err := LoadKeys(inv, again)
	if err != nil {
		t.Fatal(err)
	}
	com := third["example.com"]
	if len(com) != 2 || &com[0] == &again["example.com"][0] {
		t.Fatalf("example.com after a key changed: %+v", com)
	}
	if com[0].Signer != again["example.com"][0].Signer {
		t.Error("example.com's RSA key, unchanged, was loaded anew")
	}
	if !other.Public().(ed25519.PublicKey).Equal(com[1].Signer.Public()) {
		t.Error("example.com's new Ed25519 key is not the one on disk")
	}
	if &third["example.net"][0] != &again["example.net"][0] {
		t.Error("example.net's keys were loaded anew")
	}

	// A selector added to example.net.
	d := inv.Domain("example.net")
	d.DKIM = append(d.DKIM, inventory.Selector{Selector: "mx2027e", Algorithm: "ed25519"})
	if err := dkim.WriteKey(dkim.KeyPath(inv.DKIM.KeyDir, "example.net", "mx2027e"), other); err != nil {
		t.Fatal(err)
	}
	fourth, err := LoadKeys(inv, third)
	if err != nil {
		t.Fatal(err)
	}
	if net := fourth["example.net"]; len(net) != 2 || net[0].Signer != third["example.net"][0].Signer || net[1].Selector != "mx2027e" {
		t.Errorf("example.net after a selector was added: %+v", net)
	}
}

// A reload installs the new inventory first, with the keys that sign now
// (Stage), and the new keys only after DNS was asked about them (Update):
// a selector the reload adds never signs before its check.
func TestPublisherStage(t *testing.T) {
	local, _ := testKeys(t)
	added, _ := dkim.NewKey("example.net", "mx2027e", "ed25519", ed25519.NewKeyFromSeed(make([]byte, ed25519.SeedSize)))
	lookup := func(ctx context.Context, name string) ([]string, string, error) { // every key published
		for _, ks := range local {
			for _, k := range slices.Concat(ks, []dkim.Key{added}) {
				if dkim.RecordName(k.Selector, k.Domain) == name {
					v, err := dkim.TXTValue(k.Signer)
					return []string{v}, "", err
				}
			}
		}
		return nil, "NXDOMAIN", nil
	}
	type applied struct {
		inv  *inventory.Inventory
		keys map[string][]dkim.Key
	}
	var got []applied
	p := &Publisher{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Lookup: lookup,
		Apply: func(inv *inventory.Inventory, keys map[string][]dkim.Key) { got = append(got, applied{inv, keys}) }}
	p.Stage(testInventory(t)) // before the first Update: nothing to stage
	if len(got) != 0 {
		t.Fatalf("Stage before Update applied %d filters", len(got))
	}
	old := testInventory(t)
	signing := p.Update(old, local)
	if len(got) != 0 || len(signing["example.com"]) != 2 {
		t.Fatalf("Update: applied %d, signing %v", len(got), signing)
	}

	// The reload adds a selector to example.net, published.
	inv := testInventory(t)
	reloaded := maps.Clone(local) // LoadKeys makes a new map
	reloaded["example.net"] = append(slices.Clip(local["example.net"]), added)
	p.Stage(inv)
	if len(got) != 1 || got[0].inv != inv || len(got[0].keys["example.net"]) != 1 {
		t.Fatalf("Stage applied %+v, want the new inventory with the keys signing before", got)
	}
	if s := p.States(); len(s) != 3 {
		t.Fatalf("the status page lost the last round while staged: %d selectors", len(s))
	}
	signing = p.Update(inv, reloaded)
	if len(signing["example.net"]) != 2 {
		t.Fatalf("after the check example.net signs with %v", signing["example.net"])
	}
}

// The last answer of each selector outlives reloads: it holds the keys'
// names, not an inventory's, and forgets the selectors a reload dropped.
func TestPublisherLastLetsGo(t *testing.T) {
	local, _ := testKeys(t)
	lookup := func(ctx context.Context, name string) ([]string, string, error) { return nil, "NXDOMAIN", nil }
	p := &Publisher{Log: slog.New(slog.NewTextHandler(io.Discard, nil)), Lookup: lookup}
	inv := testInventory(t)
	p.Update(inv, local)
	if len(p.last) != 3 {
		t.Fatalf("last answers: %d, want 3", len(p.last))
	}
	for id := range p.last {
		if unsafe.StringData(id.domain) == unsafe.StringData(inv.Domain(id.domain).Name) {
			t.Errorf("%s/%s: the last answer holds the inventory's name", id.domain, id.selector)
		}
	}
	fewer := map[string][]dkim.Key{"example.com": local["example.com"]}
	p.Update(testInventory(t), fewer)
	if _, ok := p.last[selectorID{"example.net", "mx2026r"}]; ok || len(p.last) != 2 {
		t.Errorf("after example.net's selector was dropped: %v", p.last)
	}
}
