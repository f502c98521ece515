package milter

import (
	"context"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailnode/mailnode/arc"
	"github.com/mailnode/mailnode/dkim"
	"github.com/mailnode/mailnode/inventory"
)

// ARC sealing of forwarded mail (forwarding.arc, RFC 8617). A message
// milterd verifies (the inbound chain ran) and that has a recipient an
// alias or list forwards off the node (inventory.ForwardsOutside) gets an
// ARC set: the chain it arrived with is validated while the body streams
// (the key lookups start at the end of the header, like DKIM's), its
// status goes into Authentication-Results as arc=pass or arc=fail (nothing
// for a message without a chain), and at the end the next set is added on
// top with the first RSA key of the forwarding address's domain:
// ARC-Authentication-Results with the same results as the node's
// Authentication-Results, ARC-Message-Signature over the message as it
// will leave (the header changes of this pass applied), ARC-Seal.

// ARCSealing is forwarding.arc on: which recipients are forwarded, and
// how the arriving chain's keys are looked up.
type ARCSealing struct {
	Forwards func(rcpt string) bool // inventory.ForwardsOutside
	Lookup   LookupTXT
	// CacheFirst: Lookup honours resolver.CacheOnly, and the sealers' keys
	// are taken from its cache at once when there (the Builder sets it).
	CacheFirst bool
}

// newARCSealing returns the sealing of inv, nil when forwarding.arc is off.
func newARCSealing(inv *inventory.Inventory, lookup LookupTXT) *ARCSealing {
	if !inv.Forwarding.ARCOn() {
		return nil
	}
	return &ARCSealing{Forwards: inv.ForwardsOutside, Lookup: lookup}
}

// arcRun is one message's sealing under way.
type arcRun struct {
	v      *arc.Validator
	rcpt   string // the first forwarded recipient
	domain string // its domain: whose key seals
	prior  arc.Result
	ended  bool
}

// startARC begins the sealing of a verified message that is forwarded.
func (t *Transaction) startARC() {
	s := t.f.ARC
	if s == nil || s.Forwards == nil {
		return
	}
	for _, r := range t.env.RcptList {
		if s.Forwards(r) {
			_, d := inventory.SplitAddress(r)
			t.arc = &arcRun{rcpt: inventory.NormalizeAddress(r), domain: d,
				v: arc.NewValidator(lookupContext(s.CacheFirst), t.headers, dkim.LookupTXTFunc(s.Lookup), t.f.now())}
			return
		}
	}
}

// arcResults validates the arriving chain and returns its result for
// Authentication-Results: none for a message without ARC fields.
func (t *Transaction) arcResults(ctx context.Context) []string {
	if t.arc == nil {
		return nil
	}
	t.arc.prior = t.arc.v.Result(ctx)
	t.arc.ended = true
	switch t.arc.prior.CV {
	case arc.Pass:
		return []string{"arc=pass"}
	case arc.Fail:
		return []string{"arc=fail"}
	}
	return nil
}

// sealARC adds the ARC set to res for a message that is accepted. The
// results are d.Results, those of Authentication-Results.
func (t *Transaction) sealARC(ctx context.Context, res *Result) {
	a := t.arc
	if a == nil || res.Reject || res.TempFail {
		return
	}
	if !a.ended {
		t.arcResults(ctx)
	}
	log := t.f.log().With("queue_id", t.env.QueueID, "rcpt", a.rcpt, "domain", a.domain)
	var key *dkim.Key
	for i, k := range t.f.Keys[a.domain] {
		if k.Algorithm == "rsa" {
			key = &t.f.Keys[a.domain][i]
			break
		}
	}
	if key == nil {
		why := "the domain has no DKIM key"
		if len(t.f.Keys[a.domain]) > 0 {
			why = "the domain has no RSA DKIM selector signing (ARC seals with rsa-sha256 only)"
		}
		log.Warn("milterd: arc not sealed", "why", why)
		t.f.Metrics.arcSkipped("no_rsa_key")
		return
	}
	set, err := arc.Sealer{Key: *key, AuthServID: t.f.Hostname}.Seal(
		outgoingHeaders(t.headers, res.Changes), a.v.BodyHash(), a.prior, t.decision.Results, t.f.now())
	if err != nil {
		log.Info("milterd: arc not sealed", "why", err.Error(), "arc", string(a.prior.CV), "arc_reason", a.prior.Reason)
		switch err {
		case arc.ErrTerminated:
			t.f.Metrics.arcSkipped("chain_ended")
		case arc.ErrInstanceLimit, arc.ErrUnnumbered:
			t.f.Metrics.arcSkipped("malformed_chain")
		default:
			t.f.Metrics.arcSkipped("error")
		}
		return
	}
	// Each insert goes on top: the last field of the set first, so the
	// set reads ARC-Seal, ARC-Message-Signature, ARC-Authentication-Results
	// from the top.
	for i := len(set) - 1; i >= 0; i-- {
		res.Changes = append(res.Changes, HeaderChange{Index: 0, Name: set[i].Name, Value: set[i].Value})
	}
	cv := string(a.prior.CV)
	attrs := []any{"instance", a.prior.Chain.Highest + 1, "cv", cv, "selector", key.Selector}
	if a.prior.Reason != "" {
		attrs = append(attrs, "arc_reason", a.prior.Reason)
	}
	log.Info("milterd: arc sealed", attrs...)
	t.f.Metrics.arcSealed(cv)
}

// outgoingHeaders is the header as the MTA will send it once changes are
// made, in the order they are sent: a delete or replace acts on the
// Index-th field of its name as the header stands at that point, an insert
// goes to position Index.
func outgoingHeaders(in []dkim.Header, changes []HeaderChange) []dkim.Header {
	hs := append([]dkim.Header(nil), in...)
	nth := func(name string, n int) int {
		for i, h := range hs {
			if strings.EqualFold(strings.TrimRight(h.Name, " \t"), name) {
				if n--; n == 0 {
					return i
				}
			}
		}
		return -1
	}
	for _, c := range changes {
		switch {
		case c.Delete:
			if i := nth(c.Name, c.Index); i >= 0 {
				hs = append(hs[:i], hs[i+1:]...)
			}
		case c.Replace:
			if i := nth(c.Name, c.Index); i >= 0 {
				hs[i] = dkim.Header{Name: hs[i].Name, Value: c.Value}
			}
		default:
			i := min(max(c.Index, 0), len(hs))
			hs = append(hs[:i], append([]dkim.Header{{Name: c.Name, Value: c.Value}}, hs[i:]...)...)
		}
	}
	return hs
}

// arcMetrics count the sealing.
type arcMetrics struct {
	sealed  *prometheus.CounterVec
	skipped *prometheus.CounterVec
}

func newARCMetrics(reg *prometheus.Registry) *arcMetrics {
	m := &arcMetrics{
		sealed: zeroed(counterVec("mailnode_milter_arc_seals_total",
			"ARC sets added to forwarded mail (forwarding.arc), by the cv= they carry: none (the message came without a chain), pass or fail (the chain it came with).",
			"cv"), "none", "pass", "fail"),
		skipped: counterVec("mailnode_milter_arc_unsealed_total",
			"Forwarded mail milterd verified but did not seal, by why: no_rsa_key (the forwarding domain has no RSA selector signing), chain_ended (its chain says cv=fail), malformed_chain (50 sets, or ARC fields without instance numbers), error.",
			"why"),
	}
	reg.MustRegister(m.sealed, m.skipped)
	return m
}

func (m *Metrics) arcSealed(cv string) {
	if m != nil && m.arc != nil {
		m.arc.sealed.WithLabelValues(cv).Inc()
	}
}

func (m *Metrics) arcSkipped(why string) {
	if m != nil && m.arc != nil {
		m.arc.skipped.WithLabelValues(why).Inc()
	}
}
