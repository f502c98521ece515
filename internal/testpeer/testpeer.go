// Package testpeer decides what a test does when a real peer it needs
// (rspamd, clamd, chromium, python3-dkim, ...) is not installed.
//
// The full run fails: `make test` and CI install every peer (the Makefile's
// DEB_PACKAGES, .ci/run), so a missing one is a missing install step, and a
// skip there would turn a test green that never ran. Only `go test -short`,
// the quick run on a developer's machine, skips with the install hint.
package testpeer

import (
	"fmt"
	"testing"
)

// Missing ends the test because a peer is not installed: Skip under -short,
// Fatal otherwise. The message should say how to install it.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if testing.Short() {
		t.Skip(msg)
	}
	t.Fatal(msg + " (the full run needs every peer installed: make deps; go test -short skips this)")
}
