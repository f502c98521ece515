package spam

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"

	"blitiri.com.ar/go/spf"
	"github.com/emersion/go-msgauth/dmarc"
	"github.com/mailnode/mailnode/spam/spamtest"
	"github.com/miekg/dns"
)

func TestMain(m *testing.M) { spamtest.Main(m) }

// testZone is what the in-process DNS server answers for the tests below.
const testZone = `
; DNSBL: 127.0.0.2 and 2001:db8::1 listed in bl.test, 127.0.0.3 gives an error code
2.0.0.127.bl.test.         IN A 127.0.0.2
2.0.0.127.bl.test.         IN TXT "listed for testing"
3.0.0.127.bl.test.         IN A 127.255.255.254
2.0.0.127.other.test.      IN A 127.0.0.10
1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.test. IN A 127.0.0.2

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

func testResolver(t *testing.T) (*Resolver, *spamtest.DNS) {
	d := spamtest.StartDNS(t, testZone)
	d.Fail("servfail.test", 0, dns.RcodeServerFailure)
	d.Fail("_dmarc.servfail.test", 0, dns.RcodeServerFailure)
	d.Drop("1.0.0.127.slow.test", 0)
	return NewResolver(d.Addr, 300*time.Millisecond), d
}

func TestDNSBLQuery(t *testing.T) {
	for _, c := range []struct{ ip, want string }{
		{"192.0.2.99", "99.2.0.192.bl.test"},
		{"127.0.0.2", "2.0.0.127.bl.test"},
		{"::ffff:127.0.0.2", "2.0.0.127.bl.test"},
		{"2001:db8::1", "1.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.8.b.d.0.1.0.0.2.bl.test"},
		{"2001:db8:1234:5678:9abc:def0:1:2", "2.0.0.0.1.0.0.0.0.f.e.d.c.b.a.9.8.7.6.5.4.3.2.1.8.b.d.0.1.0.0.2.bl.test"},
	} {
		got, ok := DNSBLQuery(netip.MustParseAddr(c.ip), "bl.test.")
		if !ok || got != c.want {
			t.Errorf("%s: %q, want %q", c.ip, got, c.want)
		}
	}
	if _, ok := DNSBLQuery(netip.Addr{}, "bl.test"); ok {
		t.Error("invalid address queried")
	}
}

func TestCheckDNSBL(t *testing.T) {
	r, _ := testResolver(t)
	ctx := context.Background()
	cases := []struct {
		ip      string
		zones   []string
		listed  []bool
		errs    []bool
		symbols string
	}{
		{"127.0.0.2", []string{"bl.test", "other.test", "clean.test"}, []bool{true, true, false}, []bool{false, false, false}, "MN_DNSBL_BL_TEST MN_DNSBL_OTHER_TEST"},
		{"2001:db8::1", []string{"bl.test"}, []bool{true}, []bool{false}, "MN_DNSBL_BL_TEST"},
		{"::ffff:127.0.0.2", []string{"bl.test"}, []bool{true}, []bool{false}, "MN_DNSBL_BL_TEST"},
		{"127.0.0.4", []string{"bl.test"}, []bool{false}, []bool{false}, ""},
		{"127.0.0.3", []string{"bl.test"}, []bool{false}, []bool{true}, ""},   // 127.255.255.254: the list's error code
		{"127.0.0.1", []string{"slow.test"}, []bool{false}, []bool{true}, ""}, // timeout: temporary
	}
	for _, c := range cases {
		ls := CheckDNSBL(ctx, r, netip.MustParseAddr(c.ip), c.zones)
		var names []string
		for _, s := range DNSBLSymbols(ls) {
			names = append(names, s.Name)
			if s.Score != Weights["MN_DNSBL"] {
				t.Errorf("%s: %s weighs %v", c.ip, s.Name, s.Score)
			}
		}
		if strings.Join(names, " ") != c.symbols {
			t.Errorf("%s: symbols %q, want %q", c.ip, names, c.symbols)
		}
		for i, l := range ls {
			if l.Listed != c.listed[i] || (l.Err != nil) != c.errs[i] {
				t.Errorf("%s in %s: listed %v err %v, want listed %v err %v", c.ip, l.Zone, l.Listed, l.Err, c.listed[i], c.errs[i])
			}
		}
	}
}

func TestResolverErrors(t *testing.T) {
	r, _ := testResolver(t)
	ctx := context.Background()
	if _, err := r.LookupTXT(ctx, "missing.test"); err == nil || IsTemporary(err) {
		t.Errorf("NXDOMAIN: %v, want a permanent error", err)
	}
	if _, err := r.LookupTXT(ctx, "mail.mx.test"); err == nil || IsTemporary(err) {
		t.Errorf("NODATA: %v, want a permanent error", err)
	}
	if _, err := r.LookupTXT(ctx, "servfail.test"); !IsTemporary(err) {
		t.Errorf("SERVFAIL: %v, want a temporary error", err)
	}
	start := time.Now()
	if _, err := r.LookupA(ctx, "1.0.0.127.slow.test"); !IsTemporary(err) {
		t.Errorf("no answer: %v, want a temporary error", err)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("timeout took %v", d)
	}
	down := NewResolver("127.0.0.1:1", 300*time.Millisecond)
	if _, err := down.LookupTXT(ctx, "pass.test"); !IsTemporary(err) {
		t.Errorf("server down: %v, want a temporary error", err)
	}
	ips, err := r.LookupIPAddr(ctx, "helo.test")
	if err != nil || len(ips) != 1 || ips[0].IP.String() != "127.0.0.5" {
		t.Errorf("LookupIPAddr: %v %v", ips, err)
	}
}

func TestCheckSPF(t *testing.T) {
	r, _ := testResolver(t)
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
	r, _ := testResolver(t)
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

func TestIsTemporary(t *testing.T) {
	if IsTemporary(nil) {
		t.Error("nil is temporary")
	}
	if !IsTemporary(errors.New("odd")) {
		t.Error("an unknown error must count as temporary (temperror, never a verdict)")
	}
}

func TestResolverCache(t *testing.T) {
	r, d := testResolver(t)
	now := time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)
	r.now = func() time.Time { return now }
	ctx := context.Background()
	ask := func(name string) error { _, err := r.LookupTXT(ctx, name); return err }
	q := func() int64 { return d.Queries.Load() }

	start := q()
	for range 3 {
		if err := ask("pass.test"); err != nil {
			t.Fatal(err)
		}
	}
	if n := q() - start; n != 1 {
		t.Errorf("an answer asked %d times, want once (cached)", n)
	}
	now = now.Add(time.Hour + time.Second) // the zone's TTL is 3600
	ask("pass.test")
	if n := q() - start; n != 2 {
		t.Errorf("expired answer: %d questions, want 2", n)
	}

	start = q()
	ask("missing.test")
	if err := ask("missing.test"); err == nil || IsTemporary(err) {
		t.Errorf("cached NXDOMAIN: %v", err)
	}
	if n := q() - start; n != 1 {
		t.Errorf("NXDOMAIN asked %d times, want once", n)
	}
	now = now.Add(NegativeTTL + time.Second)
	ask("missing.test")
	if n := q() - start; n != 2 {
		t.Errorf("expired NXDOMAIN: %d questions, want 2", n)
	}

	start = q()
	ask("servfail.test")
	if err := ask("servfail.test"); !IsTemporary(err) {
		t.Errorf("SERVFAIL: %v", err)
	}
	if n := q() - start; n != 2 {
		t.Errorf("SERVFAIL asked %d times, want 2 (never cached)", n)
	}
}
