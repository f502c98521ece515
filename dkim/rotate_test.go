package dkim

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailnode/mailnode/inventory"
)

// fakeDNS publishes records by name; live selectors are listed; broken
// names fail as a SERVFAIL would.
type fakeDNS struct {
	txt    map[string][]string
	live   map[string]bool
	broken map[string]bool
}

func (f fakeDNS) Published(_ context.Context, name string) ([]string, string, error) {
	if f.broken[name] {
		return nil, "", errors.New("SERVFAIL")
	}
	if recs := f.txt[name]; len(recs) > 0 {
		return recs, "", nil
	}
	return nil, "NXDOMAIN", nil
}

func (f fakeDNS) Live(_ context.Context, _ *inventory.Inventory, _ *inventory.Domain, s inventory.Selector) (bool, string) {
	if f.live[s.Selector] {
		return true, ""
	}
	return false, "nothing (NXDOMAIN)"
}

// rotation is a Rotation of example.com of the example inventory, its keys
// in a temporary directory.
func rotation(t *testing.T) Rotation {
	t.Helper()
	b, err := os.ReadFile("../examples/inventory.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	src := bytes.Replace(b, []byte("key_dir: /etc/mailnode/dkim"), []byte("key_dir: "+filepath.Join(dir, "dkim")), 1)
	path := filepath.Join(dir, "inventory.yaml")
	inv, err := inventory.Parse(src, path)
	if err != nil {
		t.Fatal(err)
	}
	return Rotation{Inv: inv, Domain: inv.Domain("example.com"), Path: path, Src: src, Resolver: "192.0.2.53:53"}
}

func TestRotationAdd(t *testing.T) {
	r := rotation(t)
	now := time.Date(2027, 3, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct{ alg, sel, want string }{
		{"dsa", "", `--algorithm "dsa"`},
		{"rsa", "Bad_Name", `"bad_name" is not a valid selector`},
		{"rsa", "mx2026e", "already has selector mx2026e"},
	} {
		if _, err := r.Add(tc.alg, tc.sel, now); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("Add(%q, %q): %v, want %q", tc.alg, tc.sel, err, tc.want)
		}
	}
	st, err := r.Add("ed25519", "", now)
	if err != nil {
		t.Fatal(err)
	}
	key := KeyPath(r.Inv.DKIM.KeyDir, "example.com", "mx20270301e")
	if st.Report != "created "+key+" (ed25519)\n" {
		t.Errorf("report %q", st.Report)
	}
	if !bytes.Contains(st.Inventory, []byte("      - {selector: mx20270301e, algorithm: ed25519}\n")) ||
		!strings.Contains(st.Next, "mx20270301e._domainkey.example.com. IN TXT ( \"v=DKIM1; k=ed25519; p=") ||
		!strings.Contains(st.Next, "--retire mx2026e --write") {
		t.Errorf("step %+v\n%s", st, st.Inventory)
	}
	// The key file now takes the name: the next one gets -2.
	if got := NewSelectorName(r.Inv, r.Domain, "ed25519", now); got != "mx20270301e-2" {
		t.Errorf("next name %q", got)
	}
	// Without Write nothing but the key was written.
	if now, _ := os.ReadFile(r.Path); now != nil {
		t.Errorf("the inventory file was written")
	}
}

func TestRotationRetire(t *testing.T) {
	r := rotation(t)
	ctx := context.Background()
	var nr *NotReadyError

	// No other ed25519 selector: refused.
	r.DNS = fakeDNS{}
	if _, err := r.Retire(ctx, "mx2026e"); !errors.As(err, &nr) || !strings.Contains(err.Error(), "add one first") {
		t.Fatalf("retire the only one: %v", err)
	}
	// Another one, not live yet: refused, saying what was found.
	st, err := r.Add("ed25519", "mx2027e", time.Now())
	if err != nil {
		t.Fatal(err)
	}
	r.Src = st.Inventory
	if r.Inv, err = inventory.Parse(r.Src, r.Path); err != nil {
		t.Fatal(err)
	}
	r.Domain = r.Inv.Domain("example.com")
	if _, err := r.Retire(ctx, "mx2026e"); !errors.As(err, &nr) || !strings.Contains(err.Error(), "mx2027e: found nothing (NXDOMAIN)") {
		t.Fatalf("retire before publication: %v", err)
	}
	// Live, but within the grace period from the first run that saw it
	// live: refused, and that time is recorded.
	r.DNS = fakeDNS{live: map[string]bool{"mx2027e": true}}
	r.Grace, r.Now = 48*time.Hour, time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	if _, err := r.Retire(ctx, "mx2026e"); !errors.As(err, &nr) || !strings.Contains(err.Error(), "mx2027e is live since 2026-12-01T12:00:00Z, so the grace period of 48h0m0s ends at 2026-12-03T12:00:00Z") {
		t.Fatalf("retire within the grace period: %v", err)
	}
	r.Now = r.Now.Add(47 * time.Hour)
	if _, err := r.Retire(ctx, "mx2026e"); !errors.As(err, &nr) || !strings.Contains(err.Error(), "live since 2026-12-01T12:00:00Z") {
		t.Fatalf("retire 47h later: %v", err)
	}
	if got, ok := LiveSince(r.Inv.DKIM.KeyDir, "example.com", "mx2027e"); !ok || !got.Equal(time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)) {
		t.Fatalf("recorded live since %v %v", got, ok)
	}
	// Once it is over: the selector's lines go.
	r.Now = r.Now.Add(time.Hour)
	st, err = r.Retire(ctx, "MX2026E")
	if err != nil || !strings.HasPrefix(st.Report, "mx2027e is live in DNS") ||
		bytes.Contains(st.Inventory, []byte("mx2026e")) || !bytes.Contains(st.Inventory, []byte("mx2027e")) {
		t.Fatalf("retire: %v %+v", err, st)
	}

	// Second run: the key goes once DNS no longer publishes it.
	if r.Inv, err = inventory.Parse(st.Inventory, r.Path); err != nil {
		t.Fatal(err)
	}
	r.Domain = r.Inv.Domain("example.com")
	oldKey := KeyPath(r.Inv.DKIM.KeyDir, "example.com", "mx2026e")
	k, err := Generate("ed25519")
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteKey(oldKey, k); err != nil {
		t.Fatal(err)
	}
	txt, _ := TXTValue(k)
	name := RecordName("mx2026e", "example.com")
	r.DNS = fakeDNS{txt: map[string][]string{name: {txt}}}
	if _, err := r.Retire(ctx, "mx2026e"); !errors.As(err, &nr) || !strings.Contains(err.Error(), "still publishes the old key") {
		t.Fatalf("delete while published: %v", err)
	}
	r.DNS = fakeDNS{broken: map[string]bool{name: true}}
	if _, err := r.Retire(ctx, "mx2026e"); !errors.As(err, &nr) || !strings.Contains(err.Error(), "cannot tell whether") {
		t.Fatalf("delete with DNS down: %v", err)
	}
	r.DNS = fakeDNS{}
	st, err = r.Retire(ctx, "mx2026e")
	if err != nil || !strings.Contains(st.Report, "gone from DNS (NXDOMAIN); with --write") || st.DeleteKey != "" {
		t.Fatalf("without --write: %v %+v", err, st)
	}
	r.Write = true
	st, err = r.Retire(ctx, "mx2026e")
	if err != nil || st.DeleteKey != oldKey || st.Inventory != nil {
		t.Fatalf("with --write: %v %+v", err, st)
	}
	if err := st.Apply(r.Path); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(oldKey); !os.IsNotExist(err) {
		t.Fatalf("old key still there: %v", err)
	}
	if st, err := r.Retire(ctx, "mx2026e"); err != nil || !strings.Contains(st.Report, "nothing to do") {
		t.Fatalf("third run: %v %+v", err, st)
	}
}

func TestZoneTXT(t *testing.T) {
	long := strings.Repeat("a", 300)
	for in, want := range map[string]string{
		"":    `""`,
		"v=1": `( "v=1" )`,
		long:  `( "` + long[:255] + `" "` + long[255:] + `" )`,
	} {
		if got := ZoneTXT(in); got != want {
			t.Errorf("ZoneTXT(%.10q) = %q", in, got)
		}
	}
}
