package resolver

import (
	"context"
	"errors"
	"net"
	"sync"
	"sync/atomic"
)

// Checks start their lookups in goroutines of their own, so that DNS
// round trips overlap the body's transfer. Most mail comes from senders
// seen minutes before, whose answers a Client has cached: there a
// goroutine only costs its start, the growth of its stack through the DNS
// code and a wake-up. CacheOnly lets a caller try the whole check at once
// first, from the cache alone, and go to the background only when the
// check needed a question the cache could not answer.

// Probe records whether a lookup under a CacheOnly context missed the cache.
type Probe struct {
	missed atomic.Bool
	mu     sync.Mutex
	done   []func() // what Commit runs
}

// Missed reports whether some question asked under the probe's context
// was not in the cache: the check's result is then not to be used.
func (p *Probe) Missed() bool { return p.missed.Load() }

// Defer keeps f for Commit, when ctx is a CacheOnly context, and reports
// whether it did; otherwise it does nothing and returns false. A wrapper
// that counts lookups defers its count: an attempt from the cache that
// missed is asked again for real, and only one of the two may count.
func Defer(ctx context.Context, f func()) bool {
	p := cacheOnly(ctx)
	if p == nil {
		return false
	}
	p.mu.Lock()
	p.done = append(p.done, f)
	p.mu.Unlock()
	return true
}

// Commit runs what was deferred under the probe's context: the caller
// keeps the attempt's result (the probe did not miss).
func (p *Probe) Commit() {
	p.mu.Lock()
	done := p.done
	p.done = nil
	p.mu.Unlock()
	for _, f := range done {
		f()
	}
}

type probeKey struct{}

// CacheOnly returns a context under which a Client answers from its cache
// only: a question it has no live answer for fails at once with a
// temporary error (IsNotCached) and marks the probe. Mock answers as
// always (its maps are its cache).
func CacheOnly(ctx context.Context) (context.Context, *Probe) {
	p := &Probe{}
	return context.WithValue(ctx, probeKey{}, p), p
}

// HonoursCacheOnly reports whether r answers CacheOnly contexts from its
// cache alone: Client and Mock do, and a wrapper that says so of what it
// wraps (HonoursCacheOnly() bool). A check tries the cache first only with
// such a resolver: any other could wait on the network where the check
// meant not to.
func HonoursCacheOnly(r any) bool {
	h, ok := r.(interface{ HonoursCacheOnly() bool })
	return ok && h.HonoursCacheOnly()
}

// HonoursCacheOnly implements the marker HonoursCacheOnly looks for.
func (r *Client) HonoursCacheOnly() bool { return true }

// HonoursCacheOnly implements the marker HonoursCacheOnly looks for.
func (r *Mock) HonoursCacheOnly() bool { return true }

// Start runs check, whose lookups go through ctx, and closes done when it
// has ended: in a goroutine of its own, so that its lookups overlap what
// the caller does next. Where ctx is marked CacheFirst it first runs check
// at once from the cache alone (CacheOnly); for a sender seen before that
// is all of it, with no goroutine started, grown and woken, and what the
// attempt deferred is committed. Only an attempt that missed the cache is
// run again in the goroutine, so check must set every result it gives each
// time it runs.
func Start(ctx context.Context, done chan struct{}, check func(context.Context)) {
	if TriesCacheFirst(ctx) {
		cached, probe := CacheOnly(ctx)
		if check(cached); !probe.Missed() {
			probe.Commit()
			close(done)
			return
		}
	}
	go func() {
		defer close(done)
		check(ctx)
	}()
}

type firstKey struct{}

// CacheFirst marks ctx as one whose lookups go to a resolver that honours
// CacheOnly, for code that gets only a lookup function (a DKIM verifier):
// it may then try its lookups from the cache first (TriesCacheFirst).
func CacheFirst(ctx context.Context) context.Context {
	return context.WithValue(ctx, firstKey{}, true)
}

// TriesCacheFirst reports whether ctx was marked by CacheFirst.
func TriesCacheFirst(ctx context.Context) bool {
	first, _ := ctx.Value(firstKey{}).(bool)
	return first
}

// cacheOnly returns the probe of a CacheOnly context, or nil.
func cacheOnly(ctx context.Context) *Probe {
	p, _ := ctx.Value(probeKey{}).(*Probe)
	return p
}

// IsCacheOnly reports whether ctx was made by CacheOnly: code that would
// start goroutines for several questions asks them one by one instead.
func IsCacheOnly(ctx context.Context) bool { return cacheOnly(ctx) != nil }

const notCachedMsg = "not in the cache (asked from the cache only)"

// notCached marks ctx's probe and returns the error of a question the cache
// could not answer.
func notCached(p *Probe, name string) error {
	p.missed.Store(true)
	return &net.DNSError{Err: notCachedMsg, Name: name, Server: "cache", IsTemporary: true}
}

// IsNotCached reports whether err is a question left unasked because its
// context was CacheOnly: no lookup happened, and nothing is to be counted.
func IsNotCached(err error) bool {
	var de *net.DNSError
	return errors.As(err, &de) && de.Err == notCachedMsg && de.Server == "cache"
}
