package acl

import (
	"testing"

	"github.com/mailnode/mailnode/inventory"
)

// TestSpamCheckMatrix: spam checking is on for exactly one cell.
func TestSpamCheckMatrix(t *testing.T) {
	classes := []inventory.Class{inventory.Local, inventory.Relay, inventory.Outside}
	auths := []inventory.Auth{inventory.AuthNone, inventory.AuthSASL, inventory.AuthTrust}
	on := 0
	for _, s := range classes {
		for _, a := range auths {
			for _, r := range classes {
				c := Cell{Sender: s, Auth: a, Recipient: r}
				if SpamCheck(c) {
					on++
					if c.String() != "outside/none->local" {
						t.Errorf("spam check on for %s", c)
					}
				}
			}
		}
	}
	if on != 1 {
		t.Errorf("spam check on for %d cells, want 1", on)
	}
}

// TestSpamCheckAny: a message is checked exactly when one of its cells is.
func TestSpamCheckAny(t *testing.T) {
	classes := []inventory.Class{inventory.Local, inventory.Relay, inventory.Outside}
	auths := []inventory.Auth{inventory.AuthNone, inventory.AuthSASL, inventory.AuthTrust}
	for _, s := range classes {
		for _, a := range auths {
			for set := uint8(0); set < 1<<3; set++ {
				want := false
				for _, r := range classes {
					if set&(1<<r) != 0 && SpamCheck(Cell{Sender: s, Auth: a, Recipient: r}) {
						want = true
					}
				}
				if got := SpamCheckAny(s, a, set); got != want {
					t.Errorf("sender %s auth %s recipients %03b: %v, want %v", s, a, set, got, want)
				}
			}
		}
	}
}

func TestNullSender(t *testing.T) {
	for s, want := range map[string]bool{"": true, "<>": true, " <> ": true, "\t": true, "a@b": false, "<a@b>": false, "<": false} {
		if IsNullSender(s) != want {
			t.Errorf("IsNullSender(%q) = %v", s, !want)
		}
	}
	if NullSenderClass(inventory.AuthNone) != inventory.Outside ||
		NullSenderClass(inventory.AuthSASL) != inventory.Local || NullSenderClass(inventory.AuthTrust) != inventory.Local {
		t.Error("the null sender is outside without authorization, local with it")
	}
}

func TestCellString(t *testing.T) {
	if s := (Cell{Sender: inventory.Relay, Auth: inventory.AuthTrust, Recipient: inventory.Outside}).String(); s != "relay/trust->outside" {
		t.Errorf("cell %q", s)
	}
}
