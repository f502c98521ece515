package policy

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"

	"github.com/mailnode/mailnode/acl"
	"github.com/mailnode/mailnode/inventory"
	"github.com/mailnode/mailnode/state"
)

// Guard is policyd's second, stateful step: greylisting and rate limits
// (package state). Decide stays a pure function of the request; Apply
// runs after it, at RCPT only and only where the matrix accepted, so a 550
// of the matrix always wins and nothing here can turn a reject into a pass.
//
//   - outside sender → local recipient, neither authenticated nor trusted
//     (exactly the cells acl.SpamCheck marks): greylisting;
//   - authenticated (per SASL login) or trusted (per client address), any
//     accepted recipient: rate limits, the message counted once per Postfix
//     instance attribute.
//
// A nil Guard, or one with nil checks, objects to nothing.
type Guard struct {
	Greylist  *state.Greylister  // nil: greylisting off
	RateLimit *state.RateLimiter // nil: no limits
}

// StateError is what Apply returns when the store could not be read or
// written. The server then sends no reply (Postfix applies its
// default_action, 451 4.3.5): never DUNNO, never a 5xx.
type StateError struct {
	Check string // "greylist" or "ratelimit"
	Err   error
}

func (e *StateError) Error() string { return "policy: " + e.Check + " state: " + e.Err.Error() }
func (e *StateError) Unwrap() error { return e.Err }

// Apply runs the stateful checks on a decision of Decide and records their
// outcome in it (Decision.Greylist, Decision.RateLimit); an objection turns
// the decision into Defer with the 450 reply of package state. Decisions
// other than an accepted RCPT are left alone. An error leaves d as Decide
// made it and must not be answered.
func (g *Guard) Apply(ctx context.Context, req *Request, d *Decision) error {
	if g == nil || d.Action != Dunno || d.Reason == ReasonNotRcpt {
		return nil
	}
	switch {
	case acl.SpamCheck(d.Cell):
		if g.Greylist == nil {
			return nil
		}
		// bob+a@ and bob+b@ are one recipient, as Postfix delivers them.
		rcpt := req.Recipient
		if d.RecipientBase != "" {
			rcpt = d.RecipientBase
		}
		res, err := g.Greylist.Check(ctx, state.Triplet{Client: req.ClientAddress, Sender: req.Sender, Recipient: rcpt})
		if err != nil {
			return &StateError{Check: "greylist", Err: err}
		}
		d.Greylist = res.Reason
		if res.Action != "" {
			return d.defer450(res.Action)
		}
	case d.Cell.Auth != inventory.AuthNone:
		if g.RateLimit == nil {
			return nil
		}
		s := state.Sender{Client: req.ClientAddress}
		if d.Cell.Auth == inventory.AuthSASL {
			s.Login = strings.TrimSpace(req.SASLUsername)
		}
		res, err := g.RateLimit.Check(ctx, s, req.Instance)
		if err != nil {
			return &StateError{Check: "ratelimit", Err: err}
		}
		d.RateLimit = res.Reason
		if res.Action != "" {
			return d.defer450(res.Action)
		}
	}
	return nil
}

// defer450 turns an accepted decision into a temporary refusal. The
// matrix's Reason and Cell stay: they say what the matrix decided; the
// Greylist and RateLimit fields say why it is deferred.
func (d *Decision) defer450(reply string) error {
	if !strings.HasPrefix(reply, "450 ") {
		// Package state only ever answers 450; anything else is a bug that
		// must reach Postfix neither as a pass nor as a permanent reject.
		return fmt.Errorf("policy: internal error: state reply %q is not a 450", reply)
	}
	d.Action = Defer
	d.Reply = reply
	d.SpamCheck = false
	return nil
}

// NewGuard builds the checks an inventory asks for on store. It needs no
// store (and returns a nil Guard) when neither policy.greylist is enabled
// nor policy.ratelimit is set.
func NewGuard(inv *inventory.Inventory, store state.Store, clock state.Clock) (*Guard, error) {
	if !NeedsState(inv) {
		return nil, nil
	}
	if store == nil {
		return nil, errors.New("policy: greylisting or rate limits are configured but no state store is open")
	}
	gl, err := state.NewGreylister(inv.Policy.Greylist, store, clock)
	if err != nil {
		return nil, err
	}
	rl, err := state.NewRateLimiter(inv.Policy.Ratelimit, store, clock)
	if err != nil {
		return nil, err
	}
	return &Guard{Greylist: gl, RateLimit: rl}, nil
}

// NeedsState reports whether an inventory turns on greylisting or rate
// limits, the two checks that need policy.state.
func NeedsState(inv *inventory.Inventory) bool {
	g := inv.Policy.Greylist
	return g != nil && g.Enabled || inv.Policy.Ratelimit != nil
}

// sameRatelimit reports whether two inventories configure the same rate
// limits: a reload then keeps the running RateLimiter and with it the
// instances it has counted (a message must not count twice).
func sameRatelimit(a, b *inventory.Inventory) bool {
	return reflect.DeepEqual(a.Policy.Ratelimit, b.Policy.Ratelimit)
}
