package milter

import (
	"bufio"
	"context"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	gomilter "github.com/d--j/go-milter"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/mailnode/mailnode/internal/promtest"
	"github.com/mailnode/mailnode/inventory"
	"github.com/mailnode/mailnode/milter/miltertest"
	"github.com/mailnode/mailnode/srs"
	"github.com/mailnode/mailnode/test/harness"
)

var srsSecret = []byte("milter-test-secret-0123456789")

func srsFilter(t *testing.T) (*Filter, *harness.SyncBuffer) {
	t.Helper()
	f, logs := testFilter(t)
	s, err := srs.New(srsSecret)
	if err != nil {
		t.Fatal(err)
	}
	s.Now = func() time.Time { return fixedNow }
	f.Metrics = NewMetrics()
	f.SRS = NewSRS(testInventory(t), s)
	f.SRS.metrics = f.Metrics
	return f, logs
}

func forwarded(sender string, rcpts ...string) *miltertest.Message {
	m := inbound(nil, false)
	m.Sender, m.Rcpts = sender, rcpts
	return m
}

// TestSRSForward: an outside sender's message to an alias that forwards
// off the node (sales@example.com reaches carol@partner.org) leaves with
// the SRS sender of the alias's domain, over the milter protocol
// (ChangeFrom); what is not forwarded mail keeps its sender.
func TestSRSForward(t *testing.T) {
	f, logs := srsFilter(t)
	c := miltertest.NewClient("unix", startServer(t, f, nil))
	want, _ := f.SRS.srs.Forward("news@sender.org", "example.com")
	if !strings.HasPrefix(want, "SRS0=") || !strings.HasSuffix(want, "=sender.org=news@example.com") {
		t.Fatalf("SRS address %q", want)
	}
	changeFrom := func(t *testing.T, m *miltertest.Message) string {
		t.Helper()
		r, err := miltertest.Submit(c, m)
		if err != nil {
			t.Fatal(err)
		}
		if r.Action.Type != gomilter.ActionAccept {
			t.Fatalf("action %v", r.Action)
		}
		from := ""
		for _, mod := range r.Mods {
			if mod.Type == gomilter.ActionChangeFrom {
				if from != "" {
					t.Errorf("two ChangeFrom: %v", r.Mods)
				}
				from = mod.From
				if mod.FromArgs != "" {
					t.Errorf("ChangeFrom with ESMTP arguments %q", mod.FromArgs)
				}
			}
		}
		return from
	}
	for _, c := range []struct {
		name string
		m    *miltertest.Message
		want string
	}{
		{"outside sender to a forwarding alias", forwarded("news@sender.org", "sales@example.com"), "<" + want + ">"},
		{"and a local mailbox beside it: the whole message", forwarded("news@sender.org", "bob@example.com", "sales@example.com"), "<" + want + ">"},
		{"an extension of the alias", forwarded("news@sender.org", "sales+x@example.com"), "<" + want + ">"},
		{"a local mailbox only", forwarded("news@sender.org", "bob@example.com"), ""},
		{"a local alias that stays local", forwarded("news@sender.org", "postmaster@example.com"), ""},
		{"a relay domain directly", forwarded("news@sender.org", "dave@partner.org"), ""},
		{"the null sender (a bounce)", forwarded("", "sales@example.com"), ""},
		{"a local sender, authenticated", func() *miltertest.Message {
			m := localMessage("alice@example.com")
			m.Rcpts = []string{"sales@example.com"}
			return m
		}(), ""},
		{"a local sender, trusted", func() *miltertest.Message {
			m := forwarded("bob@example.com", "sales@example.com")
			m.Addr = "10.20.0.5"
			return m
		}(), ""},
		{"the node's own name", forwarded("root@mx1.example.com", "sales@example.com"), ""},
		{"a quoted local part", forwarded(`"john doe"@sender.org`, "sales@example.com"), ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := changeFrom(t, c.m); got != c.want {
				t.Errorf("ChangeFrom %q, want %q", got, c.want)
			}
		})
	}
	if !strings.Contains(logs.String(), `srs="`+want+`"`) {
		t.Errorf("no srs= in the decision lines:\n%s", logs)
	}
	if !strings.Contains(logs.String(), `srs_skipped="sender not rewritable`) {
		t.Errorf("the quoted local part left no srs_skipped:\n%s", logs)
	}
	if got := srsMetric(t, f.Metrics.Registry, "mailnode_milter_srs_rewrites_total", map[string]string{"result": "rewritten"}); got != 3 {
		t.Errorf("rewritten: %v, want 3", got)
	}
	if got := srsMetric(t, f.Metrics.Registry, "mailnode_milter_srs_rewrites_total", map[string]string{"result": "not_rewritable"}); got != 1 {
		t.Errorf("not_rewritable: %v, want 1", got)
	}

	// A sender that is an SRS address of another forwarder: SRS1.
	s1 := changeFrom(t, forwarded("SRS0=abcd=JZ=orig.example=a@fwd.example", "sales@example.com"))
	if !strings.HasPrefix(s1, "<SRS1=") || !strings.HasSuffix(s1, "=fwd.example==abcd=JZ=orig.example=a@example.com>") {
		t.Errorf("SRS1: %q", s1)
	}
	// A refused message is not rewritten: the decision has no srs.
	tr := f.NewTransaction(Envelope{Sender: "news@sender.org", ClientAddr: "198.51.100.7"})
	tr.AddRcpt("sales@example.com")
	tr.Header("From", " news@sender.org")
	tr.Header("Subject", " XJS*C4JDBQADN1.NSBGSR;K1G")
	res := tr.End(context.Background())
	if res.Sender == "" && !res.Reject {
		t.Errorf("a message with a forwarding recipient, not refused, not rewritten: %+v", res.Decision)
	}
	if res.Reject && (res.Sender != "" || res.Decision.SRS != "") {
		t.Errorf("a refused message was rewritten: %q", res.Sender)
	}
}

// TestSRSOff: with forwarding.srs false the Filter has no SRS, and a
// forwarded message keeps its sender.
func TestSRSOff(t *testing.T) {
	inv := testInventory(t)
	off := false
	inv.Forwarding.SRS = &off
	s, _ := srs.New(srsSecret)
	if NewSRS(inv, s) != nil {
		t.Fatal("NewSRS with forwarding.srs false")
	}
	if got, err := LoadSRS(inv); got != nil || err != nil {
		t.Errorf("LoadSRS with forwarding.srs false: %v %v", got, err)
	}
	f, _ := testFilter(t)
	tr := f.NewTransaction(Envelope{Sender: "news@sender.org", ClientAddr: "198.51.100.7"})
	tr.AddRcpt("sales@example.com")
	if res := tr.End(context.Background()); res.Sender != "" {
		t.Errorf("rewritten without SRS: %q", res.Sender)
	}
}

// TestSRSLookup: the socketmap answer for each kind of address.
func TestSRSLookup(t *testing.T) {
	f, _ := srsFilter(t)
	logs := &harness.SyncBuffer{}
	f.SRS.log = slog.New(slog.NewTextHandler(logs, nil))
	x := f.SRS
	valid, _ := x.srs.Forward("Alice@Orig.Example", "example.com")
	validNet, _ := x.srs.Forward("bob@orig.example", "example.net")
	atRelay, _ := x.srs.Forward("bob@orig.example", "partner.org")
	atOutside, _ := x.srs.Forward("bob@orig.example", "elsewhere.example")
	s1, _ := x.srs.Forward("SRS0=abcd=JZ=orig.example=a@fwd.example", "example.com")
	old := *x.srs
	old.Now = func() time.Time { return fixedNow.Add(-30 * 24 * time.Hour) }
	expired, _ := old.Forward("bob@orig.example", "example.com")
	for _, c := range []struct {
		name, key, status, data, result string
	}{
		{"valid", valid, "OK", "Alice@Orig.Example", SRSReversed},
		{"valid, lower-cased by Postfix", strings.ToLower(valid), "OK", "alice@orig.example", SRSReversed},
		{"another local domain", validNet, "OK", "bob@orig.example", SRSReversed},
		{"SRS1 back to the first forwarder", s1, "OK", "SRS0=abcd=JZ=orig.example=a@fwd.example", SRSReversed},
		{"an ordinary address", "alice@example.com", "NOTFOUND", "", SRSNotSRS},
		{"a relay domain", atRelay, "NOTFOUND", "", SRSForeign},
		{"an outside domain", atOutside, "NOTFOUND", "", SRSForeign},
		{"forged", strings.Replace(valid, "Alice", "Mallory", 1), "NOTFOUND", "", SRSInvalid},
		{"forged hash", "SRS0=AAAA=" + srs.Timestamp(fixedNow) + "=victim.example=x@example.com", "NOTFOUND", "", SRSInvalid},
		{"malformed", "SRS0=xx@example.com", "NOTFOUND", "", SRSInvalid},
		{"expired", expired, "NOTFOUND", "", SRSExpired},
	} {
		st, data := x.Lookup(inventory.SRSMapName, c.key)
		if st != c.status || data != c.data {
			t.Errorf("%s: Lookup(%q) = %s %q, want %s %q", c.name, c.key, st, data, c.status, c.data)
		}
	}
	if st, _ := x.Lookup("forward", valid); st != srs.StatusPerm {
		t.Errorf("another map name: %s", st)
	}
	for r, want := range map[string]float64{SRSReversed: 4, SRSNotSRS: 1, SRSForeign: 2, SRSInvalid: 3, SRSExpired: 1, srsMapError: 1} {
		if got := srsMetric(t, f.Metrics.Registry, "mailnode_milter_srs_lookups_total", map[string]string{"result": r}); got != want {
			t.Errorf("lookups %s: %v, want %v", r, got, want)
		}
	}
	if !strings.Contains(logs.String(), "milterd: srs address not reversed") || !strings.Contains(logs.String(), "result=expired") {
		t.Errorf("log:\n%s", logs)
	}
}

// TestLoadSRS: the secrets file as milterd reads it; every problem names
// forwarding.srs_secret_file and the file.
func TestLoadSRS(t *testing.T) {
	inv := testInventory(t)
	dir := t.TempDir()
	inv.Forwarding.SRSSecretFile = filepath.Join(dir, "srs.secret")
	check := func(want ...string) {
		t.Helper()
		_, err := LoadSRS(inv)
		if err == nil {
			t.Fatalf("accepted; want %q", want)
		}
		for _, w := range append(want, "forwarding.srs_secret_file", inv.Forwarding.SRSSecretFile) {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%v: does not say %q", err, w)
			}
		}
	}
	check("no such file", "head -c 32 /dev/urandom", "forwarding.srs: false")
	os.WriteFile(inv.Forwarding.SRSSecretFile, []byte("short\n"), 0o640)
	check("too short")
	os.WriteFile(inv.Forwarding.SRSSecretFile, []byte("\n"), 0o640)
	check("no secret")
	os.WriteFile(inv.Forwarding.SRSSecretFile, []byte("long-enough-secret-0123456789\n"), 0o640)
	os.Chmod(inv.Forwarding.SRSSecretFile, 0o644)
	check("mode 0644")
	os.Chmod(inv.Forwarding.SRSSecretFile, 0o640)
	s, err := LoadSRS(inv)
	if err != nil || s == nil || s.Secrets() != 1 {
		t.Fatalf("a good file: %v %v", s, err)
	}
}

// TestSRSMap: the socketmap on its unix socket answers Postfix's
// netstrings; a reload swaps the secrets; SRS going off closes it.
func TestSRSMap(t *testing.T) {
	inv := testInventory(t)
	dir, err := os.MkdirTemp("/tmp", "srsmap")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	inv.Milter.Listen = "unix:" + filepath.Join(dir, "milter.sock")
	sock := filepath.Join(dir, inventory.SRSSocketName)
	if inv.SRSSocket() != sock {
		t.Fatalf("SRSSocket %q, want %q", inv.SRSSocket(), sock)
	}
	s1, _ := srs.New(srsSecret)
	m := &SRSMap{Metrics: NewMetrics(), Log: slog.New(slog.NewTextHandler(&harness.SyncBuffer{}, nil))}
	t.Cleanup(func() { m.Close() })
	if err := m.Update(inv, s1); err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(sock); err != nil || st.Mode().Perm() != 0o660 {
		t.Fatalf("socket: %v %v", st, err)
	}
	ask := func(key string) string {
		t.Helper()
		c, err := net.Dial("unix", sock)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		srs.WriteNetstring(c, []byte(inventory.SRSMapName+" "+key))
		b, err := srs.ReadNetstring(bufio.NewReader(c), srs.MaxReply)
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	a1, _ := s1.Forward("alice@orig.example", "example.com")
	if got := ask(a1); got != "OK alice@orig.example" {
		t.Errorf("%s: %q", a1, got)
	}
	// A reload with a new first secret and the old one second: old
	// addresses still reverse, new ones too.
	s2, _ := srs.New([]byte("the-new-secret-of-the-node-xyz"), srsSecret)
	m.Update(inv, s2)
	a2, _ := s2.Forward("bob@orig.example", "example.com")
	if got := ask(a1); got != "OK alice@orig.example" {
		t.Errorf("old address after the rotation: %q", got)
	}
	if got := ask(a2); got != "OK bob@orig.example" {
		t.Errorf("new address: %q", got)
	}
	// The old secret dropped: its addresses are unknown.
	s3, _ := srs.New([]byte("the-new-secret-of-the-node-xyz"))
	m.Update(inv, s3)
	if got := ask(a1); got != "NOTFOUND " {
		t.Errorf("old address with its secret gone: %q", got)
	}
	off := false
	inv.Forwarding.SRS = &off
	m.Update(inv, nil)
	if _, err := net.Dial("unix", sock); err == nil {
		t.Error("the socket still answers with SRS off")
	}
	if m.Path() != "" {
		t.Errorf("Path %q with SRS off", m.Path())
	}
}

func srsMetric(t *testing.T, r *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	v, _, err := promtest.Value(r, name, labels)
	if err != nil {
		t.Fatal(err)
	}
	return v
}
