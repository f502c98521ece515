// Package resolver is mailnode's one DNS client. Client asks one server,
// the inventory's node.resolver, caches answers for their TTL and reuses
// its sockets: milterd's SPF, DKIM, DMARC and DNSBL lookups all go through
// it. Exchange is the lower level under it for `mailnode dns check`, which
// picks the server (a parent zone's) and the flags itself and reads the
// rcode and the authority section. Both accept an answer only when it comes
// from the server asked and matches the question's ID, name, type and
// class.
//
// Resolver is the seam the callers ask through; Mock answers it from maps
// in tests.
package resolver

import (
	"context"
	"errors"
	"net"
	"net/netip"
)

// Resolver is what mailnode looks up in DNS: TXT (SPF, DKIM keys, DMARC),
// MX, addresses and PTR (SPF mechanisms), and A alone (DNSBL). It is
// blitiri.com.ar/go/spf's DNSResolver plus LookupA. Errors are
// *net.DNSError; IsTemporary tells temperror from a permanent answer.
type Resolver interface {
	LookupTXT(ctx context.Context, name string) ([]string, error)
	LookupMX(ctx context.Context, name string) ([]*net.MX, error)
	LookupIPAddr(ctx context.Context, host string) ([]net.IPAddr, error)
	LookupAddr(ctx context.Context, addr string) ([]string, error)
	LookupA(ctx context.Context, name string) ([]netip.Addr, error)
}

var (
	_ Resolver = (*Client)(nil)
	_ Resolver = (*Mock)(nil)
)

// IsTemporary reports whether err is a DNS failure that may go away
// (temperror), as opposed to a permanent answer. An error of unknown kind
// counts as temporary: it must never become a verdict.
func IsTemporary(err error) bool {
	var de *net.DNSError
	if errors.As(err, &de) {
		return de.IsTemporary || de.IsTimeout
	}
	return err != nil
}
