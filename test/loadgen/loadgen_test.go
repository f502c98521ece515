package loadgen

import (
	"context"
	"math"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailnode/mailnode/inventory"
	"github.com/mailnode/mailnode/policy"
)

func testInventory(t *testing.T) *inventory.Inventory {
	inv, err := inventory.Load("../../policy/testdata/inventory.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return inv
}

// TestMixIsWhatItSays: every kind comes in its share, and the reply
// policyd owes each kind is the one the matrix gives that kind.
func TestMixIsWhatItSays(t *testing.T) {
	inv := testInventory(t)
	const size = 20000
	mix, err := BuildMix(NamesFrom(inv), inv, DefaultShares, size, 7)
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, s := range DefaultShares {
		total += s.Weight
	}
	count := map[string]int{}
	wantReply := map[string]string{
		"inbound to a local mailbox":             "action=DUNNO",
		"inbound to a local alias":               "action=DUNNO",
		"inbound to a relay domain (backup MX)":  "action=DUNNO",
		"inbound bounce (null sender)":           "action=DUNNO",
		"relay attempt to outside":               "action=550 5.7.1 Sorry, relay for <",
		"outside sender to an internal list":     "action=550 5.7.1 Sorry, <",
		"forged local sender, unauthenticated":   "action=550 5.7.1 Please authenticate for send mail from domain <",
		"relay domain sender, unauthenticated":   "action=550 5.7.1 Please use own mail service for send mail from <",
		"authenticated user to outside":          "action=DUNNO",
		"authenticated user to local":            "action=DUNNO",
		"trusted host to outside":                "action=DUNNO",
		"authenticated user with outside sender": "action=550 5.7.1 Please use own mail service for send mail from <",
	}
	for _, it := range mix {
		count[it.Kind]++
		if !strings.HasPrefix(it.Reply, wantReply[it.Kind]) {
			t.Fatalf("%s: reply %q, want %s...\n%s", it.Kind, it.Reply, wantReply[it.Kind], it.Wire)
		}
	}
	for _, s := range DefaultShares {
		want := float64(size) * float64(s.Weight) / float64(total)
		if got := float64(count[s.Kind]); math.Abs(got-want) > 4*math.Sqrt(want)+1 {
			t.Errorf("%s: %v requests, want about %.0f", s.Kind, got, want)
		}
	}
	again, _ := BuildMix(NamesFrom(inv), inv, DefaultShares, size, 7)
	for i := range mix {
		if string(mix[i].Wire) != string(again[i].Wire) {
			t.Fatal("the mix is not deterministic for a seed")
		}
	}
}

func TestRunAgainstServer(t *testing.T) {
	inv := testInventory(t)
	sock := filepath.Join(t.TempDir(), "p")
	ln, err := policy.Listen("unix:" + sock)
	if err != nil {
		t.Fatal(err)
	}
	s := policy.NewServer(inv)
	go s.Serve(ln)
	defer s.Shutdown(context.Background())
	mix, err := BuildMix(NamesFrom(inv), inv, DefaultShares, 500, 1)
	if err != nil {
		t.Fatal(err)
	}
	closeIdle, err := OpenIdle("unix", sock, 50)
	if err != nil {
		t.Fatal(err)
	}
	defer closeIdle()
	res, err := Run(Config{Network: "unix", Addr: sock, Conns: 4, Requests: 3000, Mix: mix})
	if err != nil {
		t.Fatal(err)
	}
	if res.Requests != 3000 || res.Mismatches != 0 {
		t.Fatalf("%d requests, %d mismatches (%s)", res.Requests, res.Mismatches, res.FirstBad)
	}
	if res.Replies["DUNNO"]+res.Replies["550"] != 3000 || res.Replies["550"] == 0 {
		t.Errorf("replies %v", res.Replies)
	}
	if !(res.P50 <= res.P99 && res.P99 <= res.Max && res.PerSecond > 0) {
		t.Errorf("figures do not add up: %+v", res)
	}
	var b strings.Builder
	res.Report(&b)
	if !strings.Contains(b.String(), "decisions/s:") || !strings.Contains(b.String(), "p99 ") {
		t.Errorf("report:\n%s", b.String())
	}
	// Paced: the last of 400 requests at 2,000/s is not sent before 199.5 ms.
	paced, err := Run(Config{Network: "unix", Addr: sock, Conns: 4, Requests: 400, Mix: mix, Rate: 2000})
	if err != nil {
		t.Fatal(err)
	}
	if paced.Requests != 400 || paced.Elapsed < 199*time.Millisecond {
		t.Errorf("paced run: %d requests in %s, want 400 in at least 199.5 ms", paced.Requests, paced.Elapsed)
	}
	// A server that closes without answering is an error, not a hang.
	s.Shutdown(context.Background())
	if _, err := Run(Config{Network: "unix", Addr: sock, Conns: 1, Requests: 1, Mix: mix}); err == nil {
		t.Error("no error from a closed server")
	}
}

// slowServer answers every policy request after delay, one at a time per
// connection, with DUNNO.
func slowServer(t *testing.T, delay time.Duration) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "slow")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go ServeDunno(ln, delay)
	return sock
}

// A paced run against a server slower than the pace: from the send, every
// request takes the server's 20 ms; from the due time (FromDue), the
// requests that fell due while the one connection waited are charged for
// the wait, which grows request by request.
func TestFromDueChargesTheWait(t *testing.T) {
	sock := slowServer(t, 20*time.Millisecond)
	mix := []Item{{Kind: "x", Wire: []byte("request=smtpd_access_policy\nprotocol_state=RCPT\n\n")}}
	cfg := Config{Network: "unix", Addr: sock, Conns: 1, Requests: 15, Mix: mix, Rate: 1000}
	sent, err := Run(cfg)
	if err != nil {
		t.Fatal(err)
	}
	cfg.FromDue = true
	due, err := Run(cfg)
	if err != nil {
		t.Fatal(err)
	}
	// From the send: each about 20 ms. From the due time: the 15th fell
	// due at 14 ms and was sent after 14 replies of 20 ms (280 ms).
	if sent.Max > 150*time.Millisecond || sent.P50 < 19*time.Millisecond {
		t.Errorf("from the send: p50 %s, max %s; want about 20 ms each", sent.P50, sent.Max)
	}
	if due.Max < 250*time.Millisecond || due.P50 < 100*time.Millisecond {
		t.Errorf("from the due time: p50 %s, max %s; want the wait counted (max about 290 ms)", due.P50, due.Max)
	}
}
