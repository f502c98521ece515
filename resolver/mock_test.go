package resolver

import (
	"context"
	"errors"
	"net"
	"testing"
)

func TestMock(t *testing.T) {
	m := &Mock{
		TXT:  map[string][]string{"Example.TEST.": {"v=spf1 -all"}},
		A:    map[string][]string{"mx.example.test": {"192.0.2.1"}},
		AAAA: map[string][]string{"mx.example.test": {"2001:db8::1"}},
		PTR:  map[string][]string{"192.0.2.1": {"mx.example.test."}},
		Fail: []string{"down.test"},
	}
	ctx := context.Background()
	if v, err := m.LookupTXT(ctx, "example.test"); err != nil || len(v) != 1 {
		t.Errorf("TXT: %v %v", v, err)
	}
	var de *net.DNSError
	if _, err := m.LookupTXT(ctx, "missing.test"); !errors.As(err, &de) || !de.IsNotFound || IsTemporary(err) {
		t.Errorf("missing: %v, want not found", err)
	}
	if _, err := m.LookupMX(ctx, "example.test"); err == nil || IsTemporary(err) {
		t.Errorf("no MX: %v, want not found", err)
	}
	for _, n := range []string{"down.test", "a.b.DOWN.test."} {
		if _, err := m.LookupA(ctx, n); !IsTemporary(err) {
			t.Errorf("%s: %v, want a temporary error", n, err)
		}
	}
	if _, err := m.LookupA(ctx, "updown.test"); IsTemporary(err) {
		t.Errorf("updown.test is not below down.test: %v", err)
	}
	if ips, err := m.LookupIPAddr(ctx, "mx.example.test"); err != nil || len(ips) != 2 {
		t.Errorf("IPAddr: %v %v", ips, err)
	}
	if a, err := m.LookupA(ctx, "mx.example.test"); err != nil || len(a) != 1 || a[0].String() != "192.0.2.1" {
		t.Errorf("A: %v %v", a, err)
	}
	if p, err := m.LookupAddr(ctx, "192.0.2.1"); err != nil || len(p) != 1 {
		t.Errorf("PTR: %v %v", p, err)
	}
}
