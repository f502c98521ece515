package mailauth

import (
	"context"
	"net/netip"
	"testing"
	"time"

	"blitiri.com.ar/go/spf"
	"github.com/emersion/go-msgauth/dmarc"
	"github.com/mailnode/mailnode/dns/dnstest"
	"github.com/mailnode/mailnode/resolver"
	"github.com/miekg/dns"
)

// testZone is what the in-process DNS server answers for the tests below.
const testZone = `
; SPF
pass.test.        IN TXT "v=spf1 ip4:127.0.0.0/24 ip6:2001:db8::/32 -all"
fail.test.        IN TXT "v=spf1 ip4:192.0.2.1 -all"
soft.test.        IN TXT "v=spf1 ip4:192.0.2.1 ~all"
neutral.test.     IN TXT "v=spf1 ?all"
two.test.         IN TXT "v=spf1 -all"
two.test.         IN TXT "v=spf1 +all"
incl.test.        IN TXT "v=spf1 include:pass.test -all"
mx.test.          IN TXT "v=spf1 mx -all"
mx.test.          IN MX 10 mail.mx.test.
mail.mx.test.     IN A 127.0.0.9
helo.test.        IN TXT "v=spf1 a -all"
helo.test.        IN A 127.0.0.5
nospf.test.       IN TXT "some other record"
broken.test.      IN TXT "v=spf1 include:servfail.test -all"

; DMARC
_dmarc.pass.test.   IN TXT "v=DMARC1; p=reject"
_dmarc.fail.test.   IN TXT "v=DMARC1; p=reject; sp=quarantine"
_dmarc.soft.test.   IN TXT "v=DMARC1; p=quarantine; pct=50"
_dmarc.strict.test. IN TXT "v=DMARC1; p=reject; aspf=s; adkim=s"
strict.test.        IN TXT "v=spf1 ip4:127.0.0.1 -all"
sub.strict.test.    IN TXT "v=spf1 ip4:127.0.0.1 -all"
_dmarc.none.test.   IN TXT "v=DMARC1; p=none"
`

// testResolver is a resolver.Client on an in-process server for testZone,
// authoritative for the whole tree (a name outside it is NXDOMAIN), where
// servfail.test fails.
func testResolver(t *testing.T) *resolver.Client {
	d := dnstest.Start(t, ". 3600 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 60\n"+testZone)
	d.Fail("servfail.test", 0, dns.RcodeServerFailure)
	d.Fail("_dmarc.servfail.test", 0, dns.RcodeServerFailure)
	return resolver.NewClient(d.Addr, 300*time.Millisecond)
}

func TestCheckSPF(t *testing.T) {
	r := testResolver(t)
	ctx := context.Background()
	cases := []struct {
		ip, helo, sender string
		want             spf.Result
		identity, domain string
	}{
		{"127.0.0.1", "mx.pass.test", "a@pass.test", spf.Pass, "mailfrom", "pass.test"},
		{"2001:db8::25", "mx.pass.test", "a@pass.test", spf.Pass, "mailfrom", "pass.test"},
		{"::ffff:127.0.0.1", "x", "a@PASS.test", spf.Pass, "mailfrom", "pass.test"},
		{"127.0.0.1", "x", "a@fail.test", spf.Fail, "mailfrom", "fail.test"},
		{"127.0.0.1", "x", "a@soft.test", spf.SoftFail, "mailfrom", "soft.test"},
		{"127.0.0.1", "x", "a@neutral.test", spf.Neutral, "mailfrom", "neutral.test"},
		{"127.0.0.1", "x", "a@nospf.test", spf.None, "mailfrom", "nospf.test"},
		{"127.0.0.1", "x", "a@missing.test", spf.None, "mailfrom", "missing.test"},
		{"127.0.0.1", "x", "a@two.test", spf.PermError, "mailfrom", "two.test"},
		{"127.0.0.1", "x", "a@incl.test", spf.Pass, "mailfrom", "incl.test"},
		{"127.0.0.9", "x", "a@mx.test", spf.Pass, "mailfrom", "mx.test"},
		{"127.0.0.8", "x", "a@mx.test", spf.Fail, "mailfrom", "mx.test"},
		{"127.0.0.1", "x", "a@servfail.test", spf.TempError, "mailfrom", "servfail.test"},
		{"127.0.0.1", "x", "a@broken.test", spf.TempError, "mailfrom", "broken.test"},
		{"127.0.0.5", "helo.test", "", spf.Pass, "helo", "helo.test"},
		{"127.0.0.6", "helo.test", "", spf.Fail, "helo", "helo.test"},
		{"127.0.0.6", "[127.0.0.6]", "", spf.None, "helo", ""},
	}
	for _, c := range cases {
		got := CheckSPF(ctx, r, netip.MustParseAddr(c.ip), c.helo, c.sender)
		if got.Result != c.want || got.Identity != c.identity || got.Domain != c.domain {
			t.Errorf("%s %s <%s>: %+v, want %s %s %s", c.ip, c.helo, c.sender, got, c.want, c.identity, c.domain)
		}
	}
}

func TestDMARC(t *testing.T) {
	r := testResolver(t)
	ctx := context.Background()
	defer func(s func() int) { Sample = s }(Sample)
	sample := 0
	Sample = func() int { return sample }
	spfFor := func(res spf.Result, domain string) SPF { return SPF{Result: res, Domain: domain} }
	cases := []struct {
		name   string
		in     DMARCInput
		sample int
		result string
		policy dmarc.Policy
		disp   dmarc.Policy
	}{
		{"aligned SPF pass", DMARCInput{FromDomain: "pass.test", SPF: spfFor(spf.Pass, "pass.test")}, 0, "pass", "reject", "none"},
		{"relaxed: SPF of a sub-domain", DMARCInput{FromDomain: "pass.test", SPF: spfFor(spf.Pass, "bounce.pass.test")}, 0, "pass", "reject", "none"},
		{"aligned DKIM pass", DMARCInput{FromDomain: "pass.test", SPF: spfFor(spf.Fail, "pass.test"), DKIMPass: []string{"pass.test"}}, 0, "pass", "reject", "none"},
		{"unaligned SPF pass", DMARCInput{FromDomain: "pass.test", SPF: spfFor(spf.Pass, "other.test")}, 0, "fail", "reject", "reject"},
		{"unaligned DKIM pass", DMARCInput{FromDomain: "pass.test", DKIMPass: []string{"other.test"}}, 0, "fail", "reject", "reject"},
		{"sub-domain gets sp=", DMARCInput{FromDomain: "news.fail.test"}, 0, "fail", "quarantine", "quarantine"},
		{"organizational domain gets p=", DMARCInput{FromDomain: "fail.test"}, 0, "fail", "reject", "reject"},
		{"pct=50 in the sample", DMARCInput{FromDomain: "soft.test"}, 49, "fail", "quarantine", "quarantine"},
		{"pct=50 out of the sample", DMARCInput{FromDomain: "soft.test"}, 50, "fail", "quarantine", "none"},
		{"strict SPF: sub-domain not aligned", DMARCInput{FromDomain: "strict.test", SPF: spfFor(spf.Pass, "sub.strict.test")}, 0, "fail", "reject", "reject"},
		{"strict SPF: same domain", DMARCInput{FromDomain: "strict.test", SPF: spfFor(spf.Pass, "strict.test")}, 0, "pass", "reject", "none"},
		{"strict DKIM: parent not aligned", DMARCInput{FromDomain: "sub.strict.test", DKIMPass: []string{"strict.test"}}, 0, "fail", "reject", "reject"},
		{"p=none", DMARCInput{FromDomain: "none.test"}, 0, "fail", "none", "none"},
		{"no record", DMARCInput{FromDomain: "nospf.test"}, 0, "none", "", "none"},
		{"record lookup fails", DMARCInput{FromDomain: "servfail.test"}, 0, "temperror", "", "none"},
		{"aligned SPF temperror", DMARCInput{FromDomain: "pass.test", SPF: spfFor(spf.TempError, "pass.test")}, 0, "temperror", "reject", "none"},
		{"aligned DKIM temperror", DMARCInput{FromDomain: "pass.test", DKIMTemp: []string{"pass.test"}}, 0, "temperror", "reject", "none"},
		{"no From domain", DMARCInput{}, 0, "none", "", "none"},
	}
	for _, c := range cases {
		sample = c.sample
		var rec *dmarc.Record
		var sub bool
		var err error
		if c.in.FromDomain != "" {
			rec, sub, err = LookupDMARC(ctx, r.LookupTXT, c.in.FromDomain)
		}
		got := EvaluateDMARC(rec, sub, err, c.in)
		if got.Result != c.result || got.Policy != c.policy || got.Disposition != c.disp {
			t.Errorf("%s: %s p=%s dis=%s (%s), want %s p=%s dis=%s", c.name, got.Result, got.Policy, got.Disposition, got.Reason, c.result, c.policy, c.disp)
		}
	}
}
