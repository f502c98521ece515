package resolver

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/mailnode/mailnode/dns/dnstest"
	"github.com/miekg/dns"
)

// testZone is what the in-process DNS server answers for the tests below.
const testZone = `
pass.test.        IN TXT "v=spf1 ip4:127.0.0.0/24 ip6:2001:db8::/32 -all"
mail.mx.test.     IN A 127.0.0.9
helo.test.        IN A 127.0.0.5
`

// testResolver is a Client on an in-process server for testZone,
// authoritative for the whole tree (a name outside it is NXDOMAIN), where
// servfail.test fails and 1.0.0.127.slow.test goes unanswered.
func testResolver(t *testing.T) (*Client, *dnstest.Server) {
	d := dnstest.Start(t, ". 3600 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 60\n"+testZone)
	d.Fail("servfail.test", 0, dns.RcodeServerFailure)
	d.Drop("1.0.0.127.slow.test", 0)
	return NewClient(d.Addr, 300*time.Millisecond), d
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
	down := NewClient("127.0.0.1:1", 300*time.Millisecond)
	if _, err := down.LookupTXT(ctx, "pass.test"); !IsTemporary(err) {
		t.Errorf("server down: %v, want a temporary error", err)
	}
	ips, err := r.LookupIPAddr(ctx, "helo.test")
	if err != nil || len(ips) != 1 || ips[0].IP.String() != "127.0.0.5" {
		t.Errorf("LookupIPAddr: %v %v", ips, err)
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
