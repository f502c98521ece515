package inventory

import (
	"path"
	"strings"
)

// SRS (forwarding.srs): milterd rewrites the envelope sender of mail an
// alias or list forwards off the node, and answers Postfix, over a
// socketmap in virtual_alias_maps, which SRS addresses of the local
// domains stand for which original senders.

// DefaultSRSSecretFile is forwarding.srs_secret_file's default.
const DefaultSRSSecretFile = "/etc/mailnode/srs.secret"

// SRSSocketName is the name of the socketmap socket milterd serves the
// SRS reversal on, in the directory of milter.listen's socket.
const SRSSocketName = "mailnode-srs"

// SRSMapName is the socketmap name Postfix asks the reversal under.
const SRSMapName = "reverse"

func (inv *Inventory) applySRSDefaults() {
	if strings.TrimSpace(inv.Forwarding.SRSSecretFile) == "" {
		inv.Forwarding.SRSSecretFile = DefaultSRSSecretFile
	}
}

func (inv *Inventory) checkSRS(v *validator) {
	f := inv.Forwarding.SRSSecretFile
	if !strings.HasPrefix(f, "/") {
		v.add([]any{"forwarding", "srs_secret_file"}, "%q must be an absolute path", f)
		return
	}
	checkPath(v, []any{"forwarding", "srs_secret_file"}, f)
}

// SRSActive reports whether the node rewrites forwarded mail's envelope
// sender: forwarding.srs (default true) on a mail node whose milterd is
// wired (milter.enabled). A null client forwards nothing; without milterd
// nothing would rewrite or reverse.
func (inv *Inventory) SRSActive() bool {
	return inv.Forwarding.SRSOn() && inv.MilterEnabled() && !inv.NullClient()
}

// SRSSocket is the unix socket milterd serves the SRS reversal on and
// Postfix's virtual_alias_maps asks: mailnode-srs beside milter.listen's
// socket (a directory milterd can write to), or under the queue
// directory's private/ when milter.listen is TCP.
func (inv *Inventory) SRSSocket() string { return inv.SRSSocketBeside(inv.Milter.Listen) }

// SRSSocketBeside is SRSSocket for milterd listening at listen (its
// --listen, which tests and benchmarks set) instead of milter.listen.
func (inv *Inventory) SRSSocketBeside(listen string) string {
	if p, ok := strings.CutPrefix(listen, "unix:"); ok && strings.HasPrefix(p, "/") {
		return path.Join(path.Dir(path.Clean(p)), SRSSocketName)
	}
	return path.Join(inv.Postfix.QueueDirectory, "private", SRSSocketName)
}
