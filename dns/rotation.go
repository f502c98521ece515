package dns

import (
	"context"
	"errors"
	"fmt"

	"github.com/mailnode/mailnode/dkim"
	"github.com/mailnode/mailnode/inventory"
)

// A Checker answers what a DKIM key rotation asks of DNS (dkim.RotationDNS):
// whether a retired key is still published, and whether a new selector is
// live.
var _ dkim.RotationDNS = (*Checker)(nil)

// Published returns the TXT records of name; none is ProblemNXDomain or
// ProblemNoData when the resolver says there are none, err the problem
// when it could not tell (SERVFAIL, REFUSED, timeout, unreachable).
func (c *Checker) Published(ctx context.Context, name string) (recs []string, none string, err error) {
	recs, problem := c.TXT(ctx, name)
	switch problem {
	case "":
		return recs, "", nil
	case ProblemNoData, ProblemNXDomain:
		return nil, problem, nil
	}
	return nil, "", errors.New(problem)
}

// Live reports whether selector s of d is published with the key on disk,
// as dns check's dkim:SELECTOR row says (ok or warn); otherwise found is
// what that row found, and why.
func (c *Checker) Live(ctx context.Context, inv *inventory.Inventory, d *inventory.Domain, s inventory.Selector) (live bool, found string) {
	r := c.DKIM(ctx, inv, d, s)
	if r.Status == StatusOK || r.Status == StatusWarn {
		return true, ""
	}
	why := r.Detail
	if why == "" {
		why = r.Problem
	}
	return false, fmt.Sprintf("%s (%s)", r.Found, why)
}
