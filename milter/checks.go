package milter

import (
	"context"
	"time"

	"github.com/emersion/go-msgauth/authres"
	"github.com/mailnode/mailnode/dkim"
)

// The inbound check chain. Checks run in this order on every message that
// Decide sends to Verify (outside sender, local recipient); each adds its
// method results to the one Authentication-Results header.
//
// DefaultChecks is DKIM alone:
//
//  1. dkim — every DKIM-Signature, verified as the body streams.
//
// milterd runs InboundChecks (spamchecks.go): spf, dkim, dmarc, spam.
func DefaultChecks(lookup LookupTXT) []Check {
	return []Check{&DKIMCheck{LookupTXT: lookup, MaxSignatures: 8}}
}

// A Check is one step of the inbound chain.
type Check interface {
	Name() string
	// Start begins checking one message whose envelope and complete
	// header are known.
	Start(env Envelope, headers []dkim.Header) CheckRun
}

// CheckRun is one Check working on one message.
type CheckRun interface {
	// Body takes the next body chunk. It may block (back-pressure) but
	// must not keep the chunk.
	Body(chunk []byte) error
	// End returns the results once the whole body was given, waiting at
	// most until ctx is done (then the results are temperror).
	End(ctx context.Context) []authres.Result
	// Abort stops the run without results.
	Abort()
}

// LookupTXT resolves TXT records: the LookupTXT method of a
// resolver.Resolver (resolver.Client on node.resolver in milterd). Errors
// for which resolver.IsTemporary holds are temperror, others permanent.
type LookupTXT func(ctx context.Context, name string) ([]string, error)

// DKIMCheck verifies every DKIM signature (up to MaxSignatures) with
// dkim.Verifier: the key lookups start as soon as the header is complete,
// the body is hashed as it streams, so memory stays flat.
type DKIMCheck struct {
	LookupTXT     LookupTXT
	MaxSignatures int
	Now           func() time.Time // time.Now when nil (x= expiry)
	// CacheFirst: LookupTXT honours resolver.CacheOnly, and each key is
	// fetched from its cache first (dkim.NewVerifier).
	CacheFirst bool
}

// Name implements Check.
func (c *DKIMCheck) Name() string { return "dkim" }

// Start implements Check.
func (c *DKIMCheck) Start(_ Envelope, headers []dkim.Header) CheckRun {
	now := time.Now
	if c.Now != nil {
		now = c.Now
	}
	v := dkim.NewVerifier(lookupContext(c.CacheFirst), headers, dkim.LookupTXTFunc(c.LookupTXT), c.MaxSignatures, now())
	if v.Signatures() == 0 {
		return noSignatures{}
	}
	return dkimRun{v}
}

type noSignatures struct{}

func (noSignatures) Body([]byte) error { return nil }
func (noSignatures) End(context.Context) []authres.Result {
	return []authres.Result{&authres.DKIMResult{Value: authres.ResultNone}}
}
func (noSignatures) Abort() {}

type dkimRun struct{ v *dkim.Verifier }

func (r dkimRun) Body(chunk []byte) error {
	r.v.Write(chunk)
	return nil
}

func (r dkimRun) End(ctx context.Context) []authres.Result {
	var out []authres.Result
	for _, v := range r.v.Results(ctx) {
		out = append(out, &authres.DKIMResult{
			Value: authres.ResultValue(v.Status), Reason: v.Reason, Domain: v.Domain, Identifier: v.Identifier,
		})
	}
	return out
}

func (r dkimRun) Abort() { r.v.Abort() }
