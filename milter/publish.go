package milter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/mailnode/mailnode/dkim"
	"github.com/mailnode/mailnode/internal/daemon"
	"github.com/mailnode/mailnode/inventory"
	"github.com/mailnode/mailnode/resolver"
)

const (
	checkRound    = 20 * time.Second
	checkParallel = 16
)

// PublishInterval is how often a Publisher asks DNS again between reloads.
const PublishInterval = time.Minute

// Publisher holds back DKIM selectors whose TXT record node.resolver does
// not show with the key on disk (dkim.DecideSigning has the rule). It asks
// at start and on reload (Update) and every PublishInterval (Run); when the
// set of signing selectors changes between reloads it calls Apply with the
// keys to sign with. Over a DNS failure a selector keeps its last answer.
type Publisher struct {
	Log     *slog.Logger
	Timeout time.Duration // one DNS question; resolver.DefaultTimeout when 0
	// Apply installs the keys to sign with (milterd: SetFilter of a new
	// Filter); called by Check, never by Update.
	Apply func(inv *inventory.Inventory, keys map[string][]dkim.Key)
	// Lookup, when set, replaces a resolver.Client on node.resolver (tests).
	Lookup dkim.TXTLookup

	mu      sync.Mutex
	inv     *inventory.Inventory
	keys    map[string][]dkim.Key
	last    map[selectorID]dkim.Publication // the last definite answer of each selector
	states  []dkim.SelectorState
	signing map[string][]dkim.Key
	// shown is states for States, kept apart from mu: a check round holds
	// mu while it waits for DNS (up to checkRound), and the status page
	// must not wait with it. A check makes a new slice and never writes
	// one it has shown, so shown shares states' array.
	shown atomic.Pointer[[]dkim.SelectorState]
}

// Update takes the inventory and keys now loaded, asks DNS about every
// selector, logs the state of each one new, changed or held back (at
// start: all of them) and a line counting them all, and returns the keys
// to sign with.
func (p *Publisher) Update(inv *inventory.Inventory, keys map[string][]dkim.Key) map[string][]dkim.Key {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.inv, p.keys = inv, keys
	prev := p.states
	p.states = p.check()
	p.show()
	p.signing = signingKeys(p.keys, p.states)
	p.logStates(prev, true)
	return p.signing
}

// Stage is a reload's first step: it makes inv the inventory of the
// checks and has Apply install it with the keys that sign now, before
// Update asks DNS about inv's own keys. The running filter's inventory is
// then let go while the reload waits for DNS rather than held beside the
// new one. Until Update, a selector inv adds does not sign (publish before
// sign), and one it drops still signs, as before the reload.
func (p *Publisher) Stage(inv *inventory.Inventory) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.inv == nil {
		return
	}
	p.inv = inv
	if p.Apply != nil {
		p.Apply(inv, p.signing)
	}
}

// Check asks DNS again; when the signing selectors changed, Apply gets them.
func (p *Publisher) Check() {
	p.mu.Lock()
	if p.inv == nil {
		p.mu.Unlock()
		return
	}
	prev := p.states
	p.states = p.check()
	p.show()
	keys := signingKeys(p.keys, p.states)
	changed := !sameKeys(keys, p.signing)
	p.signing = keys
	p.logStates(prev, false)
	// Under the lock: a reload's Update cannot slip in between and be
	// overwritten with the inventory it replaced.
	if changed && p.Apply != nil {
		p.Apply(p.inv, keys)
	}
	p.mu.Unlock()
}

// States is the last answer for every selector with a key. It does not
// wait for a check in progress.
func (p *Publisher) States() []dkim.SelectorState {
	if s := p.shown.Load(); s != nil {
		return slices.Clone(*s)
	}
	return nil
}

// show publishes the states for States; p.mu is held.
func (p *Publisher) show() {
	s := p.states
	p.shown.Store(&s)
}

// Run checks every interval until ctx ends.
func (p *Publisher) Run(ctx context.Context, interval time.Duration) {
	if interval <= 0 {
		interval = PublishInterval
	}
	daemon.Every(ctx, interval, func() { p.Check() })
}

// check asks DNS about every loaded key; p.mu is held.
func (p *Publisher) check() []dkim.SelectorState {
	lookup := p.Lookup
	if lookup == nil {
		timeout := p.Timeout
		if timeout <= 0 {
			timeout = resolver.DefaultTimeout
		}
		// A Client of its own, closed after the round: the answer is what
		// node.resolver shows now, not what milterd's cache remembers.
		res := resolver.NewClient(p.inv.Node.Resolver, timeout)
		defer res.Close()
		lookup = LookupPublished(res)
	}
	if p.last == nil {
		p.last = map[selectorID]dkim.Publication{}
	}
	n := 0
	for _, ks := range p.keys {
		n += len(ks)
	}
	states := make([]dkim.SelectorState, 0, n)
	for _, d := range p.inv.LocalDomains() {
		for _, k := range p.keys[d.Name] {
			// The key's own names, not the inventory's: last keeps them
			// across reloads and must not hold an inventory it replaced.
			states = append(states, dkim.SelectorState{Domain: k.Domain, Selector: k.Selector, Algorithm: k.Algorithm, Key: k.Signer})
		}
	}
	// One round takes at most checkRound, also when node.resolver drops
	// every question: what is not answered by then is Unknown. Questions go
	// out checkParallel at a time (a node may have thousands of domains).
	ctx, cancel := context.WithTimeout(context.Background(), checkRound)
	defer cancel()
	var wg sync.WaitGroup
	sem := make(chan struct{}, checkParallel)
	for i := range states {
		wg.Add(1)
		sem <- struct{}{}
		go func(s *dkim.SelectorState) {
			defer func() { <-sem; wg.Done() }()
			s.DNS, s.Detail = dkim.CheckPublication(ctx, lookup, s.Domain, s.Selector, s.Key)
		}(&states[i])
	}
	wg.Wait()
	for i := range states {
		s := &states[i]
		id := selectorID{s.Domain, s.Selector}
		if s.DNS == dkim.Unknown {
			if last, ok := p.last[id]; ok {
				s.Detail = fmt.Sprintf("%s; keeping the last answer, %s", s.Detail, last)
				s.DNS = last
			}
		} else {
			p.last[id] = s.DNS
		}
	}
	if len(p.last) > len(states) { // selectors a reload dropped
		keep := make(map[selectorID]bool, len(states))
		for _, s := range states {
			keep[selectorID{s.Domain, s.Selector}] = true
		}
		maps.DeleteFunc(p.last, func(id selectorID, _ dkim.Publication) bool { return !keep[id] })
	}
	dkim.DecideSigning(states)
	return states
}

// logStates logs each selector that is new since prev or whose state
// changed; with summary (start, reload) also each one held back, and a
// line counting them all. A reload at 9,000 domains whose selectors stay
// as they were thus writes one line, not 9,000 (the status page and
// mailnode dkim status list every selector).
func (p *Publisher) logStates(prev []dkim.SelectorState, summary bool) {
	log := p.Log
	if log == nil {
		log = slog.Default()
	}
	// prev's index of each selector: mostly the same as now (check lists
	// them in inventory order), so the map is made only when they differ.
	var was map[selectorID]int
	find := func(i int, s *dkim.SelectorState) (int, bool) {
		if was == nil && i < len(prev) && prev[i].Domain == s.Domain && prev[i].Selector == s.Selector {
			return i, true
		}
		if was == nil {
			was = make(map[selectorID]int, len(prev))
			for i, s := range prev {
				was[selectorID{s.Domain, s.Selector}] = i
			}
		}
		j, ok := was[selectorID{s.Domain, s.Selector}]
		return j, ok
	}
	var signing, held, changed int
	for i := range p.states {
		s := &p.states[i]
		if s.Signing {
			signing++
		} else {
			held++
		}
		j, ok := find(i, s)
		same := ok && prev[j].DNS == s.DNS && prev[j].Signing == s.Signing
		if !same {
			changed++
		}
		if same && !(summary && !s.Signing) {
			continue
		}
		args := []any{"domain", s.Domain, "selector", s.Selector, "dns", string(s.DNS), "signing", yesNo(s.Signing), "why", s.Why()}
		if s.Signing {
			log.Info("milterd: dkim selector", args...)
		} else {
			log.Warn("milterd: dkim selector held back until DNS publishes its key", args...)
		}
	}
	if summary {
		log.Info("milterd: dkim selectors checked", "selectors", len(p.states), "signing", signing, "held_back", held, "new_or_changed", changed)
	}
}

// LookupPublished adapts a resolver to dkim.TXTLookup: NXDOMAIN and NODATA
// (and any other permanent answer) are "none", a temporary failure an error.
func LookupPublished(res resolver.Resolver) dkim.TXTLookup {
	return func(ctx context.Context, name string) ([]string, string, error) {
		recs, err := res.LookupTXT(ctx, name)
		var de *net.DNSError
		switch {
		case err == nil && len(recs) == 0:
			return nil, "NODATA", nil
		case err == nil:
			return recs, "", nil
		case errors.As(err, &de) && de.IsNotFound:
			return nil, "NXDOMAIN or NODATA", nil
		case !resolver.IsTemporary(err):
			return nil, err.Error(), nil
		}
		return nil, "", err
	}
}

// selectorID names a selector of a domain (a map key made of no new
// string).
type selectorID struct{ domain, selector string }

// signingKeys is keys with only the selectors states lets sign: keys
// itself when every selector signs (a node whose keys are all published),
// and otherwise a domain whose every key signs shares keys' slice: a
// reload at 9,000 domains would copy each of them. keys is not written
// after LoadKeys.
func signingKeys(keys map[string][]dkim.Key, states []dkim.SelectorState) map[string][]dkim.Key {
	sign := make(map[selectorID]bool, len(states))
	for _, s := range states {
		if s.Signing {
			sign[selectorID{s.Domain, s.Selector}] = true
		}
	}
	all := true
	for d, ks := range keys {
		for _, k := range ks {
			all = all && sign[selectorID{d, k.Selector}]
		}
	}
	if all {
		return keys
	}
	out := make(map[string][]dkim.Key, len(keys))
	for d, ks := range keys {
		n := 0
		for _, k := range ks {
			if sign[selectorID{d, k.Selector}] {
				n++
			}
		}
		switch {
		case n == 0:
		case n == len(ks):
			out[d] = ks[:len(ks):len(ks)]
		default:
			l := make([]dkim.Key, 0, n)
			for _, k := range ks {
				if sign[selectorID{d, k.Selector}] {
					l = append(l, k)
				}
			}
			out[d] = l
		}
	}
	return out
}

func sameKeys(a, b map[string][]dkim.Key) bool {
	if len(a) != len(b) {
		return false
	}
	for d, ka := range a {
		kb := b[d]
		if len(ka) != len(kb) {
			return false
		}
		for i := range ka {
			if ka[i].Selector != kb[i].Selector {
				return false
			}
		}
	}
	return true
}

func yesNo(b bool) string {
	if b {
		return "yes"
	}
	return "no"
}
