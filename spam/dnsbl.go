package spam

import (
	"context"
	"net/netip"
	"strconv"
	"strings"

	"github.com/mailnode/mailnode/resolver"
)

// ALookup resolves the A records of a name; every resolver.Resolver
// (resolver.Client on node.resolver, resolver.Mock in tests) implements it.
type ALookup interface {
	LookupA(ctx context.Context, name string) ([]netip.Addr, error)
}

// Listing is the answer of one DNSBL zone about one client address.
type Listing struct {
	Zone   string
	Listed bool
	Codes  []netip.Addr // the 127.0.0.x answers when listed
	Err    error        // lookup trouble (temporary), or an error code of the list
}

// DNSBLQuery returns the name to ask a DNSBL zone about ip: the address
// reversed, IPv4 by octet (2.0.0.127.zone), IPv6 by nibble (RFC 5782 §2.4).
// An IPv4-mapped IPv6 address is asked as IPv4. ok is false for an invalid
// address.
func DNSBLQuery(ip netip.Addr, zone string) (name string, ok bool) {
	if !ip.IsValid() {
		return "", false
	}
	ip = ip.Unmap()
	zone = strings.TrimSuffix(zone, ".")
	var b strings.Builder
	if ip.Is4() {
		a := ip.As4()
		for i := 3; i >= 0; i-- {
			b.WriteString(strconv.Itoa(int(a[i])))
			b.WriteByte('.')
		}
	} else {
		a := ip.As16()
		const hex = "0123456789abcdef"
		for i := 15; i >= 0; i-- {
			b.WriteByte(hex[a[i]&0xf])
			b.WriteByte('.')
			b.WriteByte(hex[a[i]>>4])
			b.WriteByte('.')
		}
	}
	b.WriteString(zone)
	return b.String(), true
}

// errListCode is a DNSBL answer in 127.255.255.0/24: the list refuses to
// answer (Spamhaus: query through a public resolver, too many queries),
// which says nothing about the client.
type errListCode netip.Addr

func (e errListCode) Error() string {
	return "dnsbl: the list answered with error code " + netip.Addr(e).String()
}

// CheckDNSBL asks every zone about ip, all at once, and returns one Listing
// per zone in the order of zones. A client is listed when the zone answers
// with an address in 127.0.0.0/8 other than 127.255.255.0/24 (the error
// codes some lists use); NXDOMAIN means not listed. Lookups stop when ctx
// ends; those are reported with Err set.
func CheckDNSBL(ctx context.Context, r ALookup, ip netip.Addr, zones []string) []Listing {
	out := make([]Listing, len(zones))
	if len(zones) == 0 {
		return out
	}
	// The first zone is asked on this goroutine, the others on their own:
	// a new goroutine's stack grows on its way through the DNS code, and
	// with one or two zones that copying was a tenth of the lookups' cost.
	done := make(chan struct{}, len(zones))
	for i := range zones {
		out[i].Zone = zones[i]
	}
	if resolver.IsCacheOnly(ctx) {
		// From the resolver's cache: no waiting to overlap.
		for i := range out {
			checkZone(ctx, r, ip, &out[i])
		}
		return out
	}
	for i := 1; i < len(zones); i++ {
		go func(l *Listing) {
			defer func() { done <- struct{}{} }()
			checkZone(ctx, r, ip, l)
		}(&out[i])
	}
	checkZone(ctx, r, ip, &out[0])
	for range zones[1:] {
		<-done
	}
	return out
}

// checkZone asks l.Zone about ip and fills in l.
func checkZone(ctx context.Context, r ALookup, ip netip.Addr, l *Listing) {
	name, ok := DNSBLQuery(ip, l.Zone)
	if !ok {
		return
	}
	addrs, err := r.LookupA(ctx, name)
	if err != nil {
		if resolver.IsTemporary(err) {
			l.Err = err
		}
		return
	}
	for _, a := range addrs {
		if !a.Is4() || a.As4()[0] != 127 {
			continue
		}
		if v := a.As4(); v[1] == 255 && v[2] == 255 {
			l.Err = errListCode(a)
			continue
		}
		l.Listed = true
		l.Codes = append(l.Codes, a)
	}
	if l.Listed {
		l.Err = nil
	}
}
