package resolver

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"sync"

	"github.com/miekg/dns"
)

// Mock is a Resolver that answers from maps, for tests. Names are compared
// case-insensitively and without a trailing dot; PTR is keyed by the
// address as text. A name with no entry in the map of the type asked is
// not found (a permanent answer, IsNotFound), and a name in Fail, or below
// one, fails temporarily (a timeout) whatever the type. The maps must not
// change while the Mock is in use.
type Mock struct {
	TXT  map[string][]string
	A    map[string][]string // IPv4 addresses as text
	AAAA map[string][]string // IPv6 addresses as text
	MX   map[string][]*net.MX
	PTR  map[string][]string
	Fail []string
}

func mockKey(name string) string { return strings.ToLower(strings.TrimSuffix(name, ".")) }

// find returns m[name], or the error the Mock gives for name.
func find[T any](r *Mock, m map[string][]T, name string) ([]T, error) {
	k := mockKey(name)
	for _, f := range r.Fail {
		if f = mockKey(f); k == f || strings.HasSuffix(k, "."+f) {
			return nil, &net.DNSError{Err: "i/o timeout", Name: name, Server: "mock", IsTimeout: true, IsTemporary: true}
		}
	}
	v, ok := m[k]
	if !ok {
		for mk, mv := range m {
			if mockKey(mk) == k {
				v, ok = mv, true
				break
			}
		}
	}
	if !ok || len(v) == 0 {
		return nil, &net.DNSError{Err: "no such host", Name: name, Server: "mock", IsNotFound: true}
	}
	return v, nil
}

// LookupTXT implements Resolver.
func (r *Mock) LookupTXT(_ context.Context, name string) ([]string, error) {
	return find(r, r.TXT, name)
}

// LookupMX implements Resolver.
func (r *Mock) LookupMX(_ context.Context, name string) ([]*net.MX, error) {
	return find(r, r.MX, name)
}

// LookupA implements Resolver.
func (r *Mock) LookupA(_ context.Context, name string) ([]netip.Addr, error) {
	v, err := find(r, r.A, name)
	if err != nil {
		return nil, err
	}
	out := make([]netip.Addr, 0, len(v))
	for _, s := range v {
		out = append(out, netip.MustParseAddr(s))
	}
	return out, nil
}

// LookupIPAddr implements Resolver: the A and AAAA entries of host.
func (r *Mock) LookupIPAddr(_ context.Context, host string) ([]net.IPAddr, error) {
	var ips []net.IPAddr
	var errs []error
	for _, m := range []map[string][]string{r.A, r.AAAA} {
		v, err := find(r, m, host)
		if err != nil {
			errs = append(errs, err)
		}
		for _, s := range v {
			ips = append(ips, net.IPAddr{IP: net.IP(netip.MustParseAddr(s).AsSlice())})
		}
	}
	return ips, ipErr(ips, errs)
}

// LookupAddr implements Resolver.
func (r *Mock) LookupAddr(_ context.Context, addr string) ([]string, error) {
	if _, err := dns.ReverseAddr(addr); err != nil {
		return nil, &net.DNSError{Err: "unrecognized address", Name: addr}
	}
	return find(r, r.PTR, addr)
}

// AskLog records, for tests, whether each question asked through it came
// under a CacheOnly context. The zero value is ready to use.
type AskLog struct {
	mu        sync.Mutex
	cacheOnly []bool
}

// Asked records one question asked under ctx.
func (l *AskLog) Asked(ctx context.Context) {
	l.mu.Lock()
	l.cacheOnly = append(l.cacheOnly, IsCacheOnly(ctx))
	l.mu.Unlock()
}

// TXT wraps a TXT lookup so that each question is recorded.
func (l *AskLog) TXT(lookup func(context.Context, string) ([]string, error)) func(context.Context, string) ([]string, error) {
	return func(ctx context.Context, name string) ([]string, error) {
		l.Asked(ctx)
		return lookup(ctx, name)
	}
}

// Take returns what was recorded since the last Take, in order: true for a
// question asked from the cache only.
func (l *AskLog) Take() []bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	out := l.cacheOnly
	l.cacheOnly = nil
	return out
}
