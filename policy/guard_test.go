package policy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailnode/mailnode/acl"
	"github.com/mailnode/mailnode/inventory"
	"github.com/mailnode/mailnode/maillog"
	"github.com/mailnode/mailnode/state"
	"github.com/mailnode/mailnode/state/statetest"
	"github.com/mailnode/mailnode/test/harness"
)

// statefulInventory is testdata/inventory.yaml with greylisting (300 s)
// and a limit of 2 messages and 5 recipients an hour.
func statefulInventory(t testing.TB) *inventory.Inventory {
	t.Helper()
	inv := loadInventory(t)
	inv.Policy.Greylist = &inventory.Greylist{Enabled: true, Delay: inventory.Duration(300 * time.Second),
		RetryWindow: inventory.Duration(48 * time.Hour), AutoWhitelistAfter: 5,
		Expire: inventory.Duration(35 * 24 * time.Hour), WhitelistSenders: []string{"friendly.test"}}
	inv.Policy.Ratelimit = &inventory.Ratelimit{MessagesPerHour: 2, RecipientsPerHour: 5,
		Overrides: map[string]inventory.Limits{"bob@example.com": {MessagesPerHour: 1}}}
	return inv
}

// statefulServer is a server on statefulInventory with a bbolt store and
// a fake clock.
func statefulServer(t *testing.T, configure func(*Server)) (*testServer, *statetest.Clock, *state.Bolt) {
	t.Helper()
	clk := statetest.NewClock()
	st, err := state.OpenBolt(filepath.Join(t.TempDir(), "state.db"), state.BoltOptions{Clock: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	ts := startServer(t, "unix", func(s *Server) {
		if err := s.SetInventory(statefulInventory(t)); err != nil {
			t.Fatal(err)
		}
		if err := s.UseState(st, clk.Now); err != nil {
			t.Fatal(err)
		}
		if configure != nil {
			configure(s)
		}
	})
	return ts, clk, st
}

// req builds an RCPT request.
func rcptReq(client, sasl, sender, rcpt, instance string) string {
	return "request=smtpd_access_policy\nprotocol_state=RCPT\nclient_address=" + client +
		"\nsasl_username=" + sasl + "\nsender=" + sender + "\nrecipient=" + rcpt + "\ninstance=" + instance + "\n\n"
}

func action(reply string) string { return "action=" + reply + "\n\n" }

func TestGreylistThroughServer(t *testing.T) {
	ts, clk, _ := statefulServer(t, nil)
	c := ts.dial(t)
	r := bufio.NewReader(c)
	inbound := rcptReq(untrustedClient, "", "eve@example.org", "bob@example.com", "i1")
	steps := []struct {
		name    string
		advance time.Duration
		req     string
		want    string
	}{
		{"first attempt", 0, inbound, action("450 4.7.1 Greylisted, please try again in 300 seconds")},
		{"retry too early", 100 * time.Second, inbound, action("450 4.7.1 Greylisted, please try again in 200 seconds")},
		// Another client of the same /24, same sender and recipient: the same triplet.
		{"same /24", 0, rcptReq("198.51.100.99", "", "eve@example.org", "bob@example.com", "i2"), action("450 4.7.1 Greylisted, please try again in 200 seconds")},
		{"after the delay", 200 * time.Second, inbound, action("DUNNO")},
		{"passed triplet", time.Hour, inbound, action("DUNNO")},
		// A 550 of the matrix always wins, and relay recipients are not greylisted.
		{"relay attempt", 0, rcptReq(untrustedClient, "", "mallory@example.org", "frank@example.org", "i3"), relayReply},
		{"to the relay domain", 0, rcptReq(untrustedClient, "", "mallory@example.org", "x@partner.org", "i4"), action("DUNNO")},
		{"null sender", 0, rcptReq(untrustedClient, "", "", "alice@example.com", "i5"), action("DUNNO")},
		{"postmaster", 0, rcptReq(untrustedClient, "", "mallory@example.org", "Postmaster@example.com", "i6"), action("DUNNO")},
		{"whitelisted sender domain", 0, rcptReq(untrustedClient, "", "news@mail.friendly.test", "alice@example.com", "i7"), action("DUNNO")},
		{"internal list still 550", 0, rcptReq(untrustedClient, "", "mallory@example.org", "all-staff@example.com", "i8"),
			action("550 5.7.1 Sorry, <all-staff@example.com> accepts mail from internal senders only")},
		{"trusted client to local: no greylisting", 0, rcptReq(trustedClient, "", "bob@example.com", "alice@example.com", "i9"), action("DUNNO")},
		{"other recipient: new triplet", 0, rcptReq(untrustedClient, "", "eve@example.org", "alice@example.com", "i10"), action("450 4.7.1 Greylisted, please try again in 300 seconds")},
		{"not RCPT", 0, "request=smtpd_access_policy\nprotocol_state=DATA\nclient_address=198.51.100.7\nsender=x@y.test\nrecipient=alice@example.com\n\n", action("DUNNO")},
	}
	for _, s := range steps {
		clk.Add(s.advance)
		got, err := ask(c, r, s.req)
		if err != nil || got != s.want {
			t.Fatalf("%s: %q, %v; want %q", s.name, got, err, s.want)
		}
	}
	// The retry window: a triplet retried after 48 h starts over.
	clk.Add(49 * time.Hour)
	got, _ := ask(c, r, rcptReq(untrustedClient, "", "eve@example.org", "alice@example.com", "i11"))
	if want := action("450 4.7.1 Greylisted, please try again in 300 seconds"); got != want {
		t.Fatalf("after the retry window: %q, want %q", got, want)
	}
}

func TestRateLimitThroughServer(t *testing.T) {
	ts, clk, _ := statefulServer(t, nil)
	c := ts.dial(t)
	r := bufio.NewReader(c)
	over := func(who string) string {
		return action("450 4.7.1 Rate limit exceeded for <" + who + ">, try again later")
	}
	steps := []struct {
		name, req, want string
	}{
		// alice: 2 messages an hour. Three recipients of one message count once.
		{"msg 1 rcpt 1", rcptReq(untrustedClient, "alice@example.com", "alice@example.com", "x@outside.test", "m1"), action("DUNNO")},
		{"msg 1 rcpt 2", rcptReq(untrustedClient, "alice@example.com", "alice@example.com", "y@outside.test", "m1"), action("DUNNO")},
		{"msg 1 rcpt 3", rcptReq(untrustedClient, "alice@example.com", "alice@example.com", "bob@example.com", "m1"), action("DUNNO")},
		{"msg 2", rcptReq(untrustedClient, "Alice@Example.com", "alice@example.com", "z@outside.test", "m2"), action("DUNNO")},
		{"msg 3 over messages", rcptReq(untrustedClient, "alice@example.com", "alice@example.com", "z@outside.test", "m3"), over("alice@example.com")},
		// A rejected sender is refused by the matrix before any counting.
		{"550 wins", rcptReq(untrustedClient, "alice@example.com", "eve@outside.test", "z@outside.test", "m4"),
			action("550 5.7.1 Please use own mail service for send mail from <eve@outside.test>")},
		// bob has his own override: one message.
		{"bob msg 1", rcptReq(untrustedClient, "bob@example.com", "bob@example.com", "z@outside.test", "b1"), action("DUNNO")},
		{"bob msg 2", rcptReq(untrustedClient, "bob@example.com", "bob@example.com", "z@outside.test", "b2"), over("bob@example.com")},
		// A trusted host is counted by its address.
		{"trust msg 1", rcptReq(trustedClient, "", "bob@example.com", "a@outside.test", "t1"), action("DUNNO")},
		{"trust msg 1 rcpt 2", rcptReq(trustedClient, "", "bob@example.com", "b@outside.test", "t1"), action("DUNNO")},
		{"trust msg 1 rcpt 3", rcptReq(trustedClient, "", "bob@example.com", "c@outside.test", "t1"), action("DUNNO")},
		{"trust msg 2", rcptReq(trustedClient, "", "bob@example.com", "d@outside.test", "t2"), action("DUNNO")},
		{"trust msg 2 rcpt 2", rcptReq(trustedClient, "", "bob@example.com", "e@outside.test", "t2"), action("DUNNO")},
		// 5 recipients counted: the sixth is over recipients_per_hour.
		{"trust over recipients", rcptReq(trustedClient, "", "bob@example.com", "f@outside.test", "t2"), over(trustedClient)},
		// Inbound mail is never rate limited.
		{"inbound", rcptReq(untrustedClient, "", "eve@example.org", "alice@example.com", "in1"), action("450 4.7.1 Greylisted, please try again in 300 seconds")},
	}
	for _, s := range steps {
		got, err := ask(c, r, s.req)
		if err != nil || got != s.want {
			t.Fatalf("%s: %q, %v; want %q", s.name, got, err, s.want)
		}
	}
	// The window slides: an hour later alice sends again.
	clk.Add(time.Hour)
	if got, _ := ask(c, r, rcptReq(untrustedClient, "alice@example.com", "alice@example.com", "z@outside.test", "m5")); got != action("DUNNO") {
		t.Fatalf("an hour later: %q", got)
	}
}

// TestGuardApplyCells: Apply consults greylisting only for the cells
// SpamCheck marks and rate limits only for authorized senders, never turns
// a reject into anything else, and records its verdict in the decision.
func TestGuardApplyCells(t *testing.T) {
	inv := statefulInventory(t)
	clk := statetest.NewClock()
	st, err := state.OpenBolt(filepath.Join(t.TempDir(), "state.db"), state.BoltOptions{Clock: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	g, err := NewGuard(inv, st, clk.Now)
	if err != nil || g == nil || g.Greylist == nil || g.RateLimit == nil {
		t.Fatalf("NewGuard: %+v %v", g, err)
	}
	senders := map[string]session{
		"none":  {client: untrustedClient},
		"auth":  {client: untrustedClient, sasl: "alice@example.com"},
		"trust": {client: trustedClient},
	}
	addrs := map[inventory.Class][]string{
		inventory.Local:   {"alice@example.com", "carol-nobody@example.com"},
		inventory.Relay:   {"someone@partner.org"},
		inventory.Outside: {"frank@example.org"},
	}
	n := 0
	for auth, sess := range senders {
		for _, from := range []string{"bob@example.com", "x@partner.org", "eve@example.org", ""} {
			for _, rcpts := range addrs {
				for _, rcpt := range rcpts {
					n++
					req := Request{Request: "smtpd_access_policy", ProtocolState: "RCPT", ClientAddress: sess.client,
						SASLUsername: sess.sasl, Sender: from, Recipient: rcpt, Instance: "inst" + auth}
					d := Decide(req, inv, OptionsFrom(inv))
					before := d
					if err := g.Apply(context.Background(), &req, &d); err != nil {
						t.Fatal(err)
					}
					name := auth + " " + from + " -> " + rcpt
					switch {
					case before.Action == Reject:
						if d != before {
							t.Errorf("%s: Apply changed a reject: %+v -> %+v", name, before, d)
						}
					case acl.SpamCheck(before.Cell):
						if d.Greylist == "" || d.RateLimit != "" {
							t.Errorf("%s (%s): greylist %q ratelimit %q", name, before.Cell, d.Greylist, d.RateLimit)
						}
						if from == "" && (d.Greylist != state.ReasonNullSender || d.Action != Dunno) {
							t.Errorf("%s: null sender %+v", name, d)
						}
						if from != "" && (d.Action != Defer || d.Greylist != state.ReasonNew ||
							d.Reply != "450 4.7.1 Greylisted, please try again in 300 seconds" || d.SpamCheck) {
							t.Errorf("%s: first attempt %+v", name, d)
						}
					case before.Cell.Auth != inventory.AuthNone:
						if d.RateLimit == "" || d.Greylist != "" || d.Action == Reject {
							t.Errorf("%s (%s): %+v", name, before.Cell, d)
						}
					default: // outside/none -> relay
						if d != before {
							t.Errorf("%s (%s): Apply changed %+v -> %+v", name, before.Cell, before, d)
						}
					}
					if d.Cell != before.Cell || d.Reason != before.Reason {
						t.Errorf("%s: cell or reason changed: %+v -> %+v", name, before, d)
					}
				}
			}
		}
	}
	if n != 48 {
		t.Fatalf("%d cases", n)
	}
	// Off: no greylist, no ratelimit: no Guard, no store needed.
	plain := loadInventory(t)
	if g, err := NewGuard(plain, nil, nil); g != nil || err != nil {
		t.Errorf("NewGuard without settings: %+v %v", g, err)
	}
	if _, err := NewGuard(inv, nil, nil); err == nil {
		t.Errorf("NewGuard with settings and no store: no error")
	}
	var nilGuard *Guard
	d := Decide(Request{Request: "smtpd_access_policy", ClientAddress: untrustedClient, Sender: "a@b.test", Recipient: "alice@example.com"}, plain, Options{})
	if err := nilGuard.Apply(context.Background(), &Request{}, &d); err != nil || d.Action != Dunno {
		t.Errorf("nil guard: %+v %v", d, err)
	}
}

// TestStateFailureNoReply: when the store fails the request gets no reply
// and the connection closes (Postfix applies default_action 451 4.3.5);
// never DUNNO, never a 5xx. The failure is logged and counted.
func TestStateFailureNoReply(t *testing.T) {
	m := NewMetrics()
	ts, _, st := statefulServer(t, func(s *Server) { s.Metrics = m })
	for _, tc := range []struct{ name, req, check string }{
		{"greylist", rcptReq(untrustedClient, "", "eve@example.org", "bob@example.com", "i1"), "greylist"},
		{"ratelimit", rcptReq(untrustedClient, "alice@example.com", "alice@example.com", "x@outside.test", "i2"), "ratelimit"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := ts.dial(t)
			r := bufio.NewReader(c)
			// A request the store is not needed for still gets its answer...
			if got, _ := ask(c, r, relayRequest); got != relayReply {
				t.Fatalf("relay request: %q", got)
			}
			st.Close() // ...then the store goes away.
			got, err := ask(c, r, tc.req)
			if got != "" || err == nil {
				t.Fatalf("with the store closed: reply %q, err %v; want no reply and a closed connection", got, err)
			}
			if !errors.Is(err, net.ErrClosed) && !strings.Contains(err.Error(), "EOF") && !isReset(err) {
				t.Errorf("connection not closed: %v", err)
			}
			waitFor(t, func() bool {
				return counterValue(t, m, "mailnode_policy_state_errors_total", map[string]string{"check": tc.check}) == 1
			})
			if log := ts.logs.String(); !strings.Contains(log, "greylist/rate state unavailable") || !strings.Contains(log, state.ErrClosed.Error()) {
				t.Errorf("no warning in the log:\n%s", log)
			}
		})
	}
}

// TestStatefulMailLogAndMetrics: each decision's log line carries the
// greylist and rate limit verdicts, and the counters count them.
func TestStatefulMailLogAndMetrics(t *testing.T) {
	var out harness.SyncBuffer
	ml := maillog.New(&out)
	m := NewMetrics()
	ts, clk, _ := statefulServer(t, func(s *Server) { s.MailLog, s.Metrics = ml, m })
	c := ts.dial(t)
	r := bufio.NewReader(c)
	inbound := rcptReq(untrustedClient, "", "eve@example.org", "bob@example.com", "i1")
	ask(c, r, inbound)
	clk.Add(300 * time.Second)
	ask(c, r, strings.Replace(inbound, "instance=i1", "instance=i2", 1)) // the retry is a new message
	for _, inst := range []string{"b1", "b2"} {
		ask(c, r, rcptReq(untrustedClient, "bob@example.com", "bob@example.com", "z@outside.test", inst))
	}
	waitFor(t, func() bool { return strings.Count(out.String(), "\n") == 4 })
	ml.Close()
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	for i, want := range []string{
		`cell=outside/none->local rcpt=1 action="450 4.7.1 Greylisted, please try again in 300 seconds" reason=inbound greylist=new`,
		`cell=outside/none->local rcpt=1 action=DUNNO reason=inbound spam_check=on greylist=triplet-passed`,
		`cell=local/auth->outside rcpt=1 action=DUNNO reason=authorized ratelimit=within-limit`,
		`cell=local/auth->outside rcpt=1 action="450 4.7.1 Rate limit exceeded for <bob@example.com>, try again later" reason=authorized ratelimit=over-messages`,
	} {
		if !strings.HasSuffix(lines[i], want) {
			t.Errorf("line %d:\n%s\nwant suffix\n%s", i+1, lines[i], want)
		}
	}
	for _, c := range []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"mailnode_policy_greylist_total", map[string]string{"result": "new"}, 1},
		{"mailnode_policy_greylist_total", map[string]string{"result": "triplet-passed"}, 1},
		{"mailnode_policy_ratelimit_refusals_total", map[string]string{"reason": "over-messages"}, 1},
		{"mailnode_policy_decisions_total", map[string]string{"cell": "outside/none->local", "action": "defer", "reason": "inbound"}, 1},
		{"mailnode_policy_decisions_total", map[string]string{"cell": "local/auth->outside", "action": "defer", "reason": "authorized"}, 1},
		{"mailnode_policy_decisions_total", map[string]string{"cell": "local/auth->outside", "action": "dunno", "reason": "authorized"}, 1},
		{"mailnode_policy_state_errors_total", map[string]string{"check": "greylist"}, 0},
	} {
		if v := counterValue(t, m, c.name, c.labels); v != c.want {
			t.Errorf("%s%v = %v, want %v", c.name, c.labels, v, c.want)
		}
	}
	// The bbolt store's counts of the whole process (state.BoltTotals).
	for _, name := range []string{"mailnode_policy_state_brake_waits_total", "mailnode_policy_state_refreshes_dropped_total", "mailnode_policy_state_file_read_bytes_total",
		"mailnode_policy_state_low_priority_commits_total", "mailnode_policy_state_raised_commits_total", "mailnode_policy_state_starved_commits_total", "mailnode_policy_state_crowded_commits_total"} {
		if v := counterValue(t, m, name, nil); v < 0 {
			t.Errorf("%s not exported", name)
		}
	}
}

// TestStatefulReload: a reload changes the greylisting and rate limit
// settings on the same store; unchanged limits keep the counted instances,
// so a message is not counted twice across a reload.
func TestStatefulReload(t *testing.T) {
	ts, clk, _ := statefulServer(t, nil)
	c := ts.dial(t)
	r := bufio.NewReader(c)
	alice := func(inst string) string {
		got, _ := ask(c, r, rcptReq(untrustedClient, "alice@example.com", "alice@example.com", "x@outside.test", inst))
		return got
	}
	if got := alice("m1"); got != action("DUNNO") {
		t.Fatal(got)
	}
	inv := statefulInventory(t)
	inv.Policy.Greylist.Delay = inventory.Duration(60 * time.Second)
	if err := ts.SetInventory(inv); err != nil {
		t.Fatal(err)
	}
	inbound := rcptReq(untrustedClient, "", "eve@example.org", "bob@example.com", "i1")
	if got, want := func() string { g, _ := ask(c, r, inbound); return g }(), action("450 4.7.1 Greylisted, please try again in 60 seconds"); got != want {
		t.Fatalf("after reload with delay 60s: %q", got)
	}
	// m1 again (another recipient of the same message) is not a new message:
	// m2 is alice's second and still allowed, m3 is over.
	for inst, want := range map[string]string{"m1": "DUNNO", "m2": "DUNNO"} {
		if got := alice(inst); got != action(want) {
			t.Fatalf("%s after reload: %q", inst, got)
		}
	}
	if got := alice("m3"); !strings.Contains(got, "Rate limit exceeded") {
		t.Fatalf("m3 after reload: %q", got)
	}
	// Greylisting off, limits off: no objections, same store.
	inv = loadInventory(t)
	if err := ts.SetInventory(inv); err != nil {
		t.Fatal(err)
	}
	if ts.Guard() != nil {
		t.Fatalf("guard without settings: %+v", ts.Guard())
	}
	if got, _ := ask(c, r, rcptReq(untrustedClient, "", "eve@example.org", "carol@example.com", "i2")); got != action("DUNNO") {
		t.Fatalf("greylisting off: %q", got)
	}
	// On again: the triplet recorded before is still in the store.
	clk.Add(60 * time.Second)
	inv = statefulInventory(t)
	inv.Policy.Greylist.Delay = inventory.Duration(60 * time.Second)
	if err := ts.SetInventory(inv); err != nil {
		t.Fatal(err)
	}
	if got, _ := ask(c, r, inbound); got != action("DUNNO") {
		t.Fatalf("triplet after greylisting came back: %q", got)
	}
	// Settings the state layer refuses keep the running inventory.
	bad := statefulInventory(t)
	bad.Policy.Greylist.RetryWindow = inventory.Duration(time.Second)
	if err := ts.SetInventory(bad); err == nil {
		t.Fatal("a retry window shorter than the delay was accepted")
	}
	if ts.Inventory() != inv {
		t.Fatal("a failed reload replaced the inventory")
	}
}

// TestUnsafeReplyNotSent: a reply outside the allowlist never leaves the
// server. A SASL login with a carriage return (Postfix would never send one)
// ends up in the rate limit's 450 text; the server must close without a
// reply rather than write it.
func TestUnsafeReplyNotSent(t *testing.T) {
	ts, _, _ := statefulServer(t, nil)
	c := ts.dial(t)
	r := bufio.NewReader(c)
	login := "alice\r@example.com"
	for i, want := range []string{action("DUNNO"), action("DUNNO")} {
		got, err := ask(c, r, rcptReq(untrustedClient, login, "alice@example.com", "x@outside.test", fmt.Sprintf("u%d", i)))
		if err != nil || got != want {
			t.Fatalf("message %d: %q, %v; want %q", i+1, got, err, want)
		}
	}
	got, err := ask(c, r, rcptReq(untrustedClient, login, "alice@example.com", "x@outside.test", "u3"))
	if got != "" || err == nil {
		t.Fatalf("over the limit with a CR in the login: reply %q, err %v; want no reply and a closed connection", got, err)
	}
	if log := ts.logs.String(); !strings.Contains(log, "is not DUNNO, a 4xx or a matrix 550") {
		t.Errorf("no warning in the log:\n%s", log)
	}
}
