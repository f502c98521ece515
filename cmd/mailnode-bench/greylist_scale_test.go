package main

import (
	"testing"
	"time"

	"github.com/mailnode/mailnode/state"
)

// TestScaleTriplets: prefilled triplets' keys ascend with their number (a
// bulk load appends), a never-seen triplet's key sorts right after its
// prefilled neighbour's, and postgrey's key is its normalization.
func TestScaleTriplets(t *testing.T) {
	prev := ""
	for _, i := range []int{0, 1, 255, 256, 257, 149 * 256, 150 * 256, 22499 * 256, 22500 * 256, 9_999_999, 99_999_999} {
		k, _ := state.GreylistKeys(scaleTriplet(i, ""))
		if k <= prev {
			t.Fatalf("key of %d: %s, not after %s", i, k, prev)
		}
		n, _ := state.GreylistKeys(scaleTriplet(i, "n"))
		if n <= k {
			t.Fatalf("new triplet %d: %s sorts before %s", i, n, k)
		}
		prev = n
	}
	if got, want := postgreyKey(scaleTriplet(257, "")), "100.100.101.0/s00000257@sender63.test/u257@example.com"; got != want {
		t.Fatalf("postgreyKey = %s, want %s", got, want)
	}
}

// TestScalePick: the walk visits every index once.
func TestScalePick(t *testing.T) {
	for _, n := range []int{1, 7, 1000, 1_000_003 * 2} {
		seen := make([]bool, n)
		for k := 0; k < n; k++ {
			i := scalePick(k, n, 5)
			if seen[i] {
				t.Fatalf("n=%d: index %d picked twice", n, i)
			}
			seen[i] = true
		}
	}
}

// TestScaleTimes: live triplets were last seen within 30 days, expired
// ones beyond expiry, at about the share asked for.
func TestScaleTimes(t *testing.T) {
	now := time.Now()
	dead := 0
	for i := 0; i < 100000; i++ {
		first, last, passes, d := scaleTimes(i, now, 0.7)
		e := state.TripletEntry(scaleTriplet(i, ""), first, last, passes, scaleWindow, scaleExpire)
		if d != e.ExpiresAt.Before(now) || passes < 1 || !first.Before(last) {
			t.Fatalf("%d: dead %v, entry %+v", i, d, e)
		}
		if d {
			dead++
		}
	}
	if dead < 69000 || dead > 71000 {
		t.Fatalf("%d of 100000 expired, want about 70000", dead)
	}
}

func TestParseRates(t *testing.T) {
	got, err := parseRates("1000, 2000,30000")
	if err != nil || len(got) != 3 || got[0] != 1000 || got[2] != 30000 {
		t.Fatalf("parseRates: %v %v", got, err)
	}
	for _, bad := range []string{"", "2000,1000", "1000,1000", "0", "-5", "x", "1000,,2000", "Inf", "NaN"} {
		if r, err := parseRates(bad); err == nil {
			t.Errorf("parseRates(%q) = %v, want an error", bad, r)
		}
	}
}

func TestLadderSummary(t *testing.T) {
	if s := ladderSummary(0, "first above: 1000/s (new p99 3ms)"); s != "paced p99 < 2ms at none of the rates; first above: 1000/s (new p99 3ms)" {
		t.Errorf("none held: %q", s)
	}
	if s := ladderSummary(5000, ""); s != "paced p99 < 2ms up to 5000/s" {
		t.Errorf("all held: %q", s)
	}
}
