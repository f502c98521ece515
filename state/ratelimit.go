package state

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/mailnode/mailnode/inventory"
)

// Rate limiting reasons.
const (
	ReasonNoLimit        Reason = "no-limit"        // no limit applies (nil RateLimiter, or zero limits)
	ReasonWithinLimit    Reason = "within-limit"    // counted
	ReasonOverMessages   Reason = "over-messages"   // messages_per_hour reached
	ReasonOverRecipients Reason = "over-recipients" // recipients_per_hour reached
)

// Sender is who a rate limit applies to: the SASL login when there is one
// (Postfix's sasl_username), otherwise the trusted client's address.
type Sender struct {
	Login  string
	Client string
}

// RateResult is one rate limiting decision.
type RateResult struct {
	// Action is "" when within the limits, else the whole reply for
	// Postfix's action= line: "450 4.7.1 Rate limit exceeded for <who>,
	// try again later".
	Action  string
	Reason  Reason
	Who     string           // the login or client address counted
	Limits  inventory.Limits // the limits in effect for Who (0: none)
	Outcome RateOutcome      // counts in the window (zero when the store was not asked)
}

// RateLimiter counts messages and recipients per authorized sender over a
// sliding hour (RateWindow). A nil *RateLimiter (no policy.ratelimit) lets
// everything through.
type RateLimiter struct {
	store Store
	clock Clock
	def   inventory.Limits
	users map[string]inventory.Limits
	nets  []netLimits // most specific first

	mu        sync.Mutex
	counted   map[string]int64 // instance → Unix ms when its message was counted
	lastPrune int64
}

type netLimits struct {
	p netip.Prefix
	l inventory.Limits
}

// NewRateLimiter builds a RateLimiter from the inventory's policy.ratelimit;
// it returns nil (no error) when cfg is nil.
func NewRateLimiter(cfg *inventory.Ratelimit, store Store, clock Clock) (*RateLimiter, error) {
	if cfg == nil {
		return nil, nil
	}
	if store == nil {
		return nil, fmt.Errorf("state: ratelimit: no store")
	}
	r := &RateLimiter{
		store:   store,
		clock:   clock,
		def:     inventory.Limits{MessagesPerHour: cfg.MessagesPerHour, RecipientsPerHour: cfg.RecipientsPerHour},
		users:   map[string]inventory.Limits{},
		counted: map[string]int64{},
	}
	for k, l := range cfg.Overrides {
		if strings.Contains(k, "@") {
			r.users[strings.ToLower(k)] = l
			continue
		}
		p, err := inventory.ParsePrefix(k)
		if err != nil {
			return nil, fmt.Errorf("state: ratelimit: overrides: %w", err)
		}
		r.nets = append(r.nets, netLimits{p, l})
	}
	sort.SliceStable(r.nets, func(i, j int) bool {
		if r.nets[i].p.Bits() != r.nets[j].p.Bits() {
			return r.nets[i].p.Bits() > r.nets[j].p.Bits()
		}
		return r.nets[i].p.String() < r.nets[j].p.String()
	})
	return r, nil
}

// Key returns the store key and the display name of a sender's counters.
func (r *RateLimiter) Key(s Sender) (key, who string) { return RateKey(s) }

// RateKey is RateLimiter.Key for callers without a RateLimiter.
func RateKey(s Sender) (key, who string) {
	if s.Login != "" {
		who = strings.ToLower(s.Login)
		return PrefixUser + who, who
	}
	_, who = clientNet(s.Client)
	return PrefixAddr + who, who
}

// LimitsFor returns the limits in effect for a sender: the defaults, with
// the non-zero fields of the matching override (the login's, or the most
// specific network containing the client address) in their place.
func (r *RateLimiter) LimitsFor(s Sender) inventory.Limits {
	l := r.def
	var o inventory.Limits
	found := false
	if s.Login != "" {
		o, found = r.users[strings.ToLower(s.Login)]
	} else if a, err := netip.ParseAddr(s.Client); err == nil {
		a = a.Unmap()
		for _, n := range r.nets {
			if n.p.Contains(a) {
				o, found = n.l, true
				break
			}
		}
	}
	if found {
		if o.MessagesPerHour != 0 {
			l.MessagesPerHour = o.MessagesPerHour
		}
		if o.RecipientsPerHour != 0 {
			l.RecipientsPerHour = o.RecipientsPerHour
		}
	}
	return l
}

// Check counts one RCPT of an authorized sender: one recipient always, and
// one message the first time it sees instance (Postfix's "instance"
// attribute, the same for every RCPT of one message). Either count over its
// limit gives a 450 and counts nothing. A non-nil error means the store
// failed: answer 4xx or nothing, never pass.
func (r *RateLimiter) Check(ctx context.Context, s Sender, instance string) (RateResult, error) {
	if r == nil {
		return RateResult{Reason: ReasonNoLimit}, nil
	}
	key, who := r.Key(s)
	lim := r.LimitsFor(s)
	res := RateResult{Who: who, Limits: lim}
	if lim.MessagesPerHour <= 0 && lim.RecipientsPerHour <= 0 {
		res.Reason = ReasonNoLimit
		return res, nil
	}
	now := r.clock.now()
	ikey := who + "\x00" + instance
	newMsg := instance == "" || !r.seen(ikey)
	op := RateOp{Key: key, Now: now, Recipients: 1,
		MaxMessages: lim.MessagesPerHour, MaxRecipts: lim.RecipientsPerHour}
	if newMsg {
		op.Messages = 1
	}
	out, err := r.store.Rate(ctx, op)
	if err != nil {
		return RateResult{}, err
	}
	res.Outcome = out
	if !out.Allowed {
		res.Reason = ReasonOverRecipients
		if lim.MessagesPerHour > 0 && out.Messages+op.Messages > lim.MessagesPerHour {
			res.Reason = ReasonOverMessages
		}
		res.Action = fmt.Sprintf("450 4.7.1 Rate limit exceeded for <%s>, try again later", who)
		return res, nil
	}
	if newMsg && instance != "" {
		r.remember(ikey, now)
	}
	res.Reason = ReasonWithinLimit
	return res, nil
}

func (r *RateLimiter) seen(ikey string) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	_, ok := r.counted[ikey]
	return ok
}

// remember keeps counted instances for one RateWindow; a message whose
// RCPTs span more than that is counted again, which errs on the safe side.
func (r *RateLimiter) remember(ikey string, now time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := now.UnixMilli()
	r.counted[ikey] = n
	if n-r.lastPrune >= ms(time.Minute) {
		r.lastPrune = n
		for k, t := range r.counted {
			if n-t > ms(RateWindow) {
				delete(r.counted, k)
			}
		}
	}
}

// Explain says, without counting anything, which limits apply to s and how
// much of them the last hour used.
func (r *RateLimiter) Explain(ctx context.Context, s Sender) (string, error) {
	if r == nil {
		return "no rate limits (policy.ratelimit absent)", nil
	}
	key, who := r.Key(s)
	lim := r.LimitsFor(s)
	var b strings.Builder
	fmt.Fprintf(&b, "sender: %s\nkey: %s\nlimits: %s messages/hour, %s recipients/hour\n",
		who, key, limitText(lim.MessagesPerHour), limitText(lim.RecipientsPerHour))
	e, ok, err := r.store.Get(ctx, key)
	if err != nil {
		return "", err
	}
	if !ok {
		b.WriteString("counted: nothing in the last hour\n")
		return b.String(), nil
	}
	fmt.Fprintf(&b, "stored: %s\ncounted: %s\n", e.Value, Describe(e, r.clock.now()))
	// A dry run of one more message says whether it would pass, and if not, when.
	_, out := rateStep(e.Value, RateOp{Key: key, Now: r.clock.now(), Messages: 1, Recipients: 1,
		MaxMessages: lim.MessagesPerHour, MaxRecipts: lim.RecipientsPerHour})
	if out.Allowed {
		b.WriteString("decision now: a new message would be accepted\n")
	} else {
		fmt.Fprintf(&b, "decision now: 450 (over the limit) for about %s more\n", out.RetryAfter.Round(time.Second))
	}
	return b.String(), nil
}

func limitText(n int) string {
	if n <= 0 {
		return "no limit"
	}
	return fmt.Sprint(n)
}
