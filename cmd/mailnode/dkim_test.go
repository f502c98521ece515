package main

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	msgauth "github.com/emersion/go-msgauth/dkim"

	"github.com/mailnode/mailnode/dkim"
	"github.com/mailnode/mailnode/dns"
	"github.com/mailnode/mailnode/dns/dnstest"
	"github.com/mailnode/mailnode/inventory"
	"github.com/mailnode/mailnode/milter"
	"github.com/mailnode/mailnode/milter/miltertest"
)

// testNode copies the example inventory into a temporary directory with
// its keys in dir/dkim and node.resolver at resolver, and runs dkim keygen.
func testNode(t *testing.T, resolver string) (dir, inv string) {
	t.Helper()
	dir = t.TempDir()
	b, err := os.ReadFile("../../examples/inventory.yaml")
	if err != nil {
		t.Fatal(err)
	}
	s := strings.Replace(string(b), "key_dir: /etc/mailnode/dkim", "key_dir: "+filepath.Join(dir, "dkim"), 1)
	s = strings.Replace(s, "resolver: 127.0.0.1:53 ", "resolver: "+resolver+" ", 1)
	// forwarding.srs: milterd needs a secret.
	secret := filepath.Join(dir, "srs.secret")
	if err := os.WriteFile(secret, []byte("cmd-test-srs-secret-0123456789\n"), 0o640); err != nil {
		t.Fatal(err)
	}
	s = strings.Replace(s, "srs_secret_file: /etc/mailnode/srs.secret", "srs_secret_file: "+secret, 1)
	if !strings.Contains(s, "resolver: "+resolver) {
		t.Fatal("could not set node.resolver in the example inventory")
	}
	inv = filepath.Join(dir, "inventory.yaml")
	if err := os.WriteFile(inv, []byte(s), 0o640); err != nil {
		t.Fatal(err)
	}
	if _, errs, code := runApp(t, "dkim", "keygen", "--inventory", inv); code != 0 {
		t.Fatalf("keygen: exit %d: %s", code, errs)
	}
	return dir, inv
}

// publish serves the zones `dns zone` prints for inv on srv, replacing
// the zones it served before.
func publish(t *testing.T, srv *dnstest.Server, invPath string) {
	t.Helper()
	out, errs, code := runApp(t, "dns", "zone", "--inventory", invPath)
	if code != 0 {
		t.Fatalf("dns zone: exit %d: %s", code, errs)
	}
	if err := srv.ReplaceZones(out); err != nil {
		t.Fatal(err)
	}
}

// signWithMilterd runs one authenticated message through milterd's filter
// over a real milter socket and returns the signed message.
func signWithMilterd(t *testing.T, invPath string) []byte {
	t.Helper()
	inv, err := inventory.Load(invPath)
	if err != nil {
		t.Fatal(err)
	}
	keys, err := milter.LoadKeys(inv, nil)
	if err != nil {
		t.Fatal(err)
	}
	f := milter.NewFilter(inv, keys, nil)
	f.Checks = nil // outbound mail only
	sock := filepath.Join(t.TempDir(), "milter.sock")
	ln, err := milter.Listen("unix:" + sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := milter.NewServer(f)
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	defer func() { srv.Close(); ln.Close(); <-done }()
	m := &miltertest.Message{
		Host: "client.example.com", Port: 40000, Addr: "198.51.100.7",
		AuthUser: "alice@example.com", QueueID: "4ABC",
		Sender: "alice@example.com", Rcpts: []string{"x@elsewhere.test"},
		Body: []byte("Hi,\r\n\r\nrotated.\r\n"),
	}
	for _, h := range [][2]string{{"From", "Alice <alice@example.com>"}, {"To", "x@elsewhere.test"},
		{"Subject", "rotation"}, {"Date", "Sun, 01 Mar 2026 12:00:00 +0000"}, {"Message-ID", "<r1@example.com>"}} {
		m.Headers = append(m.Headers, dkim.Header{Name: h[0], Value: " " + h[1]})
	}
	r, err := miltertest.Submit(miltertest.NewClient("unix", sock), m)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := r.Apply(m)
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

// verifiedSelectors verifies each DKIM signature of msg on its own against
// the keys published on srv, and returns the selectors (s=) of all
// signatures and of those that verified.
func verifiedSelectors(t *testing.T, msg []byte, srv *dnstest.Server) (ok, all []string) {
	t.Helper()
	ck := &dns.Checker{Resolver: srv.Addr}
	lookup := func(name string) ([]string, error) {
		recs, problem := ck.TXT(context.Background(), name)
		if problem != "" {
			return nil, fmt.Errorf("%s: %s", name, problem)
		}
		return recs, nil
	}
	head, body, found := bytes.Cut(msg, []byte("\r\n\r\n"))
	if !found {
		t.Fatalf("no header/body separator in\n%s", msg)
	}
	// Header fields, each with its continuation lines.
	var fields []string
	for _, line := range strings.SplitAfter(string(head)+"\r\n", "\r\n") {
		if line == "" {
			continue
		}
		if (line[0] == ' ' || line[0] == '\t') && len(fields) > 0 {
			fields[len(fields)-1] += line
		} else {
			fields = append(fields, line)
		}
	}
	isSig := func(f string) bool { return strings.HasPrefix(strings.ToLower(f), "dkim-signature:") }
	selRe := regexp.MustCompile(`(?:^|[;\s])s=([^;\s]+)`)
	for _, sig := range fields {
		if !isSig(sig) {
			continue
		}
		var one strings.Builder
		one.WriteString(sig)
		for _, f := range fields {
			if !isSig(f) {
				one.WriteString(f)
			}
		}
		one.WriteString("\r\n")
		one.Write(body)
		vs, err := msgauth.VerifyWithOptions(strings.NewReader(one.String()), &msgauth.VerifyOptions{LookupTXT: lookup})
		if err != nil || len(vs) != 1 {
			t.Fatalf("verify: %v (%d results)", err, len(vs))
		}
		m := selRe.FindStringSubmatch(sig[len("dkim-signature:"):])
		if m == nil {
			t.Fatalf("no s= in %q", sig)
		}
		all = append(all, m[1])
		if vs[0].Err == nil {
			ok = append(ok, m[1])
		} else {
			t.Logf("signature s=%s: %v", m[1], vs[0].Err)
		}
	}
	slices.Sort(ok)
	slices.Sort(all)
	return ok, all
}

func selectorsOf(t *testing.T, invPath, domain string) []string {
	t.Helper()
	inv, err := inventory.Load(invPath)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, s := range inv.Domain(domain).DKIM {
		out = append(out, s.Selector+"/"+s.Algorithm)
	}
	return out
}

// TestDKIMRotation: keygen -> rotate -> both selectors in the zone ->
// milterd signs with the new one too and the published zone verifies it;
// retiring the old one waits for the new key to be live in DNS, and
// deleting its key waits for the old record to be gone.
func TestDKIMRotation(t *testing.T) {
	srv := dnstest.Start(t, "")
	dir, invPath := testNode(t, srv.Addr)
	publish(t, srv, invPath)
	before, _ := os.ReadFile(invPath)

	// Without --write: a key, the diff, the record; the inventory is untouched.
	out, errs, code := runApp(t, "dkim", "rotate", "--inventory", invPath, "--domain", "example.com",
		"--algorithm", "ed25519", "--selector", "mx2027e")
	if code != 0 {
		t.Fatalf("rotate: exit %d: %s", code, errs)
	}
	newKey := filepath.Join(dir, "dkim", "example.com", "mx2027e.key")
	for _, want := range []string{"created " + newKey, "not written", "+      - {selector: mx2027e, algorithm: ed25519}\n",
		"mx2027e._domainkey.example.com. IN TXT", "--retire mx2026e"} {
		if !strings.Contains(out, want) {
			t.Errorf("rotate output lacks %q:\n%s", want, out)
		}
	}
	if now, _ := os.ReadFile(invPath); !bytes.Equal(now, before) {
		t.Fatalf("rotate without --write changed the inventory")
	}

	// --write: the same key is used, exactly one line is added.
	out, errs, code = runApp(t, "dkim", "rotate", "--inventory", invPath, "--domain", "example.com",
		"--algorithm", "ed25519", "--selector", "mx2027e", "--write")
	if code != 0 || !strings.Contains(out, "using the existing key "+newKey) || !strings.Contains(out, "wrote "+invPath) {
		t.Fatalf("rotate --write: exit %d: %s%s", code, out, errs)
	}
	after, _ := os.ReadFile(invPath)
	added := "      - {selector: mx2027e, algorithm: ed25519}\n"
	if !bytes.Equal(bytes.Replace(after, []byte(added), nil, 1), before) {
		t.Fatalf("the inventory changed beyond the added selector:\n%s", after)
	}
	if st, _ := os.Stat(invPath); st.Mode().Perm() != 0o640 {
		t.Errorf("inventory mode %o, want 640", st.Mode().Perm())
	}
	if got := selectorsOf(t, invPath, "example.com"); !slices.Equal(got, []string{"mx2026r/rsa", "mx2026e/ed25519", "mx2027e/ed25519"}) {
		t.Fatalf("selectors after rotate: %q", got)
	}

	// Both selectors are in the zone.
	zone, _, _ := runApp(t, "dns", "zone", "--inventory", invPath, "--domain", "example.com")
	for _, sel := range []string{"mx2026e", "mx2027e"} {
		if !strings.Contains(zone, sel+"._domainkey.example.com.\t3600\tIN\tTXT\t\"v=DKIM1; k=ed25519; p=") {
			t.Errorf("zone lacks %s:\n%s", sel, zone)
		}
	}

	// Retiring the old selector before the new key is live in DNS: refused.
	_, errs, code = runApp(t, "dkim", "rotate", "--inventory", invPath, "--domain", "example.com", "--retire", "mx2026e", "--write")
	if code != 1 || !strings.Contains(errs, "will not retire mx2026e") || !strings.Contains(errs, "mx2027e") {
		t.Fatalf("retire before publication: exit %d: %s", code, errs)
	}

	// milterd signs with every selector, the new one included; once the
	// zone is published the new signature verifies.
	msg := signWithMilterd(t, invPath)
	publish(t, srv, invPath)
	ok, all := verifiedSelectors(t, msg, srv)
	if !slices.Equal(all, []string{"mx2026e", "mx2026r", "mx2027e"}) || !slices.Equal(ok, all) {
		t.Fatalf("signatures %q, verified %q", all, ok)
	}

	// Now the new key is live, but only just: the grace period holds the
	// old one, counted from this first run that sees mx2027e live.
	_, errs, code = runApp(t, "dkim", "rotate", "--inventory", invPath, "--domain", "example.com", "--retire", "mx2026e", "--write")
	if code != 1 || !strings.Contains(errs, "will not retire mx2026e yet: mx2027e is live since") || !strings.Contains(errs, "grace period of 48h0m0s ends at") {
		t.Fatalf("retire within the grace period: exit %d: %s", code, errs)
	}
	if got := selectorsOf(t, invPath, "example.com"); !slices.Contains(got, "mx2026e/ed25519") {
		t.Fatalf("retired within the grace period: %q", got)
	}
	// Three days later (the recorded time moved back), it goes.
	inv, err := inventory.Load(invPath)
	if err != nil {
		t.Fatal(err)
	}
	livePath := dkim.LiveSincePath(inv.DKIM.KeyDir, "example.com", "mx2027e")
	if err := os.WriteFile(livePath, []byte(time.Now().Add(-72*time.Hour).UTC().Format(time.RFC3339)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	out, errs, code = runApp(t, "dkim", "rotate", "--inventory", invPath, "--domain", "example.com", "--retire", "mx2026e", "--write")
	if code != 0 || !strings.Contains(out, "mx2027e is live in DNS") {
		t.Fatalf("retire: exit %d: %s%s", code, out, errs)
	}
	if got := selectorsOf(t, invPath, "example.com"); !slices.Equal(got, []string{"mx2026r/rsa", "mx2027e/ed25519"}) {
		t.Fatalf("selectors after retire: %q", got)
	}
	final, _ := os.ReadFile(invPath)
	if !bytes.Equal(final, bytes.Replace(after, []byte("      - {selector: mx2026e, algorithm: ed25519}\n"), nil, 1)) {
		t.Fatalf("retire changed more than the retired line:\n%s", final)
	}
	ok, all = verifiedSelectors(t, signWithMilterd(t, invPath), srv)
	if !slices.Equal(all, []string{"mx2026r", "mx2027e"}) || !slices.Equal(ok, all) {
		t.Fatalf("after retire: signatures %q, verified %q", all, ok)
	}

	// The old key stays while DNS still publishes it.
	oldKey := filepath.Join(dir, "dkim", "example.com", "mx2026e.key")
	_, errs, code = runApp(t, "dkim", "rotate", "--inventory", invPath, "--domain", "example.com", "--retire", "mx2026e", "--write")
	if code != 1 || !strings.Contains(errs, "still publishes the old key") {
		t.Fatalf("delete while published: exit %d: %s", code, errs)
	}
	if _, err := os.Stat(oldKey); err != nil {
		t.Fatalf("old key gone too early: %v", err)
	}
	publish(t, srv, invPath) // the zone without mx2026e
	out, errs, code = runApp(t, "dkim", "rotate", "--inventory", invPath, "--domain", "example.com", "--retire", "mx2026e", "--write")
	if code != 0 || !strings.Contains(out, "deleted "+oldKey) {
		t.Fatalf("delete after unpublishing: exit %d: %s%s", code, out, errs)
	}
	if _, err := os.Stat(oldKey); !os.IsNotExist(err) {
		t.Fatalf("old key still there: %v", err)
	}
}

// TestRotateRefusesLastOfItsKind: the only RSA selector cannot be retired.
func TestRotateRefusesLastOfItsKind(t *testing.T) {
	srv := dnstest.Start(t, "")
	_, invPath := testNode(t, srv.Addr)
	publish(t, srv, invPath)
	_, errs, code := runApp(t, "dkim", "rotate", "--inventory", invPath, "--domain", "example.com", "--retire", "mx2026r")
	if code != 1 || !strings.Contains(errs, "no other rsa selector") {
		t.Fatalf("exit %d: %s", code, errs)
	}
}

// TestDKIMStatus: dkim status and rotate follow a rotation step by step:
// a new selector is not signing until its record is published, then signs;
// the old one retired is still visible, then gone.
func TestDKIMStatus(t *testing.T) {
	srv := dnstest.Start(t, "")
	_, invPath := testNode(t, srv.Addr)
	publish(t, srv, invPath)
	row := func(out, sel string) string {
		for _, l := range strings.Split(out, "\n") {
			if f := strings.Fields(l); len(f) > 6 && f[0] == "example.com" && f[1] == sel {
				return strings.Join(f[:6], " ")
			}
		}
		t.Fatalf("no row for %s:\n%s", sel, out)
		return ""
	}
	out, errs, code := runApp(t, "dkim", "status", "--inventory", invPath)
	if code != 0 || row(out, "mx2026r") != "example.com mx2026r rsa present published yes" {
		t.Fatalf("status, all published: exit %d %s\n%s", code, errs, out)
	}
	if !strings.Contains(out, "rsa: no rotation in progress (mx2026r)") {
		t.Errorf("status: no rotation line:\n%s", out)
	}

	out, errs, code = runApp(t, "dkim", "rotate", "--inventory", invPath, "--domain", "example.com", "--selector", "mx2027r", "--write")
	if code != 0 || !strings.Contains(out, "rsa: step 1/5 add: mx2027r is in the inventory, its record is not-published") {
		t.Fatalf("rotate add: exit %d %s\n%s", code, errs, out)
	}
	out, _, code = runApp(t, "dkim", "status", "--inventory", invPath, "--domain", "example.com")
	if code != 1 || row(out, "mx2027r") != "example.com mx2027r rsa present not-published no" ||
		row(out, "mx2026r") != "example.com mx2026r rsa present published yes" {
		t.Fatalf("status before publication: exit %d\n%s", code, out)
	}

	publish(t, srv, invPath)
	out, _, code = runApp(t, "dkim", "status", "--inventory", invPath, "--domain", "example.com")
	if code != 0 || row(out, "mx2027r") != "example.com mx2027r rsa present published yes" ||
		!strings.Contains(out, "rsa: step 3/5 signing: mx2027r is published and signs") {
		t.Fatalf("status after publication: exit %d\n%s", code, out)
	}

	out, errs, code = runApp(t, "dkim", "rotate", "--inventory", invPath, "--domain", "example.com", "--retire", "mx2026r", "--grace", "0", "--write")
	if code != 0 || !strings.Contains(out, "rsa: step 4/5 retired: mx2026r is out of the inventory") {
		t.Fatalf("rotate retire: exit %d %s\n%s", code, errs, out)
	}
	publish(t, srv, invPath)
	out, _, _ = runApp(t, "dkim", "status", "--inventory", invPath, "--domain", "example.com")
	if !strings.Contains(out, "rsa: step 5/5 delete key: mx2026r._domainkey.example.com. is gone from DNS") {
		t.Fatalf("status after the old record is gone:\n%s", out)
	}
}
