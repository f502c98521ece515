package inventory

import (
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite the .want files of testdata/bad")

// TestBadInventories keeps one broken inventory per file with every problem
// it must report, in order, as `config check` prints them.
func TestBadInventories(t *testing.T) {
	files, err := filepath.Glob("testdata/bad/*.yaml")
	if err != nil || len(files) == 0 {
		t.Fatalf("no test inventories: %v", err)
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			inv, err := Load(f)
			if err == nil {
				t.Fatalf("loaded without error: %+v", inv.Node)
			}
			if inv != nil {
				t.Fatal("a broken inventory must not be returned")
			}
			var got strings.Builder
			for _, p := range AsProblems(err) {
				if p.File != f {
					t.Errorf("problem names file %q, want %q", p.File, f)
				}
				got.WriteString(p.Error() + "\n")
			}
			wantFile := strings.TrimSuffix(f, ".yaml") + ".want"
			if *update {
				if err := os.WriteFile(wantFile, []byte(got.String()), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(wantFile)
			if err != nil {
				t.Fatalf("%v (run go test ./inventory -update)", err)
			}
			if got.String() != string(want) {
				t.Errorf("problems differ\n--- got\n%s--- want\n%s", got.String(), want)
			}
		})
	}
}

func TestExampleInventoryLoads(t *testing.T) {
	inv, err := Load("../examples/inventory.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(inv.LocalDomains()) != 2 || len(inv.RelayDomains()) != 1 {
		t.Fatalf("example: %d local, %d relay domains; want 2 and 1", len(inv.LocalDomains()), len(inv.RelayDomains()))
	}
	algs := map[string]bool{}
	for _, d := range inv.LocalDomains() {
		for _, s := range d.DKIM {
			algs[s.Algorithm] = true
		}
	}
	if !algs["rsa"] || !algs["ed25519"] {
		t.Errorf("example must show both DKIM algorithms, has %v", algs)
	}
	if inv.idx.lists.len() == 0 || len(inv.UnixUsers) == 0 || inv.RelayDomains()[0].Nexthop == "" {
		t.Error("example must show an internal list, unix users and a relay next hop")
	}
}

const small = `
node:
  hostname: MX1.Example.COM.
  addresses: [203.0.113.10]
  trusted_networks: [127.0.0.0/8, 10.20.0.0/16, "2001:db8:1::/48", 192.0.2.7]
domains:
  - name: Example.COM.
    mailboxes:
      - {user: Alice, password: "{SHA512-CRYPT}$6$x", aliases: [A.Smith]}
      - {user: bob, password: "{SHA512-CRYPT}$6$y"}
    aliases: {postmaster: alice, sales: [alice, "Carol@Partner.ORG."], boss: postmaster}
    lists: {all-staff: [alice, bob]}
  - name: bücher.example
    mailboxes: [{user: kurt, password: "{SHA512-CRYPT}$6$z"}]
  - name: corp-b.test.
    class: relay
    nexthop: "[10.20.0.5]:25"
`

func mustParse(t testing.TB, s string) *Inventory {
	t.Helper()
	inv, err := Parse([]byte(s), "test.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return inv
}

func TestClassify(t *testing.T) {
	inv := mustParse(t, small)
	for _, c := range []struct {
		addr string
		want Class
	}{
		{"alice@example.com", Local},
		{"ALICE@EXAMPLE.COM", Local},
		{"alice@example.com.", Local},
		{"<alice@example.com>", Local},
		{"x@Corp-B.test.", Relay},
		{"x@corp-b.test", Relay},
		{"x@sub.corp-b.test", Outside},
		{"x@sub.example.com", Outside},
		{"x@example.com.evil.org", Outside},
		{"x@xn--bcher-kva.example", Local},
		{"x@bücher.example", Local},
		{"x@BÜCHER.example.", Local},
		{"root@mx1.example.com", Local},
		{"x@partner.org", Outside},
		{"", Outside},
		{"alice", Outside},
		{"x@", Outside},
		{"x@[127.0.0.1]", Outside},
		{"x@exa mple.com", Outside},
		{"a@b@example.com", Local},
	} {
		if got := inv.Classify(c.addr); got != c.want {
			t.Errorf("Classify(%q) = %v, want %v", c.addr, got, c.want)
		}
	}
}

func TestAuthorized(t *testing.T) {
	inv := mustParse(t, small)
	for _, c := range []struct {
		client, sasl string
		want         Auth
	}{
		{"127.0.0.1", "", AuthTrust},
		{"10.20.255.1", "", AuthTrust},
		{"10.21.0.1", "", AuthNone},
		{"192.0.2.7", "", AuthTrust},
		{"192.0.2.8", "", AuthNone},
		{"2001:db8:1::5", "", AuthTrust},
		{"2001:db8:2::5", "", AuthNone},
		{"::ffff:10.20.0.9", "", AuthTrust},
		{"[10.20.0.9]", "", AuthTrust},
		{"", "", AuthNone},
		{"unknown", "", AuthNone},
		{"203.0.113.99", "alice@example.com", AuthSASL},
		{"10.20.0.9", "alice@example.com", AuthSASL},
		{"203.0.113.99", "  ", AuthNone},
	} {
		if got := inv.Authorized(c.client, c.sasl); got != c.want {
			t.Errorf("Authorized(%q, %q) = %v, want %v", c.client, c.sasl, got, c.want)
		}
	}
}

func TestMapsAndOwners(t *testing.T) {
	inv := mustParse(t, small)
	got := map[string]string{}
	for _, e := range inv.VirtualAliases() {
		got[e.Key] = strings.Join(e.Values, ",")
	}
	want := map[string]string{
		"a.smith@example.com":    "alice@example.com",
		"postmaster@example.com": "alice@example.com",
		"boss@example.com":       "postmaster@example.com",
		"sales@example.com":      "alice@example.com,carol@partner.org",
		"all-staff@example.com":  "alice@example.com,bob@example.com",
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("virtual %s = %q, want %q", k, got[k], v)
		}
	}
	if len(got) != len(want) {
		t.Errorf("virtual has %d entries, want %d: %v", len(got), len(want), got)
	}
	if !inv.IsList("All-Staff@Example.com.") || inv.IsList("sales@example.com") {
		t.Error("IsList wrong")
	}
	for _, c := range []struct {
		login, sender string
		ok            bool
	}{
		{"alice@example.com", "alice@example.com", true},
		{"alice@example.com", "a.smith@example.com", true},
		{"alice@example.com", "postmaster@example.com", true},
		{"alice@example.com", "boss@example.com", true},
		{"alice@example.com", "sales@example.com", false},
		{"alice@example.com", "bob@example.com", false},
		{"bob@example.com", "alice@example.com", false},
		{"ALICE@example.com", "Alice@Example.COM.", true},
		{"mallory@evil.org", "alice@example.com", false},
	} {
		if got := inv.MayUseSender(c.login, c.sender); got != c.ok {
			t.Errorf("MayUseSender(%s, %s) = %v, want %v", c.login, c.sender, got, c.ok)
		}
	}
	if d := inv.Domain("BÜCHER.example."); d == nil || d.Name != "xn--bcher-kva.example" {
		t.Errorf("Domain(IDN) = %+v", d)
	}
}

func TestDefaults(t *testing.T) {
	inv := mustParse(t, small)
	for name, c := range map[string][2]string{
		"postfix.config_directory":  {inv.Postfix.ConfigDirectory, "/etc/postfix"},
		"postfix.queue_directory":   {inv.Postfix.QueueDirectory, "/var/spool/postfix"},
		"policy.listen":             {inv.Policy.Listen, "unix:/var/spool/postfix/private/mailnode-policy"},
		"milter.listen":             {inv.Milter.Listen, "unix:/var/spool/postfix/private/mailnode-milter"},
		"policy.sender_login":       {inv.Policy.SenderLogin, "domain"},
		"policy.mode":               {inv.Policy.Mode, "enforce"},
		"dovecot.sasl_socket":       {inv.Dovecot.SASLSocket, "private/auth"},
		"node.resolver":             {inv.Node.Resolver, "127.0.0.1:53"},
		"node.resolver_anchor_file": {inv.Node.ResolverAnchorFile, "/var/lib/unbound/root.key"},
		"node.hostname":             {inv.Node.Hostname, "mx1.example.com"},
		"spam.engine":               {inv.Spam.Engine, "builtin"},
		"node.role":                 {inv.Node.Role, "mailnode"},
		"postfix.inet_interfaces":   {inv.Postfix.InetInterfaces, "all"},
	} {
		if c[0] != c[1] {
			t.Errorf("%s = %q, want %q", name, c[0], c[1])
		}
	}
	if inv.Policy.Greylist != nil || inv.Policy.Ratelimit != nil {
		t.Error("greylist and rate limits must be off unless the inventory turns them on")
	}
	if !inv.PolicyEnabled() || !inv.MilterEnabled() {
		t.Error("policy and milter wiring must default to on")
	}
}

func TestAntivirusDefaults(t *testing.T) {
	if inv := mustParse(t, small); inv.Spam.Antivirus != nil {
		t.Error("the virus scan must be off unless the inventory turns it on")
	}
	a := mustParse(t, small+"spam: {antivirus: {}}\n").Spam.Antivirus
	if a == nil || a.Engine != "clamd" || a.Address != "unix:/run/clamav/clamd.ctl" || a.OnFailure != "tempfail" || !a.ScansOutbound() {
		t.Errorf("spam.antivirus defaults: %+v", a)
	}
	a = mustParse(t, small+"spam: {antivirus: {address: \"[::1]:3310\", on_failure: accept, scan_outbound: false}}\n").Spam.Antivirus
	if a.Address != "[::1]:3310" || a.OnFailure != "accept" || a.ScansOutbound() {
		t.Errorf("spam.antivirus: %+v", a)
	}
}

func TestParseDuration(t *testing.T) {
	for in, want := range map[string]string{"300s": "5m0s", "48h": "48h0m0s", "35d": "840h0m0s", "0s": "0s"} {
		d, err := ParseDuration(in)
		if err != nil || d.String() != want {
			t.Errorf("ParseDuration(%q) = %v, %v; want %s", in, d, err, want)
		}
	}
	for _, in := range []string{"", "5", "-1s", "1.5d", "d", "abc"} {
		if _, err := ParseDuration(in); err == nil {
			t.Errorf("ParseDuration(%q) accepted", in)
		}
	}
}

func TestSuggest(t *testing.T) {
	names := []string{"hostname", "addresses", "trusted_networks", "resolver"}
	for in, want := range map[string]string{"hostnme": "hostname", "Trusted_Network": "trusted_networks", "zzzz": ""} {
		if got := suggest(in, names); got != want {
			t.Errorf("suggest(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzParse: any input yields an inventory or problems, never a panic; a
// returned inventory classifies without panicking.
func FuzzParse(f *testing.F) {
	f.Add([]byte(small))
	if b, err := os.ReadFile("../examples/inventory.yaml"); err == nil {
		f.Add(b)
	}
	files, _ := filepath.Glob("testdata/bad/*.yaml")
	for _, p := range files {
		if b, err := os.ReadFile(p); err == nil {
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		inv, err := Parse(data, "fuzz.yaml")
		if err != nil {
			if inv != nil {
				t.Fatal("inventory returned with an error")
			}
			if len(AsProblems(err)) == 0 {
				t.Fatal("error without problems")
			}
			return
		}
		for _, d := range inv.Domains {
			if inv.Classify("x@"+d.Name) == Outside {
				t.Fatalf("own domain %q classified outside", d.Name)
			}
		}
		_ = inv.Authorized("127.0.0.1", "")
		_ = inv.VirtualAliases()
		_ = inv.Owners()
	})
}

// TestHostChecks: the system users an inventory names, checked against a
// host whose user database the test sets.
func TestHostChecks(t *testing.T) {
	users := map[string]int{"vmail": 999, "mail": 8, "root": 0, "alice": 1000}
	host := &Host{LookupUser: func(name string) (int, error) {
		if uid, ok := users[name]; ok {
			return uid, nil
		}
		return 0, fmt.Errorf("%w: %s", ErrNoSuchUser, name)
	}, HasProgram: func(name string) bool { return name == "sievec" }}
	base := "node: {hostname: mx1.example.com}\ndomains: [{name: example.com}]\n"
	for _, c := range []struct{ extra, want string }{
		{"", ""},
		{"dovecot: {mail_user: mail}\n", `t.yaml:3: dovecot.mail_user: "mail" has uid 8, below Dovecot's first_valid_uid (100)`},
		{"dovecot: {mail_user: root}\n", `t.yaml:3: dovecot.mail_user: "root" is root: Dovecot never delivers mail as root`},
		{"dovecot: {mail_user: nosuch}\n", `t.yaml:3: dovecot.mail_user: system user "nosuch" does not exist on this host`},
		{"unix_users: [root, ghost]\n", `t.yaml:3: unix_users[1]: system user "ghost" does not exist on this host`},
		{"postfix: {outbound_tls: mta-sts}\n", `t.yaml:3: postfix.outbound_tls: "mta-sts" needs Postfix's MTA-STS resolver, which is not installed on this host (no mta-sts-daemon): apt-get install postfix-mta-sts-resolver`},
		{"dovecot: {sieve: {}}\n", `t.yaml:3: dovecot.sieve: needs Pigeonhole, which is not installed on this host (no /usr/lib/dovecot/managesieve): apt-get install dovecot-managesieved`},
	} {
		_, err := ParseWith([]byte(base+c.extra), "t.yaml", LoadOptions{Host: host})
		if c.want == "" {
			if err != nil {
				t.Errorf("%q: %v", c.extra, err)
			}
			continue
		}
		if err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("%q: got %v\nwant prefix %s", c.extra, err, c.want)
		}
		if Unreadable(err) {
			t.Errorf("%q: a host problem is not an unreadable inventory", c.extra)
		}
		// Without the host, the same inventory loads: the daemons and the
		// tests do not depend on the machine's users.
		if _, err := Parse([]byte(base+c.extra), "t.yaml"); err != nil {
			t.Errorf("%q without host checks: %v", c.extra, err)
		}
	}
}

func TestUnreadable(t *testing.T) {
	for _, c := range []struct {
		data string
		want bool
	}{
		{"", true}, {"node: [\n", true}, {"- a\n- b\n", true}, {"node: {hostname: x}\n", false},
	} {
		_, err := Parse([]byte(c.data), "t.yaml")
		if err == nil || Unreadable(err) != c.want {
			t.Errorf("%q: err %v, Unreadable %v, want %v", c.data, err, Unreadable(err), c.want)
		}
	}
	if _, err := Load("testdata/does-not-exist.yaml"); !Unreadable(err) {
		t.Errorf("missing file: %v is not Unreadable", err)
	}
}

// A null client keeps its local domains (what milterd signs for) and
// defaults to loopback only, no submission and no policyd.
func TestNullClientDefaults(t *testing.T) {
	inv, err := Load("../examples/nullclient.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !inv.NullClient() || inv.Node.Role != RoleNullClient {
		t.Fatalf("node.role = %q", inv.Node.Role)
	}
	if got := inv.Postfix.InetInterfaces; got != "loopback-only" {
		t.Errorf("inet_interfaces = %q, want loopback-only", got)
	}
	if len(inv.Postfix.SubmissionListen)+len(inv.Postfix.SubmissionsListen) != 0 {
		t.Errorf("submission services %v %v on a null client", inv.Postfix.SubmissionListen, inv.Postfix.SubmissionsListen)
	}
	if inv.PolicyEnabled() || !inv.MilterEnabled() {
		t.Errorf("policy %v, milter %v: a null client runs milterd only", inv.PolicyEnabled(), inv.MilterEnabled())
	}
	if c := inv.Classify("alice@example.com"); c != Local {
		t.Errorf("alice@example.com is %s, want local (the domain it signs for)", c)
	}
	// Loopback addresses are fine; the role is read case-insensitively.
	doc := `
node: {hostname: app2.example.com, role: NullClient}
postfix:
  relayhost: "[10.0.0.1]:25"
  inet_interfaces: 127.0.0.1
  smtp_listen: ["127.0.0.1:2525", "25"]
domains:
  - name: example.com
`
	if inv := mustParse(t, doc); !inv.NullClient() || inv.Postfix.InetInterfaces != "127.0.0.1" {
		t.Errorf("role %q, inet_interfaces %q", inv.Node.Role, inv.Postfix.InetInterfaces)
	}
}

func TestStateEqual(t *testing.T) {
	sn := func(addrs ...string) *Sentinel { return &Sentinel{Master: "m", Addresses: addrs} }
	a := State{Backend: "redis", Sentinel: sn("10.0.0.5:26379", "10.0.0.6:26379")}
	if !a.Equal(State{Backend: "redis", Sentinel: sn("10.0.0.5:26379", "10.0.0.6:26379")}) {
		t.Error("equal selections differ")
	}
	for _, b := range []State{
		{Backend: "redis", Sentinel: sn("10.0.0.5:26379")},
		{Backend: "redis", Sentinel: &Sentinel{Master: "other", Addresses: []string{"10.0.0.5:26379", "10.0.0.6:26379"}}},
		{Backend: "redis", URL: "redis://10.0.0.5:6379/0"},
		{Backend: "bbolt", Path: "/var/lib/mailnode/state.db"},
	} {
		if a.Equal(b) || b.Equal(a) {
			t.Errorf("%+v equals %+v", a, b)
		}
	}
}
