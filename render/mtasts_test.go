package render

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/mailnode/mailnode/dns"
	"github.com/mailnode/mailnode/inventory"
)

// The published policy of a tier's domain names every node, is the same
// file from every node, and the zone's id is the policy's: a change of
// mode gives another id.
func TestMTASTSPolicyFile(t *testing.T) {
	one, two := renderTier(t)
	name := dns.PolicyPath("example.com")
	const want = "version: STSv1\nmode: testing\nmx: mx1.example.com\nmx: mx2.example.com\nmax_age: 86400\n"
	if got := string(one[name]); got != want {
		t.Errorf("%s:\n%s\nwant:\n%s", name, got, want)
	}
	if !bytes.Equal(one[name], two[name]) {
		t.Errorf("%s differs between mx1 and mx2", name)
	}
	if _, ok := one[dns.PolicyPath("example.net")]; ok {
		t.Errorf("example.net has no mta_sts but got a policy file")
	}
	p, err := dns.ParsePolicy(want)
	if err != nil || p.Mode != "testing" || p.MaxAge != 86400 || strings.Join(p.MX, ",") != "mx1.example.com,mx2.example.com" {
		t.Errorf("the policy does not parse back: %+v, %v", p, err)
	}
	zone := string(one["dns/example.com.zone"])
	if rec := "_mta-sts.example.com.\t3600\tIN\tTXT\t\"v=STSv1; id=" + dns.MTASTSID(want) + "\""; !strings.Contains(zone, rec) {
		t.Errorf("the zone lacks %q:\n%s", rec, zone)
	}

	inv := loadAs(t, "testdata/tier.yaml", "mx1.example.com")
	inv.Domain("example.com").MTASTS.Mode = "enforce"
	three, err := Render(inv)
	if err != nil {
		t.Fatal(err)
	}
	enforce := strings.Replace(want, "testing", "enforce", 1)
	if string(three[name]) != enforce {
		t.Errorf("mode enforce: %s", three[name])
	}
	if dns.MTASTSID(enforce) == dns.MTASTSID(want) || !strings.Contains(string(three["dns/example.com.zone"]), "id="+dns.MTASTSID(enforce)) {
		t.Errorf("the id does not follow the policy")
	}
}

// postfix.outbound_tls: mta-sts, as Postfix reads main.cf: the policy map
// asks mta-sts-daemon (after the smarthost's tls_policy when there is one),
// peers are verified against the system CAs unless postfix.main_cf names
// another file; the daemon's configuration listens where Postfix asks.
func TestOutboundMTASTS(t *testing.T) {
	if _, err := exec.LookPath("postconf"); err != nil {
		if testing.Short() {
			t.Skip("postconf not installed")
		}
		t.Fatal("this test needs postconf (Debian package postfix)")
	}
	for _, c := range []struct {
		file, caFile string
		want         map[string]string
	}{
		{"../examples/inventory.yaml", "", map[string]string{
			"smtp_tls_policy_maps": "socketmap:inet:127.0.0.1:8461:postfix",
			"smtp_tls_CAfile":      DefaultCAFile,
		}},
		{"../examples/inventory.yaml", "/etc/mailnode/test-ca.pem", map[string]string{
			"smtp_tls_CAfile": "/etc/mailnode/test-ca.pem",
		}},
		{"testdata/private.yaml", "", map[string]string{
			"smtp_tls_policy_maps": "hash:/tmp/mailnode-golden/postfix/tls_policy, socketmap:inet:127.0.0.1:8461:postfix",
		}},
	} {
		inv := load(t, c.file)
		if files, err := Render(inv); err != nil {
			t.Fatal(err)
		} else if _, ok := files[MTASTSResolverConfig]; ok {
			t.Errorf("%s: %s rendered with outbound_tls may", c.file, MTASTSResolverConfig)
		}
		inv.Postfix.OutboundTLS = inventory.OutboundMTASTS
		if c.caFile != "" {
			inv.Postfix.MainCF = map[string]string{"smtp_tls_CAfile": c.caFile}
		}
		files, err := Render(inv)
		if err != nil {
			t.Fatal(err)
		}
		dir := t.TempDir()
		if _, err := Write(dir, files); err != nil {
			t.Fatal(err)
		}
		out, err := exec.Command("postconf", "-c", filepath.Join(dir, "postfix"), "-n").CombinedOutput()
		if err != nil {
			t.Fatalf("postconf -n: %v\n%s", err, out)
		}
		got := map[string]string{}
		for _, l := range strings.Split(string(out), "\n") {
			if k, v, ok := strings.Cut(l, " = "); ok {
				got[k] = v
			}
		}
		for k, v := range c.want {
			if got[k] != v {
				t.Errorf("%s: postconf -n: %s = %q, want %q", c.file, k, got[k], v)
			}
		}
		if strings.Count(string(files["postfix/main.cf"]), "\nsmtp_tls_policy_maps =") != 1 {
			t.Errorf("%s: main.cf sets smtp_tls_policy_maps more than once:\n%s", c.file, files["postfix/main.cf"])
		}
		var conf struct {
			Host        string `yaml:"host"`
			Port        int    `yaml:"port"`
			DefaultZone struct {
				StrictTesting bool `yaml:"strict_testing"`
			} `yaml:"default_zone"`
			Cache struct {
				Type string `yaml:"type"`
			} `yaml:"cache"`
		}
		if err := yaml.Unmarshal(files[MTASTSResolverConfig], &conf); err != nil {
			t.Fatalf("%s: %v", MTASTSResolverConfig, err)
		}
		if conf.Host != "127.0.0.1" || conf.Port != 8461 || conf.DefaultZone.StrictTesting || conf.Cache.Type != "internal" {
			t.Errorf("%s: %+v", MTASTSResolverConfig, conf)
		}
	}
}

// A policy or resolver configuration the inventory no longer asks for is
// removed by Write and shown by Check, as a stale zone is.
func TestMTASTSStaleFiles(t *testing.T) {
	inv := load(t, "../examples/inventory.yaml")
	inv.Postfix.OutboundTLS = inventory.OutboundMTASTS
	files, err := Render(inv)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if _, err := Write(dir, files); err != nil {
		t.Fatal(err)
	}
	policy := dns.PolicyPath("example.com")
	for _, name := range []string{policy, MTASTSResolverConfig} {
		if _, err := os.Stat(filepath.Join(dir, name)); err != nil {
			t.Fatalf("%s not written: %v", name, err)
		}
	}
	inv.Domain("example.com").MTASTS = nil
	inv.Postfix.OutboundTLS = inventory.OutboundMay
	if files, err = Render(inv); err != nil {
		t.Fatal(err)
	}
	diff, err := Check(dir, files)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{policy, MTASTSResolverConfig} {
		if !bytes.Contains(diff, []byte("--- a/"+name+"\n+++ /dev/null\n")) {
			t.Errorf("Check does not show %s as removed:\n%s", name, diff)
		}
	}
	changed, err := Write(dir, files)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{policy, MTASTSResolverConfig} {
		if _, err := os.Stat(filepath.Join(dir, name)); !os.IsNotExist(err) || !slices.Contains(changed, name) {
			t.Errorf("%s: still there (%v) or not reported (%v)", name, err, changed)
		}
	}
}
