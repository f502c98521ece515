package state

import (
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// Clock tells the time. Greylister, RateLimiter and the bbolt store's sweeper
// take one so tests can step through delays, windows and expiry without
// sleeping; nil means time.Now.
type Clock func() time.Time

func (c Clock) now() time.Time {
	if c == nil {
		return time.Now()
	}
	return c()
}

// The rules of this file run in Go for the bbolt store and, transcribed line
// by line, as Lua inside Redis (redis.go). Times are Unix milliseconds, stored
// as decimal text so both sides and `mailnode state list` read the same values:
//
//	triplet: "first,last,passes"
//	client:  "count,last"
//	rate:    "bucket:messages:recipients;..."   (bucket = Unix ms / 10 min)
//
// TestStoresAgree drives both with one random sequence and compares every answer.

// write is one value a step wants stored; ttl is how long it stays useful.
// A refresh only pushes back the expiry of an entry that already lets its
// triplet or client pass: losing it costs nothing until the entry's old
// expiry, weeks away, so the bbolt store drops refreshes instead of making
// a decision wait while the disk is behind (Bolt.admit).
//
// A brief value is one kept for hours, not weeks: a triplet waiting for its
// retry, a sender's rate counters. The bbolt store keeps those in a tree of
// their own, so that their commits rewrite pages of a small tree instead of
// pages scattered over the tree of passed triplets (the brief tree,
// bolt.go); the rules and Redis do not care where a value lives.
type write struct {
	val     string
	ttl     time.Duration
	refresh bool
	brief   bool
}

// expiryMargin keeps a value a little past its logical end so a reader never
// finds it gone a moment before the rules would have ignored it.
const expiryMargin = time.Minute

func ms(d time.Duration) int64 { return d.Milliseconds() }

// greyStep applies one attempt to the stored triplet and client values ("" =
// absent) and returns what to store (nil = leave as is) and the outcome.
func greyStep(triplet, client string, op GreyOp) (wt, wc *write, out GreyOutcome) {
	now := op.Now.UnixMilli()
	delay, window, expire, touch := ms(op.Delay), ms(op.RetryWindow), ms(op.Expire), ms(touchEvery)

	var cnt, clast int64
	if f, ok := parseInts(client, 2); ok && now-f[1] <= expire {
		cnt, clast = f[0], f[1]
	} else {
		clast = -1 // absent or expired: never counted
	}
	if op.AWLAfter > 0 && cnt >= int64(op.AWLAfter) {
		if now-clast >= touch {
			wc = &write{val: fmt.Sprintf("%d,%d", cnt, now), ttl: op.Expire + expiryMargin, refresh: true}
		}
		return nil, wc, GreyOutcome{Verdict: VerdictAWL, ClientCount: int(cnt)}
	}

	var first, last, passes int64
	known := false
	if f, ok := parseInts(triplet, 3); ok {
		first, last, passes = f[0], f[1], f[2]
		known = passes == 0 && now-first <= window || passes > 0 && now-last <= expire
	}
	switch {
	case !known:
		first, passes = now, 0
		wt = &write{val: tripletValue(now, now, 0), ttl: op.RetryWindow + expiryMargin, brief: true}
		out = GreyOutcome{Verdict: VerdictNew, Wait: time.Duration(delay) * time.Millisecond}
	case passes == 0 && now-first < delay:
		out = GreyOutcome{Verdict: VerdictEarly, Wait: time.Duration(first+delay-now) * time.Millisecond}
	default:
		// As postgrey: a client's count grows when one of its
		// triplets passes for the first time, at most once per touchEvery.
		if passes == 0 && (clast < 0 || now-clast >= touch) {
			cnt++
			wc = &write{val: fmt.Sprintf("%d,%d", cnt, now), ttl: op.Expire + expiryMargin}
		}
		if passes == 0 || now-last >= touch {
			wt = &write{val: tripletValue(first, now, passes+1), ttl: op.Expire + expiryMargin, refresh: passes > 0}
			passes++
		}
		out = GreyOutcome{Verdict: VerdictPass}
	}
	out.First = time.UnixMilli(first)
	out.Passes = int(passes)
	out.ClientCount = int(cnt)
	return wt, wc, out
}

// tripletValue is a greylisted triplet's stored value: when it was first
// and last seen (Unix ms) and how often it passed. greyStep writes it, and
// TripletEntry writes it for a bulk load.
func tripletValue(first, last, passes int64) string {
	return fmt.Sprintf("%d,%d,%d", first, last, passes)
}

type bucket struct{ idx, m, r int64 }

// rateStep applies one RateOp to the stored counters ("" = absent).
func rateStep(val string, op RateOp) (w *write, out RateOutcome) {
	now := op.Now.UnixMilli()
	bs := ms(rateBucket)
	cur := now / bs
	bs0 := parseBuckets(val)
	var kept []bucket
	var sm, sr int64
	for _, b := range bs0 {
		// Buckets of the last hour count; so does one bucket ahead, written
		// by a node whose clock runs a little fast. Anything further ahead
		// is nonsense and dropped, so a wild clock cannot block a sender.
		if b.idx > cur-RateBuckets && b.idx <= cur+1 {
			kept = append(kept, b)
			sm += b.m
			sr += b.r
		}
	}
	dm, dr := int64(op.Messages), int64(op.Recipients)
	lm, lr := int64(op.MaxMessages), int64(op.MaxRecipts)
	fits := func(m, r int64) bool { return (lm <= 0 || m+dm <= lm) && (lr <= 0 || r+dr <= lr) }
	if !fits(sm, sr) {
		out = RateOutcome{Messages: int(sm), Recipients: int(sr)}
		m, r := sm, sr
		for _, b := range kept { // oldest first
			m -= b.m
			r -= b.r
			if fits(m, r) {
				out.RetryAfter = time.Duration((b.idx+RateBuckets)*bs-now) * time.Millisecond
				break
			}
		}
		return nil, out
	}
	if dm > 0 || dr > 0 {
		found := false
		for i := range kept {
			if kept[i].idx == cur {
				kept[i].m += dm
				kept[i].r += dr
				found = true
			}
		}
		if !found {
			kept = append(kept, bucket{cur, dm, dr})
			sort.Slice(kept, func(i, j int) bool { return kept[i].idx < kept[j].idx })
		}
		last := kept[len(kept)-1].idx
		w = &write{val: formatBuckets(kept), ttl: time.Duration((last+RateBuckets)*bs-now)*time.Millisecond + expiryMargin, brief: true}
	}
	return w, RateOutcome{Allowed: true, Messages: int(sm + dm), Recipients: int(sr + dr)}
}

func parseInts(s string, n int) ([]int64, bool) {
	if s == "" {
		return nil, false
	}
	parts := strings.Split(s, ",")
	if len(parts) != n {
		return nil, false
	}
	f := make([]int64, n)
	for i, p := range parts {
		v, err := strconv.ParseInt(p, 10, 64)
		if err != nil {
			return nil, false
		}
		f[i] = v
	}
	return f, true
}

func parseBuckets(s string) []bucket {
	var out []bucket
	for _, part := range strings.Split(s, ";") {
		f := strings.Split(part, ":")
		if len(f) != 3 {
			continue
		}
		var b bucket
		var err error
		if b.idx, err = strconv.ParseInt(f[0], 10, 64); err != nil {
			continue
		}
		if b.m, err = strconv.ParseInt(f[1], 10, 64); err != nil {
			continue
		}
		if b.r, err = strconv.ParseInt(f[2], 10, 64); err != nil {
			continue
		}
		out = append(out, b)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].idx < out[j].idx })
	return out
}

func formatBuckets(bs []bucket) string {
	var sb strings.Builder
	for i, b := range bs {
		if i > 0 {
			sb.WriteByte(';')
		}
		fmt.Fprintf(&sb, "%d:%d:%d", b.idx, b.m, b.r)
	}
	return sb.String()
}

// Describe turns a stored entry into words for `mailnode state list`.
func Describe(e Entry, now time.Time) string {
	t := func(v int64) string { return time.UnixMilli(v).UTC().Format(time.RFC3339) }
	switch {
	case strings.HasPrefix(e.Key, PrefixTriplet):
		if f, ok := parseInts(e.Value, 3); ok {
			if f[2] == 0 {
				return fmt.Sprintf("greylisted since %s, not passed yet", t(f[0]))
			}
			return fmt.Sprintf("first seen %s, passed %d time(s), last %s", t(f[0]), f[2], t(f[1]))
		}
	case strings.HasPrefix(e.Key, PrefixClient):
		if f, ok := parseInts(e.Value, 2); ok {
			return fmt.Sprintf("%d pass(es) counted, last %s", f[0], t(f[1]))
		}
	case strings.HasPrefix(e.Key, PrefixRate):
		cur := now.UnixMilli() / ms(rateBucket)
		var m, r int64
		for _, b := range parseBuckets(e.Value) {
			if b.idx > cur-RateBuckets && b.idx <= cur+1 {
				m += b.m
				r += b.r
			}
		}
		return fmt.Sprintf("%d message(s), %d recipient(s) in the last hour", m, r)
	}
	return fmt.Sprintf("unrecognized value %q", e.Value)
}
