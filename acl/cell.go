package acl

import (
	"strings"

	"github.com/mailnode/mailnode/inventory"
)

// Cell is one cell of the ACL matrix: who sends, to whom, how authorized.
type Cell struct {
	Sender    inventory.Class
	Auth      inventory.Auth
	Recipient inventory.Class
}

// String names the cell as the mail log and metrics do: "outside/none->local".
func (c Cell) String() string {
	return c.Sender.String() + "/" + c.Auth.String() + "->" + c.Recipient.String()
}

// SpamCheck tells milterd whether the matrix turns spam checking on for a
// cell: only for mail from an outside sender, neither authenticated nor
// trusted, to a local domain. Everything else that is accepted passes the
// spam engine untouched.
func SpamCheck(c Cell) bool {
	return c.Sender == inventory.Outside && c.Auth == inventory.AuthNone && c.Recipient == inventory.Local
}

// SpamCheckAny applies SpamCheck to every cell a message touches: the
// sender's class and authorization with each recipient class present
// (rcptClasses has bit 1<<class set for each inventory.Class among the
// recipients). One copy of the message goes to everyone, so milterd checks
// it when any of its cells says so.
func SpamCheckAny(sender inventory.Class, auth inventory.Auth, rcptClasses uint8) bool {
	for _, rc := range []inventory.Class{inventory.Local, inventory.Relay, inventory.Outside} {
		if rcptClasses&(1<<rc) != 0 && SpamCheck(Cell{Sender: sender, Auth: auth, Recipient: rc}) {
			return true
		}
	}
	return false
}

// IsNullSender tells whether an envelope sender is the null sender: empty
// or "<>", surrounding white space ignored.
func IsNullSender(s string) bool {
	s = strings.TrimSpace(s)
	return s == "" || s == "<>"
}

// NullSenderClass is the matrix's class of the null sender: local for an
// authorized session, outside otherwise.
func NullSenderClass(auth inventory.Auth) inventory.Class {
	if auth == inventory.AuthNone {
		return inventory.Outside
	}
	return inventory.Local
}
