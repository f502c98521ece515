package test

import (
	"fmt"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/mailnode/mailnode/state/statetest"
	"github.com/mailnode/mailnode/test/harness"
)

// A tier: two real Postfix nodes, A on 127.0.0.1 and B on tierAddrB, from
// one inventory, each with its own policyd and milterd, sharing their state
// through a Redis master and replica behind three sentinels (quorum two).
// The nodes must behave as one MX: a triplet greylisted on one passes on
// the other, a sender's rate limit counts mail through both, either signs
// with the keys published for the tier. The Redis master is SIGKILLed
// (tierFailovers times): the sentinels promote the replica within seconds,
// and meanwhile Postfix answers 4xx, never 2xx unchecked nor 5xx; then all
// of Redis and Sentinel go down and come back.

const (
	tierAddrB     = "192.0.2.11"
	tierDelay     = 2 * time.Second
	tierLimit     = 3 // messages per hour of an authenticated sender
	tierFailovers = 3
)

func TestTierSentinel(t *testing.T) {
	start := time.Now()
	g := statetest.ReplicatedGroup(t, 1, 3)
	sentinels := make([]any, 0, 3)
	for _, a := range g.SentinelAddrs() {
		sentinels = append(sentinels, a)
	}
	nodes := harness.StartTier(t, []string{"127.0.0.1", tierAddrB}, harness.Options{Policy: true, Milter: true, DKIMKeys: true,
		Edit: func(doc map[string]any) {
			harness.Set(doc, "policy.greylist", map[string]any{
				"enabled": true, "delay": tierDelay.String(), "retry_window": "1h",
				// Never whitelist the test's one client: every new triplet
				// must go to the state.
				"auto_whitelist_after": 0, "expire": "840h",
			})
			harness.Set(doc, "policy.ratelimit", map[string]any{"messages_per_hour": tierLimit})
			harness.Set(doc, "policy.state", map[string]any{"backend": "redis",
				"sentinel": map[string]any{"master": statetest.SentinelMaster, "addresses": sentinels}})
		}})
	a, b := nodes[0], nodes[1]
	if a.Hostname == b.Hostname || !strings.HasPrefix(b.SMTP, tierAddrB+":") {
		t.Fatalf("nodes not distinct: %s at %s, %s at %s", a.Hostname, a.SMTP, b.Hostname, b.SMTP)
	}
	// Each node is its entry of tier.nodes, loaded with --node.
	for i, n := range nodes {
		want := fmt.Sprintf("mx%d.example.com", i+1)
		if !n.Inv.InTier() || len(n.Inv.Tier.Nodes) != 2 || n.Hostname != want || n.Inv.Node.Addresses[0] != n.Inv.Tier.Nodes[i].Addresses[0] {
			t.Fatalf("node %d: hostname %s, addresses %v, tier.nodes %+v; want %s, its entry of a two-node tier", i, n.Hostname, n.Inv.Node.Addresses, n.Inv.Tier.Nodes, want)
		}
	}
	rcpt := func(n *harness.Node, from, to string) harness.Reply {
		t.Helper()
		tr, err := harness.Send(n.SMTP, harness.Envelope{LocalAddr: harness.OutsideClient, Helo: "mx.sender.test", From: from, To: []string{to}})
		if err != nil || len(tr.Rcpt) != 1 {
			t.Fatalf("RCPT %s -> %s at %s: %v %+v", from, to, n.Hostname, err, tr)
		}
		return tr.Rcpt[0]
	}
	isGreylisted := func(r harness.Reply) bool { return r.Code == 450 && strings.Contains(r.Text(), "Greylisted") }

	t.Run("greylisted on A, accepted on B", func(t *testing.T) {
		const from = "news@sender.test"
		msg := harness.NewMessage(from, "alice@example.com", "tier greylisting", "retried at the other node")
		env := harness.Envelope{LocalAddr: harness.OutsideClient, From: from, To: []string{"alice@example.com"}, Data: msg}
		tr := send(t, a.SMTP, env)
		recorded := time.Now()
		if !isGreylisted(tr.Rcpt[0]) {
			t.Fatalf("first attempt at A: %q", tr.Rcpt[0].Text())
		}
		if tr = send(t, b.SMTP, env); !isGreylisted(tr.Rcpt[0]) {
			t.Fatalf("early retry at B: %q (want the delay A started)", tr.Rcpt[0].Text())
		}
		time.Sleep(time.Until(recorded.Add(tierDelay + 100*time.Millisecond)))
		tr = send(t, b.SMTP, env)
		if tr.Rcpt[0].Code != 250 {
			t.Fatalf("retry at B after the delay: %q", tr.Rcpt[0].Text())
		}
		wantFinal(t, tr)
		got := b.WaitMaildir(t, "alice@example.com", 1)
		checkDelivered(t, got[0].Data, from, "alice@example.com", msg)
	})

	t.Run("one rate limit through both nodes", func(t *testing.T) {
		want := "450 4.7.1 <bob@example.com>: Recipient address rejected: Rate limit exceeded for <alice@example.com>, try again later"
		for i := 1; i <= tierLimit+1; i++ {
			n := nodes[(i-1)%2]
			tr := send(t, n.Submission, harness.Envelope{LocalAddr: harness.OutsideClient, StartTLS: true,
				AuthUser: "alice@example.com", AuthPass: "alicepass", From: "alice@example.com", To: []string{"bob@example.com"},
				Data: harness.NewMessage("alice@example.com", "bob@example.com", fmt.Sprintf("message %d", i), "counted once for the tier")})
			if i <= tierLimit {
				if tr.Rcpt[0].Code != 250 {
					t.Fatalf("message %d through %s: %q", i, n.Hostname, tr.Rcpt[0].Text())
				}
				wantFinal(t, tr)
				continue
			}
			if got := tr.Rcpt[0].Text(); got != want || tr.DataCmd.Code != 0 {
				t.Fatalf("message %d through %s: %q, want %q", i, n.Hostname, got, want)
			}
		}
	})

	t.Run("signed on B, verified with the tier's keys", func(t *testing.T) {
		keys := zoneKeys(t, a) // the zone A's inventory renders: what is published
		msg := harness.NewMessage("bob@example.com", "dave@partner.org", "signed at B", "verifies with the published keys")
		wantFinal(t, send(t, b.Submission, harness.Envelope{LocalAddr: harness.OutsideClient, StartTLS: true,
			AuthUser: "bob@example.com", AuthPass: "bobpass", From: "bob@example.com", To: []string{"dave@partner.org"}, Data: msg}))
		got := b.WaitSink(t, 1)
		data := got[0].Data
		if !strings.Contains(string(data), "s=mx2026r") || !strings.Contains(string(data), "s=mx2026e") {
			t.Fatalf("not signed with both selectors:\n%s", data)
		}
		if out, ok := pyVerify(t, keys, data); !ok {
			t.Fatalf("python3-dkim does not verify B's signatures with the published keys:\n%s", out)
		}
	})

	// Failover: each round greylists a triplet (first attempt) and lets
	// another pass before the kill, waits until the replica has both,
	// SIGKILLs the master, then polls both nodes with new triplets (never
	// 2xx, never 5xx) and the greylisted triplet's retry until the retry
	// is accepted; the passed triplet must pass right after.
	var failovers []time.Duration
	for round := 1; round <= tierFailovers; round++ {
		ok := t.Run(fmt.Sprintf("failover %d", round), func(t *testing.T) {
			passed := fmt.Sprintf("passed%d@sender.test", round)
			waiting := fmt.Sprintf("waiting%d@sender.test", round)
			if r := rcpt(a, passed, "alice@example.com"); !isGreylisted(r) {
				t.Fatalf("before the kill, first attempt: %v", r)
			}
			time.Sleep(tierDelay + 100*time.Millisecond)
			if r := rcpt(b, passed, "alice@example.com"); r.Code != 250 {
				t.Fatalf("before the kill, retry: %v", r)
			}
			if r := rcpt(b, waiting, "alice@example.com"); !isGreylisted(r) {
				t.Fatalf("before the kill, the triplet to retry: %v", r)
			}
			greylistedAt := time.Now()
			if err := g.WaitReplicated(5 * time.Second); err != nil {
				t.Fatalf("replication before the kill: %v", err)
			}
			master, err := g.Master()
			if err != nil {
				t.Fatal(err)
			}
			// New triplets every 100 ms at both nodes, concurrently, from
			// the kill until the retry below is accepted.
			stop, probed := make(chan struct{}), make(chan []string)
			codes := map[int]int{}
			go func() {
				var bad []string
				for i := 0; ; i++ {
					select {
					case <-stop:
						probed <- bad
						return
					case <-time.After(100 * time.Millisecond):
					}
					n := nodes[i%2]
					tr, err := harness.Send(n.SMTP, harness.Envelope{LocalAddr: harness.OutsideClient, Helo: "mx.sender.test",
						From: fmt.Sprintf("outage%d-%d@sender.test", round, i), To: []string{"bob@example.com"}})
					switch {
					case err != nil || len(tr.Rcpt) != 1:
						bad = append(bad, fmt.Sprintf("%s: %v %+v", n.Hostname, err, tr))
					case tr.Rcpt[0].Code/100 != 4:
						bad = append(bad, fmt.Sprintf("%s: %s", n.Hostname, tr.Rcpt[0].Text()))
					default:
						codes[tr.Rcpt[0].Code]++
					}
				}
			}()
			master.Kill()
			killed := time.Now()
			retries := map[int]int{}
			var firstOK time.Duration
			for i := 0; ; i++ {
				if time.Since(greylistedAt) > tierDelay {
					r := rcpt(nodes[i%2], waiting, "alice@example.com")
					if r.Code == 250 {
						firstOK = time.Since(killed)
						break
					}
					retries[r.Code]++
					if r.Code != 451 {
						close(stop)
						<-probed
						t.Fatalf("%s after the kill, the greylisted triplet's retry: %v (want 451 until a master is back, then 250: its state was replicated)", time.Since(killed).Round(time.Millisecond), r)
					}
				}
				if time.Since(killed) > 30*time.Second {
					close(stop)
					<-probed
					t.Fatalf("no retry accepted 30s after the kill\npolicyd A:\n%s", tail(a.DaemonLog("policyd"), 30))
				}
				time.Sleep(100 * time.Millisecond)
			}
			close(stop)
			if bad := <-probed; len(bad) > 0 {
				t.Errorf("during the failover, new triplets got other than 4xx: %q", bad)
			}
			if r := rcpt(a, passed, "alice@example.com"); r.Code != 250 {
				t.Errorf("after the failover, the triplet passed before the kill: %v", r)
			}
			now, err := g.WaitNewMaster(master.Addr, 10*time.Second)
			if err != nil {
				t.Errorf("master after the failover: %v (was %s)", err, master.Addr)
			}
			failovers = append(failovers, firstOK)
			t.Logf("failover %d: kill of master %s -> first accepted retry after %s (new master %s); new triplets meanwhile %v, the retry before %v",
				round, master.Addr, firstOK.Round(time.Millisecond), now, codes, retries)
			// The killed node comes back empty and the sentinels make it
			// the new master's replica, ready for the next round.
			if err := master.Restart(10 * time.Second); err != nil {
				t.Fatal(err)
			}
			deadline := time.Now().Add(30 * time.Second)
			for g.WaitReplicated(time.Second) != nil {
				if time.Now().After(deadline) {
					t.Fatalf("the restarted node did not become a replica in 30s:\n%s", master.Log())
				}
			}
		})
		if !ok {
			break
		}
	}
	if len(failovers) > 0 {
		s := append([]time.Duration(nil), failovers...)
		sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
		t.Logf("failover times (kill -> first accepted retry) over %d runs: %v; min %s, median %s, max %s",
			len(s), failovers, s[0].Round(time.Millisecond), s[len(s)/2].Round(time.Millisecond), s[len(s)-1].Round(time.Millisecond))
	}

	t.Run("all of Redis and Sentinel down, then back", func(t *testing.T) {
		for _, p := range append(append([]*statetest.Process{}, g.Sentinels...), g.Redis...) {
			p.Kill()
		}
		down := time.Now()
		codes := map[int]int{}
		for i := 0; i < 3; i++ {
			for _, n := range nodes {
				r := rcpt(n, fmt.Sprintf("down%d@sender.test", i), "alice@example.com")
				codes[r.Code]++
				if r.Code/100 != 4 {
					t.Fatalf("everything down, a new triplet at %s: %v (want 4xx)", n.Hostname, r)
				}
				tr := send(t, n.Submission, harness.Envelope{LocalAddr: harness.OutsideClient, StartTLS: true,
					AuthUser: "bob@example.com", AuthPass: "bobpass", From: "bob@example.com", To: []string{"alice@example.com"}})
				codes[tr.Rcpt[0].Code]++
				if tr.Rcpt[0].Code/100 != 4 {
					t.Fatalf("everything down, an authenticated message at %s: %v (want 4xx: the rate limit cannot be counted)", n.Hostname, tr.Rcpt[0])
				}
			}
		}
		t.Logf("with Redis and Sentinel down for %s: replies %v", time.Since(down).Round(time.Millisecond), codes)
		for _, p := range g.Redis {
			if err := p.Restart(10 * time.Second); err != nil {
				t.Fatal(err)
			}
		}
		for _, p := range g.Sentinels {
			if err := p.Restart(10 * time.Second); err != nil {
				t.Fatal(err)
			}
		}
		back := time.Now()
		// Mail flows again on both nodes: a new triplet is greylisted (the
		// state answers) and passes after the delay, at the other node.
		var first time.Time
		for {
			r := rcpt(a, "back@sender.test", "alice@example.com")
			if isGreylisted(r) {
				first = time.Now()
				break
			}
			if r.Code != 451 || time.Since(back) > 30*time.Second {
				t.Fatalf("%s after Redis and Sentinel were back: %v (want 451, then 450 Greylisted within 30s)", time.Since(back).Round(time.Millisecond), r)
			}
			time.Sleep(200 * time.Millisecond)
		}
		t.Logf("state answers again %s after Redis and Sentinel were started", first.Sub(back).Round(time.Millisecond))
		time.Sleep(time.Until(first.Add(tierDelay + 100*time.Millisecond)))
		msg := harness.NewMessage("back@sender.test", "alice@example.com", "after the outage", "flows again")
		tr := send(t, b.SMTP, harness.Envelope{LocalAddr: harness.OutsideClient, From: "back@sender.test", To: []string{"alice@example.com"}, Data: msg})
		if tr.Rcpt[0].Code != 250 {
			t.Fatalf("the retry at B after the outage: %v", tr.Rcpt[0])
		}
		wantFinal(t, tr)
		tr = send(t, a.Submission, harness.Envelope{LocalAddr: harness.OutsideClient, StartTLS: true,
			AuthUser: "bob@example.com", AuthPass: "bobpass", From: "bob@example.com", To: []string{"alice@example.com"},
			Data: harness.NewMessage("bob@example.com", "alice@example.com", "after the outage", "counted again")})
		if tr.Rcpt[0].Code != 250 {
			t.Fatalf("an authenticated message at A after the outage: %v", tr.Rcpt[0])
		}
		wantFinal(t, tr)
	})
	for _, n := range nodes {
		if log := n.DaemonLog("policyd"); strings.Contains(log, "panic") {
			t.Errorf("policyd of %s panicked:\n%s", n.Hostname, log)
		}
	}
	t.Logf("tier test took %s", time.Since(start).Round(time.Second))
}
