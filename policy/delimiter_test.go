package policy

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailnode/mailnode/inventory"
	"github.com/mailnode/mailnode/state"
	"github.com/mailnode/mailnode/state/statetest"
)

// TestRecipientDelimiter: with postfix.recipient_delimiter, a list with an
// extension is the list, and greylisting keys on the base address, so
// bob+a@ and bob+b@ are one triplet.
func TestRecipientDelimiter(t *testing.T) {
	raw, err := os.ReadFile("testdata/inventory.yaml")
	if err != nil {
		t.Fatal(err)
	}
	src := strings.Replace(string(raw), "\npostfix:\n", "\npostfix:\n  recipient_delimiter: \"+\"\n", 1)
	if src == string(raw) {
		src = "postfix: {recipient_delimiter: \"+\"}\n" + src
	}
	inv, err := inventory.Parse([]byte(src), "inventory.yaml")
	if err != nil {
		t.Fatal(err)
	}
	inv.Policy.Greylist = &inventory.Greylist{Enabled: true, Delay: inventory.Duration(300 * time.Second),
		RetryWindow: inventory.Duration(48 * time.Hour), AutoWhitelistAfter: 5, Expire: inventory.Duration(35 * 24 * time.Hour)}
	req := func(sasl, from, rcpt string) Request {
		return Request{Request: "smtpd_access_policy", ProtocolState: "RCPT", ClientAddress: untrustedClient,
			SASLUsername: sasl, Sender: from, Recipient: rcpt, Instance: "i"}
	}
	if d := Decide(req("", "eve@example.org", "all-staff+weekly@example.com"), inv, OptionsFrom(inv)); d.Reply != "550 5.7.1 Sorry, <all-staff+weekly@example.com> accepts mail from internal senders only" {
		t.Errorf("list with an extension from outside: %q", d.Reply)
	}
	strict := OptionsFrom(inv)
	strict.StrictSenderLogin = true
	if d := Decide(req("bob@example.com", "bob+news@example.com", "frank@example.org"), inv, strict); d.Action != Dunno {
		t.Errorf("strict login sending as its own +ext: %q", d.Reply)
	}
	if d := Decide(req("bob@example.com", "alice+news@example.com", "frank@example.org"), inv, strict); d.Reply != "550 5.7.1 Please use own mail service for send mail from <alice+news@example.com>" {
		t.Errorf("strict login sending as another's +ext: %q", d.Reply)
	}

	clk := statetest.NewClock()
	st, err := state.OpenBolt(filepath.Join(t.TempDir(), "state.db"), state.BoltOptions{Clock: clk.Now})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	g, err := NewGuard(inv, st, clk.Now)
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []struct {
		advance time.Duration
		rcpt    string
		want    string
	}{
		{0, "bob+a@example.com", "450 4.7.1 Greylisted, please try again in 300 seconds"},
		{100 * time.Second, "bob+b@example.com", "450 4.7.1 Greylisted, please try again in 200 seconds"},
		{200 * time.Second, "bob@example.com", "DUNNO"},
	} {
		clk.Add(s.advance)
		r := req("", "eve@example.org", s.rcpt)
		d := Decide(r, inv, OptionsFrom(inv))
		if err := g.Apply(t.Context(), &r, &d); err != nil {
			t.Fatal(err)
		}
		if d.Reply != s.want {
			t.Errorf("%s: %q, want %q", s.rcpt, d.Reply, s.want)
		}
	}
}
