package milter

import (
	"log/slog"
	"sync"
	"time"

	"github.com/mailnode/mailnode/dkim"
	"github.com/mailnode/mailnode/inventory"
	"github.com/mailnode/mailnode/resolver"
	"github.com/mailnode/mailnode/srs"
)

// Builder makes milterd's Filter for an inventory and its keys, at start
// and on every SIGHUP. Every Filter it makes asks DNS through one
// resolver.Client on node.resolver. A reload keeps that Client, with its
// cache and sockets, while node.resolver stays the same; when it changed,
// the old Client is closed: sessions that started before the reload use it
// to their end (Close leaves it working, see resolver.Client.Close) and
// their sockets are closed as their questions end, so reloads leave
// nothing open behind them.
type Builder struct {
	DNSTimeout time.Duration // one DNS question; resolver.DefaultTimeout when 0
	Log        *slog.Logger
	Metrics    *Metrics // shared by every Filter made; nil: none

	mu  sync.Mutex
	res *resolver.Client
	srs *srs.SRS // forwarding.srs's secrets (SetSRS)
}

// SetSRS gives the Filters made from now on the SRS secrets s (LoadSRS;
// nil: SRS off), at start and on every reload.
func (b *Builder) SetSRS(s *srs.SRS) {
	b.mu.Lock()
	b.srs = s
	b.mu.Unlock()
}

// Filter returns the Filter for inv and keys: the inbound chain (SPF, DKIM,
// DMARC, the spam gate) with its DNS, DKIM key lookups included, through
// the Builder's resolver.
func (b *Builder) Filter(inv *inventory.Inventory, keys map[string][]dkim.Key) *Filter {
	timeout := b.DNSTimeout
	if timeout <= 0 {
		timeout = resolver.DefaultTimeout
	}
	b.mu.Lock()
	if b.res == nil || b.res.Addr != inv.Node.Resolver {
		if b.res != nil {
			b.res.Close()
		}
		b.res = resolver.NewClient(inv.Node.Resolver, timeout)
	}
	res := b.Metrics.Resolver(b.res)
	secrets := b.srs
	b.mu.Unlock()
	lookup := LookupTXT(res.LookupTXT)
	f := NewFilter(inv, keys, lookup)
	f.Checks = InboundChecks(inv, res, lookup)
	if f.ARC != nil {
		f.ARC.CacheFirst = resolver.HonoursCacheOnly(res)
	}
	f.Log = b.Log
	f.Metrics = b.Metrics
	if f.SRS = NewSRS(inv, secrets); f.SRS != nil {
		f.SRS.metrics, f.SRS.log = b.Metrics, b.Log
	}
	if b.Metrics != nil {
		for _, c := range f.Checks {
			if sc, ok := c.(*SpamCheck); ok {
				sc.ObserveEngine = b.Metrics.ObserveEngine
			}
		}
	}
	f.CheckTimeout = max(2*timeout, EngineTimeout+5*time.Second)
	return f
}

// Close closes the resolver of the last Filter made.
func (b *Builder) Close() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.res == nil {
		return nil
	}
	return b.res.Close()
}
