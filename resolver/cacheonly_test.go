package resolver

import (
	"context"
	"slices"
	"testing"
)

// Under CacheOnly a Client answers what it has cached, positive and
// negative, and asks the server nothing: a question it has no answer for
// fails at once, temporarily, and marks the probe.
func TestCacheOnly(t *testing.T) {
	r, d := testResolver(t)
	ctx := context.Background()
	cached, probe := CacheOnly(ctx)
	if !IsCacheOnly(cached) || IsCacheOnly(ctx) {
		t.Fatal("IsCacheOnly does not tell the contexts apart")
	}
	if _, err := r.LookupTXT(cached, "pass.test"); !IsNotCached(err) || !IsTemporary(err) || !probe.Missed() {
		t.Fatalf("uncached question under CacheOnly: %v (missed %v), want a temporary not-cached error", err, probe.Missed())
	}
	if _, err := r.LookupIPAddr(cached, "helo.test"); !IsNotCached(err) {
		t.Fatalf("LookupIPAddr under CacheOnly: %v", err)
	}
	if n := d.Queries.Load(); n != 0 {
		t.Fatalf("CacheOnly asked the server %d questions", n)
	}

	// Ask for real, then from the cache only: the same answers, no question.
	if _, err := r.LookupTXT(ctx, "pass.test"); err != nil {
		t.Fatal(err)
	}
	if _, err := r.LookupTXT(ctx, "missing.test"); err == nil {
		t.Fatal("missing.test answered")
	}
	if _, err := r.LookupIPAddr(ctx, "helo.test"); err != nil {
		t.Fatal(err)
	}
	asked := d.Queries.Load()
	cached, probe = CacheOnly(ctx)
	txt, err := r.LookupTXT(cached, "PASS.test.")
	if err != nil || len(txt) != 1 || txt[0] != "v=spf1 ip4:127.0.0.0/24 ip6:2001:db8::/32 -all" {
		t.Errorf("cached TXT: %q %v", txt, err)
	}
	if _, err := r.LookupTXT(cached, "missing.test"); err == nil || IsTemporary(err) || IsNotCached(err) {
		t.Errorf("cached NXDOMAIN: %v, want the permanent not-found", err)
	}
	ips, err := r.LookupIPAddr(cached, "helo.test")
	if err != nil || len(ips) != 1 || ips[0].IP.String() != "127.0.0.5" {
		t.Errorf("cached LookupIPAddr: %v %v", ips, err)
	}
	if probe.Missed() {
		t.Error("probe missed though every answer was cached")
	}
	if n := d.Queries.Load(); n != asked {
		t.Errorf("CacheOnly asked the server %d more questions", n-asked)
	}
	// A temporary failure is never cached: asked again for real each time.
	if _, err := r.LookupTXT(ctx, "servfail.test"); !IsTemporary(err) {
		t.Fatal(err)
	}
	if _, err := r.LookupTXT(cached, "servfail.test"); !IsNotCached(err) || !probe.Missed() {
		t.Errorf("SERVFAIL under CacheOnly: %v, want not cached", err)
	}
}

func TestHonoursCacheOnly(t *testing.T) {
	if !HonoursCacheOnly(&Client{}) || !HonoursCacheOnly(&Mock{}) || HonoursCacheOnly(struct{}{}) || HonoursCacheOnly(nil) {
		t.Error("HonoursCacheOnly: Client and Mock do, nothing else")
	}
	ctx := context.Background()
	if TriesCacheFirst(ctx) || !TriesCacheFirst(CacheFirst(ctx)) {
		t.Error("TriesCacheFirst does not see CacheFirst's mark")
	}
	ran := 0
	if Defer(ctx, func() { ran++ }) {
		t.Error("Defer kept a function outside a CacheOnly context")
	}
	cached, probe := CacheOnly(ctx)
	if !Defer(cached, func() { ran++ }) || ran != 0 {
		t.Error("Defer did not keep the function for Commit")
	}
	probe.Commit()
	probe.Commit()
	if ran != 1 {
		t.Errorf("Commit ran the deferred function %d times, want once", ran)
	}
}

// Start runs a check at once from the cache where ctx is marked CacheFirst
// and the cache has every answer; otherwise (a miss, or no mark) in a
// goroutine, with ctx as given.
func TestStart(t *testing.T) {
	r, _ := testResolver(t)
	var log AskLog
	lookup := log.TXT(r.LookupTXT)
	check := func(ctx context.Context) { lookup(ctx, "pass.test") }
	for _, c := range []struct {
		name   string
		ctx    context.Context
		want   []bool // questions: asked from the cache only
		atOnce bool
	}{
		{"not marked", context.Background(), []bool{false}, false},
		{"marked, cached", CacheFirst(context.Background()), []bool{true}, true},
	} {
		done := make(chan struct{})
		Start(c.ctx, done, check)
		if c.atOnce {
			select {
			case <-done:
			default:
				t.Errorf("%s: not done at once", c.name)
			}
		}
		<-done
		if got := log.Take(); !slices.Equal(got, c.want) {
			t.Errorf("%s: questions %v, want %v", c.name, got, c.want)
		}
	}
	done := make(chan struct{})
	Start(CacheFirst(context.Background()), done, func(ctx context.Context) { lookup(ctx, "helo.test") })
	<-done
	if got := log.Take(); !slices.Equal(got, []bool{true, false}) {
		t.Errorf("marked, not cached: questions %v, want one from the cache, then one for real", got)
	}
}
