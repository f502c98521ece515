package state

import (
	"context"
	"fmt"
	"net/netip"
	"strings"
	"time"

	"github.com/mailnode/mailnode/inventory"
)

// Reason names why a Greylister or RateLimiter decided as it did; the mail
// log and metrics use it as is.
type Reason string

// Greylisting reasons.
const (
	ReasonDisabled        Reason = "disabled"         // greylisting off (nil Greylister)
	ReasonNullSender      Reason = "null-sender"      // <> is never greylisted (see package doc)
	ReasonPostmaster      Reason = "postmaster"       // mail to postmaster@ is never greylisted
	ReasonClientWhitelist Reason = "client-whitelist" // client in whitelist_clients
	ReasonSenderWhitelist Reason = "sender-whitelist" // sender domain in whitelist_senders
	ReasonClientAWL       Reason = "client-awl"       // client auto-whitelisted
	ReasonNew             Reason = "new"              // first attempt: greylisted
	ReasonEarly           Reason = "early-retry"      // retried before the delay: greylisted
	ReasonPassed          Reason = "triplet-passed"   // waited long enough, or passed before
)

// Triplet is what greylisting looks at, as Postfix's policy request gives it:
// client_address, sender, recipient.
type Triplet struct {
	Client    string
	Sender    string
	Recipient string
}

// GreyResult is one greylisting decision.
type GreyResult struct {
	// Action is "" when greylisting has no objection, else the whole reply
	// for Postfix's action= line: "450 4.7.1 Greylisted, please try again
	// in N seconds".
	Action  string
	Reason  Reason
	Outcome GreyOutcome // what the store said (zero when it was not asked)
}

// Greylister applies postgrey's rules. Create it with NewGreylister; a nil
// *Greylister (greylisting off) answers every Check with no objection.
type Greylister struct {
	store                 Store
	clock                 Clock
	delay, window, expire time.Duration
	awl                   int
	clients               []netip.Prefix
	senders               map[string]bool
}

// NewGreylister builds a Greylister from the inventory's policy.greylist.
// It returns nil (no error) when cfg is nil or not enabled.
func NewGreylister(cfg *inventory.Greylist, store Store, clock Clock) (*Greylister, error) {
	if cfg == nil || !cfg.Enabled {
		return nil, nil
	}
	if store == nil {
		return nil, fmt.Errorf("state: greylist: no store")
	}
	g := &Greylister{
		store:   store,
		clock:   clock,
		delay:   cfg.Delay.D(),
		window:  cfg.RetryWindow.D(),
		expire:  cfg.Expire.D(),
		awl:     cfg.AutoWhitelistAfter,
		senders: map[string]bool{},
	}
	if g.delay <= 0 || g.window <= g.delay || g.expire <= 0 {
		return nil, fmt.Errorf("state: greylist: need 0 < delay (%s) < retry_window (%s) and expire (%s) > 0", g.delay, g.window, g.expire)
	}
	for _, c := range cfg.WhitelistClients {
		p, err := inventory.ParsePrefix(c)
		if err != nil {
			return nil, fmt.Errorf("state: greylist: whitelist_clients: %w", err)
		}
		g.clients = append(g.clients, p)
	}
	for _, d := range cfg.WhitelistSenders {
		g.senders[normDomain(strings.TrimPrefix(d, "@"))] = true
	}
	return g, nil
}

// Check decides one RCPT of outside → local mail from a client that is
// neither authenticated nor trusted (the caller decides that). A non-nil
// error means the store failed: answer 4xx or nothing, never pass.
func (g *Greylister) Check(ctx context.Context, t Triplet) (GreyResult, error) {
	if g == nil {
		return GreyResult{Reason: ReasonDisabled}, nil
	}
	if r, ok := g.exempt(t); ok {
		return GreyResult{Reason: r}, nil
	}
	tk, ck := g.Keys(t)
	out, err := g.store.Greylist(ctx, g.op(tk, ck))
	if err != nil {
		return GreyResult{}, err
	}
	return g.result(out), nil
}

func (g *Greylister) op(tk, ck string) GreyOp {
	return GreyOp{
		Triplet: tk, Client: ck, Now: g.clock.now(),
		Delay: g.delay, RetryWindow: g.window, Expire: g.expire, AWLAfter: g.awl,
	}
}

func (g *Greylister) result(out GreyOutcome) GreyResult {
	res := GreyResult{Outcome: out}
	switch out.Verdict {
	case VerdictNew, VerdictEarly:
		res.Reason = ReasonNew
		if out.Verdict == VerdictEarly {
			res.Reason = ReasonEarly
		}
		secs := int64((out.Wait + time.Second - 1) / time.Second)
		if secs < 1 {
			secs = 1
		}
		res.Action = fmt.Sprintf("450 4.7.1 Greylisted, please try again in %d seconds", secs)
	case VerdictAWL:
		res.Reason = ReasonClientAWL
	default:
		res.Reason = ReasonPassed
	}
	return res
}

// exempt applies the rules that need no state.
func (g *Greylister) exempt(t Triplet) (Reason, bool) {
	if t.Sender == "" || t.Sender == "<>" {
		return ReasonNullSender, true
	}
	if local, _ := splitAt(t.Recipient); strings.EqualFold(local, "postmaster") {
		return ReasonPostmaster, true
	}
	if len(g.clients) > 0 {
		if a, err := netip.ParseAddr(t.Client); err == nil {
			a = a.Unmap()
			for _, p := range g.clients {
				if p.Contains(a) {
					return ReasonClientWhitelist, true
				}
			}
		}
	}
	if len(g.senders) > 0 {
		_, d := splitAt(t.Sender)
		for d = normDomain(d); d != ""; {
			if g.senders[d] {
				return ReasonSenderWhitelist, true
			}
			i := strings.IndexByte(d, '.')
			if i < 0 {
				break
			}
			d = d[i+1:]
		}
	}
	return "", false
}

// Keys returns the store keys of a triplet and of its client, normalized as
// postgrey does: the client's /24 (IPv4) or /64 (IPv6) network; the sender
// lower-cased without +extension, BATV tag or VERP numbers; the recipient
// lower-cased. The auto-whitelist counts per client address, as postgrey.
func (g *Greylister) Keys(t Triplet) (triplet, client string) { return GreylistKeys(t) }

// GreylistKeys is Greylister.Keys for callers without a Greylister
// (`mailnode state delete`).
func GreylistKeys(t Triplet) (triplet, client string) {
	netw, addr := clientNet(t.Client)
	return PrefixTriplet + netw + "/" + normSender(t.Sender) + "/" + strings.ToLower(t.Recipient),
		PrefixClient + addr
}

// Explain says, without changing anything, what Check would answer for t now
// and why, with the stored entries it would use.
func (g *Greylister) Explain(ctx context.Context, t Triplet) (string, error) {
	if g == nil {
		return "greylisting is off (policy.greylist absent or not enabled): no objection", nil
	}
	var b strings.Builder
	tk, ck := g.Keys(t)
	fmt.Fprintf(&b, "triplet key: %s\nclient key:  %s\n", tk, ck)
	if r, ok := g.exempt(t); ok {
		fmt.Fprintf(&b, "decision: no objection (%s); the store is not consulted\n", r)
		return b.String(), nil
	}
	now := g.clock.now()
	var vals [2]string
	for i, k := range []string{tk, ck} {
		e, ok, err := g.store.Get(ctx, k)
		if err != nil {
			return "", err
		}
		if ok {
			vals[i] = e.Value
			fmt.Fprintf(&b, "stored %s: %s (%s)\n", k, e.Value, Describe(e, now))
		} else {
			fmt.Fprintf(&b, "stored %s: none\n", k)
		}
	}
	_, _, out := greyStep(vals[0], vals[1], g.op(tk, ck))
	res := g.result(out)
	action := res.Action
	if action == "" {
		action = "no objection"
	}
	fmt.Fprintf(&b, "decision now: %s (%s); delay %s, retry window %s, auto-whitelist after %d, expire %s\n",
		action, res.Reason, g.delay, g.window, g.awl, g.expire)
	return b.String(), nil
}

// clientNet returns the greylisting network of a client address and the
// address itself, both canonical; an unparsable address is used as written.
func clientNet(s string) (netw, addr string) {
	a, err := netip.ParseAddr(s)
	if err != nil {
		s = strings.ToLower(s)
		return s, s
	}
	a = a.Unmap().WithZone("")
	bits := 64
	if a.Is4() {
		bits = 24
	}
	p, _ := a.Prefix(bits)
	return p.String(), a.String()
}

func splitAt(addr string) (local, domain string) {
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		return addr[:i], addr[i+1:]
	}
	return addr, ""
}

func normDomain(d string) string {
	d = strings.TrimSuffix(strings.ToLower(d), ".")
	for i := 0; i < len(d); i++ {
		if d[i] >= 0x80 {
			if n, err := inventory.NormalizeDomain(d); err == nil {
				return n
			}
			break
		}
	}
	return d
}

// normSender is postgrey's do_sender_substitutions: BATV (prvs=tag=user)
// reduced to the user, +extension stripped, each run of digits standing
// alone between word boundaries replaced by '#', so VERP and BATV senders
// keep one triplet per list rather than one per message.
func normSender(s string) string {
	s = strings.ToLower(s)
	user, domain := splitAt(s)
	if !strings.Contains(s, "@") {
		return s
	}
	// The extension goes first: what the BATV step below leaves has no '='
	// and no '+', so normalizing again changes nothing.
	if i := strings.IndexByte(user, '+'); i >= 0 {
		user = user[:i]
	}
	if strings.HasPrefix(user, "prvs=") {
		if a := strings.Split(user, "="); len(a) == 3 {
			tag1, tag2 := batvTag(a[1]), batvTag(a[2])
			switch {
			case tag1 && !tag2:
				user = a[2]
			case tag2 && !tag1:
				user = a[1]
			default:
				user = a[2]
			}
		}
	}
	return hashDigits(user) + "@" + domain
}

// batvTag is postgrey's /^[0-9a-z]{10}/.
func batvTag(s string) bool {
	if len(s) < 10 {
		return false
	}
	for i := 0; i < 10; i++ {
		c := s[i]
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'z') {
			return false
		}
	}
	return true
}

func isWord(c byte) bool {
	return '0' <= c && c <= '9' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || c == '_'
}

// hashDigits is Perl's s/\b\d+\b/#/g for ASCII.
func hashDigits(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); {
		c := s[i]
		if '0' <= c && c <= '9' && (i == 0 || !isWord(s[i-1])) {
			j := i
			for j < len(s) && '0' <= s[j] && s[j] <= '9' {
				j++
			}
			if j == len(s) || !isWord(s[j]) {
				b.WriteByte('#')
				i = j
				continue
			}
			b.WriteString(s[i:j])
			i = j
			continue
		}
		b.WriteByte(c)
		i++
	}
	return b.String()
}
