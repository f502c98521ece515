package render

import (
	"bytes"
	"flag"
	"fmt"
	"io/fs"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/mailnode/mailnode/inventory"
)

var update = flag.Bool("update", false, "rewrite the golden files under testdata/golden from the current output")

// goldenCases are the inventories whose every rendered file is kept in
// testdata/golden/<name>/; node, when set, is the tier node rendered
// (render-config --node).
var goldenCases = []struct{ name, file, node string }{
	{"example", "../examples/inventory.yaml", ""},
	{"private", "testdata/private.yaml", ""},
	{"nullclient", "../examples/nullclient.yaml", ""},
	{"mailbox", "testdata/mailbox.yaml", ""},
	{"tier-mx2", "testdata/tier.yaml", "mx2.example.com"},
	{"dane", "testdata/dane.yaml", ""},
}

// load reads an inventory and points dkim.key_dir at a private copy of
// testdata/dkim (key files must be mode 0600, which git does not keep).
// key_dir appears in no rendered file, so goldens do not depend on it.
func load(t testing.TB, file string) *inventory.Inventory {
	t.Helper()
	return loadAs(t, file, "")
}

// renderTier renders testdata/tier.yaml as each of its nodes, mx1 and
// mx2.example.com.
func renderTier(t *testing.T) (mx1, mx2 Files) {
	t.Helper()
	var err error
	if mx1, err = Render(loadAs(t, "testdata/tier.yaml", "mx1.example.com")); err != nil {
		t.Fatal(err)
	}
	if mx2, err = Render(loadAs(t, "testdata/tier.yaml", "mx2.example.com")); err != nil {
		t.Fatal(err)
	}
	return mx1, mx2
}

// loadAs is load as the tier node named node.
func loadAs(t testing.TB, file, node string) *inventory.Inventory {
	t.Helper()
	inv, err := inventory.LoadWith(file, inventory.LoadOptions{Node: node})
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	dir := t.TempDir()
	err = filepath.WalkDir("testdata/dkim", func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel("testdata/dkim", p)
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		os.MkdirAll(filepath.Join(dir, filepath.Dir(rel)), 0o700)
		return os.WriteFile(filepath.Join(dir, rel), b, 0o600)
	})
	if err != nil {
		t.Fatal(err)
	}
	inv.DKIM.KeyDir = dir
	// The smarthost password file, likewise outside every rendered path.
	if a := inv.Postfix.RelayhostAuth; a != nil {
		a.PasswordFile = filepath.Join(dir, "relayhost.secret")
		if err := os.WriteFile(a.PasswordFile, []byte("golden-not-a-secret\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return inv
}

func TestGolden(t *testing.T) {
	for _, c := range goldenCases {
		t.Run(c.name, func(t *testing.T) {
			files, err := Render(loadAs(t, c.file, c.node))
			if err != nil {
				t.Fatal(err)
			}
			dir := filepath.Join("testdata", "golden", c.name)
			if *update {
				os.RemoveAll(dir)
				if _, err := Write(dir, files); err != nil {
					t.Fatal(err)
				}
				// goldens are documentation too: keep them readable
				os.Chmod(filepath.Join(dir, "dovecot", "users"), 0o644)
				return
			}
			diff, err := Check(dir, files)
			if err != nil {
				t.Fatal(err)
			}
			if len(diff) > 0 {
				t.Errorf("rendered files differ from %s (go test ./render -update refreshes them):\n%s", dir, diff)
			}
			// No golden file may be left over from an older layout.
			filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
				if err == nil && !d.IsDir() {
					rel, _ := filepath.Rel(dir, p)
					if _, ok := files[filepath.ToSlash(rel)]; !ok {
						t.Errorf("stale golden file %s: not rendered any more", p)
					}
				}
				return nil
			})
		})
	}
}

func TestDeterministic(t *testing.T) {
	inv := load(t, "../examples/inventory.yaml")
	a, err := Render(inv)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 5; i++ {
		b, err := Render(inv)
		if err != nil {
			t.Fatal(err)
		}
		if len(a) != len(b) {
			t.Fatalf("run %d: %d files, first run %d", i, len(b), len(a))
		}
		for n := range a {
			if !bytes.Equal(a[n], b[n]) {
				t.Errorf("run %d: %s differs", i, n)
			}
		}
	}
}

// The staging directory never leaks into the files.
func TestNoOutDirInFiles(t *testing.T) {
	files, err := Render(load(t, "testdata/private.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if _, err := Write(dir, files); err != nil {
		t.Fatal(err)
	}
	for n, b := range files {
		if bytes.Contains(b, []byte(dir)) {
			t.Errorf("%s mentions the staging directory %s", n, dir)
		}
	}
}

func TestWiring(t *testing.T) {
	files, err := Render(load(t, "../examples/inventory.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	main := string(files["postfix/main.cf"])
	for _, want := range []string{
		"\nsmtpd_relay_restrictions = check_policy_service { unix:private/mailnode-policy, { default_action = 451 4.3.5 Policy service unavailable; try again later } }, permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination\n",
		"\nmynetworks = 127.0.0.0/8 10.20.0.0/16\n",
		"\nsmtpd_milters = unix:/var/spool/postfix/private/mailnode-milter\n",
		"\nnon_smtpd_milters = unix:/var/spool/postfix/private/mailnode-milter\n",
		"\nmilter_default_action = tempfail\n",
		"\nvirtual_transport = lmtp:unix:private/dovecot-lmtp\n",
		"\nsmtpd_sasl_path = private/auth\n",
		"\ncompatibility_level = 3.6\n",
	} {
		if !strings.Contains(main, want) {
			t.Errorf("main.cf lacks %q", strings.TrimSpace(want))
		}
	}
	if !strings.Contains(main, "\nparent_domain_matches_subdomains = ") || strings.Contains(main, "relay_domains,") {
		t.Errorf("parent_domain_matches_subdomains must be set without relay_domains")
	}
	master := string(files["postfix/master.cf"])
	for _, want := range []string{"-o smtpd_tls_security_level=encrypt", "-o smtpd_sasl_auth_enable=yes", "-o smtpd_client_restrictions=permit_sasl_authenticated,reject"} {
		if !strings.Contains(master, want) {
			t.Errorf("master.cf lacks %q", want)
		}
	}

	// policy/milter switched off: the policy part goes, Postfix's relay control stays.
	inv := load(t, "../examples/inventory.yaml")
	off := false
	inv.Policy.Enabled, inv.Milter.Enabled = &off, &off
	files, err = Render(inv)
	if err != nil {
		t.Fatal(err)
	}
	main = string(files["postfix/main.cf"])
	if !strings.Contains(main, "\nsmtpd_relay_restrictions = permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination\n") {
		t.Errorf("with policy.enabled false: relay restrictions wrong:\n%s", main)
	}
	for _, no := range []string{"smtpd_milters =", "non_smtpd_milters =", "milter_default_action", "check_policy_service"} {
		if strings.Contains(main, no) {
			t.Errorf("with milter/policy disabled main.cf still has %q", no)
		}
	}
}

func TestPostfixSocket(t *testing.T) {
	for _, c := range []struct{ listen, queue, want string }{
		{"unix:/var/spool/postfix/private/mailnode-policy", "/var/spool/postfix", "unix:private/mailnode-policy"},
		{"unix:/var/spool/postfix/private/mailnode-policy", "/var/spool/postfix/", "unix:private/mailnode-policy"},
		{"unix:/run/mailnode/policy.sock", "/var/spool/postfix", "unix:/run/mailnode/policy.sock"},
		{"unix:/var/spool/postfixother/p", "/var/spool/postfix", "unix:/var/spool/postfixother/p"},
		{"inet:127.0.0.1:10040", "/var/spool/postfix", "inet:127.0.0.1:10040"},
	} {
		if got := PostfixSocket(c.listen, c.queue); got != c.want {
			t.Errorf("PostfixSocket(%q, %q) = %q, want %q", c.listen, c.queue, got, c.want)
		}
	}
}

func TestWriteAndCheck(t *testing.T) {
	files, err := Render(load(t, "../examples/inventory.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	changed, err := Write(dir, files)
	if err != nil {
		t.Fatal(err)
	}
	if len(changed) != len(files) {
		t.Errorf("first Write changed %d files, want %d", len(changed), len(files))
	}
	if st, err := os.Stat(filepath.Join(dir, "dovecot", "users")); err != nil || st.Mode().Perm() != 0o640 {
		t.Errorf("dovecot/users: mode %v (%v), want 0640", st.Mode().Perm(), err)
	}
	if diff, err := Check(dir, files); err != nil || len(diff) > 0 {
		t.Fatalf("Check right after Write: %v\n%s", err, diff)
	}
	if changed, _ := Write(dir, files); len(changed) != 0 {
		t.Errorf("second Write rewrote %v", changed)
	}
	// Change one file, remove one, add a stale zone: Check shows all three.
	main := filepath.Join(dir, "postfix", "main.cf")
	b, _ := os.ReadFile(main)
	os.WriteFile(main, bytes.Replace(b, []byte("biff = no"), []byte("biff = yes"), 1), 0o644)
	os.Remove(filepath.Join(dir, "postfix", "transport"))
	os.WriteFile(filepath.Join(dir, "dns", "gone.test.zone"), []byte("old\n"), 0o644)
	diff, err := Check(dir, files)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"--- a/postfix/main.cf\n+++ b/postfix/main.cf\n", "-biff = yes\n+biff = no\n",
		"--- /dev/null\n+++ b/postfix/transport\n", "--- a/dns/gone.test.zone\n+++ /dev/null\n"} {
		if !bytes.Contains(diff, []byte(want)) {
			t.Errorf("diff lacks %q:\n%s", want, diff)
		}
	}
	if changed, err := Write(dir, files); err != nil || strings.Join(changed, " ") != "dns/gone.test.zone postfix/main.cf postfix/transport" {
		t.Errorf("Write after damage changed %v (%v)", changed, err)
	}
	if diff, _ := Check(dir, files); len(diff) > 0 {
		t.Errorf("Check after repair:\n%s", diff)
	}
	// No temporary files are left behind.
	filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err == nil && strings.Contains(d.Name(), ".tmp") {
			t.Errorf("left over: %s", p)
		}
		return nil
	})
}

// TestUnifiedDiffApplies feeds our diffs to patch(1): applying them to the
// old text must give the new one.
func TestUnifiedDiffApplies(t *testing.T) {
	if _, err := exec.LookPath("patch"); err != nil {
		if testing.Short() {
			t.Skip("patch(1) not installed")
		}
		t.Fatal("patch(1) is needed to check the diffs: apt-get install -y patch")
	}
	lines := func(n int, f func(i int) string) string {
		var b strings.Builder
		for i := 0; i < n; i++ {
			b.WriteString(f(i))
			b.WriteByte('\n')
		}
		return b.String()
	}
	cases := []struct{ old, new string }{
		{"a\nb\nc\n", "a\nB\nc\n"},
		{"", "new\nfile\n"},
		{"a\nb\n", "a\nb\nc"},
		{lines(100, func(i int) string { return fmt.Sprint(i) }), lines(100, func(i int) string {
			if i%17 == 0 {
				return "changed"
			}
			return fmt.Sprint(i)
		})},
		{lines(50, func(i int) string { return fmt.Sprint(i) }), lines(60, func(i int) string { return fmt.Sprint(i * 2) })},
		// beyond maxEditDistance: falls back to replace-all, still correct
		{lines(3000, func(i int) string { return fmt.Sprint("a", i) }), lines(3000, func(i int) string { return fmt.Sprint("b", i) })},
	}
	for i, c := range cases {
		dir := t.TempDir()
		f := filepath.Join(dir, "f")
		os.WriteFile(f, []byte(c.old), 0o644)
		d := UnifiedDiff("a/f", "b/f", []byte(c.old), []byte(c.new))
		cmd := exec.Command("patch", "-s", "-p1", "-d", dir)
		cmd.Stdin = bytes.NewReader(d)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("case %d: patch: %v\n%s\n--- diff:\n%s", i, err, out, d)
			continue
		}
		got, _ := os.ReadFile(f)
		if string(got) != c.new {
			t.Errorf("case %d: patched file differs\n--- diff:\n%s", i, d)
		}
	}
}

// TestConsumers runs the real programs over the rendered files: Postfix,
// postmap/postalias, named-checkzone, unbound-checkconf and doveconf must
// accept them without a warning.
func TestConsumers(t *testing.T) {
	need := map[string]string{"postconf": "postfix", "postmap": "postfix", "postalias": "postfix",
		"named-checkzone": "bind9-utils", "unbound-checkconf": "unbound", "doveconf": "dovecot-core"}
	var missing []string
	for prog, pkg := range need {
		if _, err := exec.LookPath(prog); err != nil {
			missing = append(missing, pkg+" ("+prog+")")
		}
	}
	if len(missing) > 0 {
		if testing.Short() {
			t.Skipf("missing %v", missing)
		}
		t.Fatalf("the consumer checks need these Debian packages: %v (make deps installs them)", missing)
	}
	for _, c := range goldenCases {
		t.Run(c.name, func(t *testing.T) {
			inv := loadAs(t, c.file, c.node)
			// unbound-checkconf refuses an auto-trust-anchor-file that does
			// not exist: one seeded from dns-root-data, as before a start.
			dir := t.TempDir()
			inv.Node.ResolverAnchorFile = filepath.Join(dir, "unbound-root.key")
			seed, err := os.ReadFile(inventory.RootKeyFile)
			if err != nil {
				t.Fatalf("the rendered unbound.conf is seeded from dns-root-data's root key: %v (apt-get install dns-root-data)", err)
			}
			os.WriteFile(inv.Node.ResolverAnchorFile, seed, 0o644)
			files, err := Render(inv)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := Write(dir, files); err != nil {
				t.Fatal(err)
			}
			pdir := filepath.Join(dir, "postfix")
			run := func(name string, args ...string) string {
				t.Helper()
				var stdout, stderr bytes.Buffer
				cmd := exec.Command(name, args...)
				cmd.Stdout, cmd.Stderr = &stdout, &stderr
				if err := cmd.Run(); err != nil {
					t.Errorf("%s %s: %v\n%s%s", name, strings.Join(args, " "), err, stdout.String(), stderr.String())
				}
				if stderr.Len() > 0 {
					t.Errorf("%s %s wrote to stderr:\n%s", name, strings.Join(args, " "), stderr.String())
				}
				return stdout.String()
			}
			out := run("postconf", "-c", pdir, "-n")
			if !strings.Contains(out, "smtpd_relay_restrictions = ") {
				t.Errorf("postconf -n does not show smtpd_relay_restrictions:\n%s", out)
			}
			run("postconf", "-c", pdir, "-M")
			for _, m := range PostfixMapsFor(inv) {
				run(m.Compiler, "-c", pdir, "hash:"+filepath.Join(pdir, m.Name))
				if _, err := os.Stat(filepath.Join(pdir, m.Name+".db")); err != nil {
					t.Errorf("%s did not build %s.db: %v", m.Compiler, m.Name, err)
				}
			}
			if c.name == "mailbox" {
				for _, key := range []string{"alice@mailbox.test", "bob@mailbox.test"} {
					if got := strings.TrimSpace(run("postmap", "-c", pdir, "-q", key, "hash:"+filepath.Join(pdir, "quota_recipients"))); got != QuotaClass {
						t.Errorf("postmap -q %s quota_recipients = %q, want %s", key, got, QuotaClass)
					}
				}
			}
			// Spot-check lookups in the compiled maps.
			if c.name == "example" {
				for _, q := range []struct{ m, key, want string }{
					{"virtual_mailbox_maps", "alice@example.com", "OK"},
					{"virtual_alias_maps", "all-staff@example.com", "alice@example.com, bob@example.com, carol@example.net"},
					{"transport", "partner.org", "relay:[mx.partner.org]:25"},
					{"relay_domains", "partner.org", "OK"},
					{"relay_recipient_maps", "@partner.org", "OK"},
					{"transport", "tickets@example.com", "lmtp:[127.0.0.1]:8024"},
					{"virtual_mailbox_maps", "tickets@example.com", "OK"},
					{"sender_login_maps", "a.smith@example.com", "alice@example.com"},
				} {
					got := strings.TrimSpace(run("postmap", "-c", pdir, "-q", q.key, "hash:"+filepath.Join(pdir, q.m)))
					if got != q.want {
						t.Errorf("postmap -q %s %s = %q, want %q", q.key, q.m, got, q.want)
					}
				}
				if got := strings.TrimSpace(run("postalias", "-c", pdir, "-q", "postmaster", "hash:"+filepath.Join(pdir, "aliases"))); got != "root" {
					t.Errorf("postalias -q postmaster = %q, want root", got)
				}
			}
			for _, d := range inv.LocalDomains() {
				if inv.NullClient() {
					break // no zones (TestNullClient)
				}
				out := run("named-checkzone", "-i", "local", "-k", "fail", "-m", "fail", "-M", "fail", "-n", "fail", "-S", "fail",
					d.Name, filepath.Join(dir, "dns", d.Name+".zone"))
				if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 2 || lines[1] != "OK" {
					t.Errorf("named-checkzone %s is not clean:\n%s", d.Name, out)
				}
			}
			ubConf := filepath.Join(dir, "unbound", "unbound.conf")
			run("unbound-checkconf", ubConf)
			// The root anchor is one unbound keeps (RFC 5011), not a static
			// file it only reads.
			if got := strings.TrimSpace(run("unbound-checkconf", "-o", "auto-trust-anchor-file", ubConf)); got != inv.Node.ResolverAnchorFile {
				t.Errorf("auto-trust-anchor-file = %q, want %q", got, inv.Node.ResolverAnchorFile)
			}
			for _, opt := range []string{"trust-anchor-file", "trusted-keys-file", "trust-anchor"} {
				if got := strings.TrimSpace(run("unbound-checkconf", "-o", opt, ubConf)); got != "" {
					t.Errorf("%s = %q: the root anchor must be the auto-trust-anchor-file alone", opt, got)
				}
			}
			if inv.NullClient() {
				return // no Dovecot (TestNullClient)
			}
			// The Sieve scripts compile with the rendered configuration.
			for _, name := range files.Names() {
				if strings.HasPrefix(name, SieveDir+"/") && strings.HasSuffix(name, ".sieve") {
					if _, err := exec.LookPath("sievec"); err != nil {
						t.Fatalf("the Sieve scripts need sievec: %v (Debian package dovecot-sieve)", err)
					}
					run("sievec", "-c", filepath.Join(dir, "dovecot", "dovecot.conf"), filepath.Join(dir, name))
				}
			}
			out = run("doveconf", "-c", filepath.Join(dir, "dovecot", "dovecot.conf"), "-n")
			if !strings.Contains(out, "passwd-file") {
				t.Errorf("doveconf -n lost the passdb:\n%s", out)
			}
			// The ports Dovecot will open, defaults included: explicit
			// listeners replace the built-in ones, TLS ones too.
			all := run("doveconf", "-c", filepath.Join(dir, "dovecot", "dovecot.conf"))
			services := []struct {
				name   string
				listen []string
				want   []string
			}{
				{"imap-login", inv.Dovecot.IMAPListen, []string{"143", "993"}},
				{"pop3-login", inv.Dovecot.POP3Listen, []string{"110", "995"}},
			}
			// Without dovecot.sieve the sieve protocol is off, so Dovecot
			// does not start its built-in ManageSieve service.
			if sv := inv.Dovecot.Sieve; sv != nil {
				services = append(services, struct {
					name   string
					listen []string
					want   []string
				}{"managesieve-login", sv.Listen, nil})
				if !strings.Contains(out, "protocols = imap pop3 lmtp sieve") {
					t.Errorf("doveconf -n: the sieve protocol is off:\n%s", out)
				}
			}
			for _, svc := range services {
				want := svc.want
				if inv.Postfix.TLS.CertFile == "" {
					want = want[:1]
				}
				if len(svc.listen) > 0 {
					want = nil
					for _, l := range svc.listen {
						if _, p, err := net.SplitHostPort(l); err == nil {
							l = p
						}
						want = append(want, l)
					}
				}
				if got := listenerPorts(all, svc.name); !slices.Equal(got, want) {
					t.Errorf("Dovecot %s opens ports %v, want %v", svc.name, got, want)
				}
			}
		})
	}
}

// listenerPorts lists the non-zero inet_listener ports of a service in
// doveconf's full output.
func listenerPorts(conf, service string) []string {
	var ports []string
	in, depth := false, 0
	for _, line := range strings.Split(conf, "\n") {
		l := strings.TrimSpace(line)
		switch {
		case !in && l == "service "+service+" {":
			in, depth = true, 1
		case in && strings.HasSuffix(l, "{"):
			depth++
		case in && l == "}":
			if depth--; depth == 0 {
				in = false
			}
		case in && depth == 2 && strings.HasPrefix(l, "port = "):
			if p := strings.TrimPrefix(l, "port = "); p != "0" {
				ports = append(ports, p)
			}
		}
	}
	return ports
}

// A null client's Postfix, as Postfix itself reads it: loopback only, no
// destination, no relaying for others, local delivery refused, everything
// to the relayhost, milterd on both paths; and no Dovecot, zones or domain
// maps at all.
func TestNullClient(t *testing.T) {
	if _, err := exec.LookPath("postconf"); err != nil {
		if testing.Short() {
			t.Skip("postconf not installed")
		}
		t.Fatal("this test needs postconf (Debian package postfix)")
	}
	inv := load(t, "../examples/nullclient.yaml")
	files, err := Render(inv)
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"postfix/main.cf", "postfix/master.cf", "postfix/tls_policy", SASLPasswd, "postfix/" + DigestFile, "unbound/unbound.conf"}
	slices.Sort(want)
	if got := files.Names(); !slices.Equal(got, want) {
		t.Errorf("a null client renders %v, want %v", got, want)
	}
	dir := t.TempDir()
	if _, err := Write(dir, files); err != nil {
		t.Fatal(err)
	}
	pdir := filepath.Join(dir, "postfix")
	out, err := exec.Command("postconf", "-c", pdir, "-n").CombinedOutput()
	if err != nil {
		t.Fatalf("postconf -n: %v\n%s", err, out)
	}
	got := map[string]string{}
	for _, l := range strings.Split(string(out), "\n") {
		if k, v, ok := strings.Cut(l, " = "); ok {
			got[k] = v
		} else if k, ok := strings.CutSuffix(l, " ="); ok {
			got[k] = ""
		}
	}
	for k, v := range map[string]string{
		"inet_interfaces":          "loopback-only",
		"mydestination":            "",
		"relay_domains":            "",
		"local_transport":          "error:5.1.1 local delivery disabled",
		"relayhost":                "[mx1.example.com]:25",
		"mynetworks":               "127.0.0.0/8",
		"smtpd_relay_restrictions": "permit_mynetworks, reject",
		"smtpd_milters":            "unix:/var/spool/postfix/private/mailnode-milter",
		"non_smtpd_milters":        "unix:/var/spool/postfix/private/mailnode-milter",
		"milter_default_action":    "tempfail",
		"alias_maps":               "",
	} {
		if g, ok := got[k]; !ok || g != v {
			t.Errorf("postconf -n: %s = %q (set: %v), want %q", k, g, ok, v)
		}
	}
	for k := range got {
		if strings.HasPrefix(k, "virtual_") || strings.HasPrefix(k, "smtpd_sasl") || k == "transport_maps" || strings.Contains(got[k], "check_policy_service") {
			t.Errorf("a null client's main.cf sets %s = %s", k, got[k])
		}
	}
	// master.cf: the loopback smtpd only, no submission service.
	out, err = exec.Command("postconf", "-c", pdir, "-M").CombinedOutput()
	if err != nil {
		t.Fatalf("postconf -M: %v\n%s", err, out)
	}
	var inet []string
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) > 1 && f[1] == "inet" {
			inet = append(inet, f[0])
		}
	}
	if !slices.Equal(inet, []string{"25"}) {
		t.Errorf("inet services %v, want [25] (bound by inet_interfaces = loopback-only)", inet)
	}
}

// One tier inventory: each node renders its own myhostname, and the very
// same zones, whichever node renders them.
func TestTierNodesRenderSameZones(t *testing.T) {
	one, two := renderTier(t)
	for n := range one {
		if strings.HasPrefix(n, "dns/") && !bytes.Equal(one[n], two[n]) {
			t.Errorf("%s differs between mx1 and mx2", n)
		}
	}
	for host, files := range map[string]map[string][]byte{"mx1.example.com": one, "mx2.example.com": two} {
		if !bytes.Contains(files["postfix/main.cf"], []byte("\nmyhostname = "+host+"\n")) {
			t.Errorf("%s: main.cf lacks myhostname = %s", host, host)
		}
	}
}
