package state

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/mailnode/mailnode/inventory"
)

// Store keeps greylist triplets, auto-whitelisted clients and rate counters.
// Each method is one atomic step: two policyd processes sharing one Redis, or
// many goroutines sharing one bbolt file, never lose or double an update.
//
// The decision rules live in greyStep and rateStep (logic.go); the bbolt store
// runs them in Go under a per-key lock, the Redis store runs the same rules as
// Lua scripts inside Redis. Any error means "state unknown": the caller must
// answer with a temporary failure (or no reply), never a permanent reject and
// never a pass.
type Store interface {
	// Greylist records one delivery attempt of a triplet and says what it is.
	Greylist(ctx context.Context, op GreyOp) (GreyOutcome, error)
	// Rate adds op's deltas to a sender's counters when the sums stay within
	// op's limits, and reports the counts either way.
	Rate(ctx context.Context, op RateOp) (RateOutcome, error)
	// Get returns one stored entry; ok is false when there is none.
	Get(ctx context.Context, key string) (e Entry, ok bool, err error)
	// Scan calls fn for every entry whose key starts with prefix, in no
	// particular order. Entries written in the last moments may be missed.
	Scan(ctx context.Context, prefix string, fn func(Entry) error) error
	// Delete removes one entry and reports whether it existed.
	Delete(ctx context.Context, key string) (bool, error)
	// Close releases the store (the bbolt store writes what it still holds).
	Close() error
}

// Entry is one stored value, as `mailnode state list` shows it.
type Entry struct {
	Key       string
	Value     string    // the encoded value (see Describe)
	ExpiresAt time.Time // when the store drops it by itself (zero: unknown)
}

// GreyOp is one delivery attempt as the store sees it: two keys and the rules.
type GreyOp struct {
	Triplet string // key of the (network, sender, recipient) triplet
	Client  string // key of the client address's auto-whitelist counter
	Now     time.Time

	Delay       time.Duration // a triplet passes once this long after its first attempt...
	RetryWindow time.Duration // ...if it comes back within this long; otherwise it starts over
	Expire      time.Duration // passed triplets and client counters live this long after last use
	AWLAfter    int           // a client passing this often is whitelisted; <= 0: never
}

// Verdict is what the store found for one greylisting attempt.
type Verdict int

// Greylisting verdicts.
const (
	// VerdictNew: first attempt (or first after the retry window or expiry
	// ran out); the triplet was recorded and must wait.
	VerdictNew Verdict = iota + 1
	// VerdictEarly: known triplet, retried before the delay was over.
	VerdictEarly
	// VerdictPass: the triplet waited long enough now or passed before.
	VerdictPass
	// VerdictAWL: the client is auto-whitelisted.
	VerdictAWL
)

func (v Verdict) String() string {
	switch v {
	case VerdictNew:
		return "new"
	case VerdictEarly:
		return "early"
	case VerdictPass:
		return "pass"
	case VerdictAWL:
		return "client-awl"
	}
	return fmt.Sprintf("verdict(%d)", int(v))
}

// GreyOutcome is the store's answer to one GreyOp.
type GreyOutcome struct {
	Verdict     Verdict
	Wait        time.Duration // New, Early: how long until the triplet may pass
	First       time.Time     // first attempt of the triplet (zero for AWL)
	Passes      int           // passes recorded for the triplet (at most one per hour after the first)
	ClientCount int           // the client's auto-whitelist count
}

// RateOp is one step of a sender's rate counters.
type RateOp struct {
	Key                     string
	Now                     time.Time
	Messages, Recipients    int // deltas to add
	MaxMessages, MaxRecipts int // limits per RateWindow; <= 0: no limit
}

// RateOutcome is the store's answer to one RateOp.
type RateOutcome struct {
	Allowed              bool
	Messages, Recipients int           // counts in the window, including this op when Allowed
	RetryAfter           time.Duration // when not Allowed: until enough of the window has passed
}

// The rate window: limits are per hour, counted in buckets of ten minutes.
// A counted message or recipient stops counting when the bucket it fell into
// leaves the window, between 50 and 60 minutes after it was counted; so a
// sender gets at most the hourly limit in any 50 minutes, never more than 1.2
// times it per hour, and a burst at the end of one clock hour still counts
// against the start of the next (no fixed-window doubling).
const (
	RateWindow  = time.Hour
	RateBuckets = 6
	rateBucket  = RateWindow / RateBuckets
)

// touchEvery limits writes for known triplets and whitelisted clients: their
// last-seen time (which only decides expiry, weeks away) is refreshed at most
// this often, and a client's auto-whitelist count grows at most once per this
// interval, as postgrey does. Everything else a pass needs is read-only.
const touchEvery = time.Hour

// Key prefixes. Keys are readable (`mailnode state list` prints them):
//
//	grey/t/<network>/<sender>/<recipient>   a triplet: first,last,passes (Unix ms)
//	grey/c/<client address>                  a client: count,last (Unix ms)
//	rate/u/<sasl login>                      an authenticated sender's counters
//	rate/c/<client address>                  a trusted client's counters
const (
	PrefixGrey    = "grey/"
	PrefixTriplet = "grey/t/"
	PrefixClient  = "grey/c/"
	PrefixRate    = "rate/"
	PrefixUser    = "rate/u/"
	PrefixAddr    = "rate/c/"
)

// ErrBehind is returned by the bbolt store when its writes to disk lag more
// than MaxLag behind: the caller answers 4xx rather than acknowledge updates a
// crash could lose beyond the documented window.
var ErrBehind = errors.New("state: bbolt writes are behind (disk slow or failing)")

// ErrClosed is returned after Close.
var ErrClosed = errors.New("state: store is closed")

// Name names the store of policy.state for logs and errors: the bbolt
// file, or the Redis URL without its password.
func Name(s inventory.State) string {
	if s.Backend == "redis" && s.Sentinel != nil {
		return "redis master " + s.Sentinel.Master + " via sentinels " + strings.Join(s.Sentinel.Addresses, ",")
	}
	if s.Backend == "redis" {
		u, err := url.Parse(s.URL)
		if err != nil {
			return "redis (unparsable url)"
		}
		return "redis " + u.Redacted()
	}
	return "bbolt " + s.Path
}

// Open opens the store an inventory selects (policy.state).
func Open(ctx context.Context, s inventory.State, clock Clock) (Store, error) {
	switch s.Backend {
	case "", "bbolt":
		return OpenBolt(s.Path, BoltOptions{Clock: clock})
	case "redis":
		if sn := s.Sentinel; sn != nil {
			password, err := readPasswordFile(sn.PasswordFile)
			if err != nil {
				return nil, err
			}
			return OpenRedisSentinel(ctx, sn.Master, sn.Addresses, password, RedisOptions{})
		}
		return OpenRedis(ctx, s.URL, RedisOptions{})
	}
	return nil, fmt.Errorf("state: unknown backend %q (bbolt, redis)", s.Backend)
}

// readPasswordFile returns the first line of file ("" for no file).
func readPasswordFile(file string) (string, error) {
	if file == "" {
		return "", nil
	}
	b, err := os.ReadFile(file)
	if err != nil {
		return "", fmt.Errorf("state: policy.state.sentinel.password_file: %w", err)
	}
	line, _, _ := strings.Cut(string(b), "\n")
	line = strings.TrimRight(line, "\r")
	if line == "" {
		return "", fmt.Errorf("state: policy.state.sentinel.password_file %s: the first line is empty", file)
	}
	return line, nil
}
