package inventory

import (
	"crypto/sha256"
	"encoding/hex"
)

// Digest names one inventory: "sha256:" and the hex SHA-256 of the file's
// bytes as read, not of a normalized form. Any byte changed (a comment, the
// order of keys) is a new digest: the check it serves, "does the installed
// Postfix config come from the inventory the daemons run?", then never
// misses a change, and the cure for a false alarm is cheap (render again:
// the same files come out). A normalized form would hang on every
// encoding detail of the parser.
func Digest(data []byte) string {
	sum := sha256.Sum256(data)
	return "sha256:" + hex.EncodeToString(sum[:])
}
