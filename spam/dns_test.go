package spam

import (
	"context"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mailnode/mailnode/resolver"
	"github.com/mailnode/mailnode/spam/spamtest"
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
`

func testResolver(t *testing.T) (*resolver.Client, *spamtest.DNS) {
	d := spamtest.StartDNS(t, testZone)
	d.Drop("1.0.0.127.slow.test", 0)
	return resolver.NewClient(d.Addr, 300*time.Millisecond), d
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
	// Asked again from the resolver's cache alone (a client seen before),
	// the answers are the same, every zone on this goroutine; the errors
	// (the error code excepted, an answer) were never cached.
	for _, c := range cases[:5] {
		cached, probe := resolver.CacheOnly(ctx)
		ls := CheckDNSBL(cached, r, netip.MustParseAddr(c.ip), c.zones)
		for i, l := range ls {
			if l.Listed != c.listed[i] || (l.Err != nil) != c.errs[i] {
				t.Errorf("%s in %s from the cache: listed %v err %v, want listed %v err %v", c.ip, l.Zone, l.Listed, l.Err, c.listed[i], c.errs[i])
			}
		}
		if probe.Missed() {
			t.Errorf("%s: not all in the cache", c.ip)
		}
	}
	cached, probe := resolver.CacheOnly(ctx)
	if ls := CheckDNSBL(cached, r, netip.MustParseAddr("127.0.0.9"), []string{"bl.test"}); ls[0].Err == nil || !probe.Missed() {
		t.Errorf("a client not seen, from the cache only: %+v, missed %v", ls, probe.Missed())
	}
}
