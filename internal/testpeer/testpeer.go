// Package testpeer decides what a test does when a real peer it needs
// (rspamd, clamd, chromium, python3-dkim, ...) is not installed.
//
// The full run fails: `make test` and CI install every peer (the Makefile's
// DEB_PACKAGES, .ci/run), so a missing one is a missing install step, and a
// skip there would turn a test green that never ran. Only `go test -short`,
// the quick run on a developer's machine, skips with the install hint.
package testpeer

import (
	"flag"
	"fmt"
)

// T is what Missing needs of a test or benchmark: testing.TB has it, and
// so have the small interfaces of the test helpers that the bench program
// links. This package does not import testing, so that program does not
// either.
type T interface {
	Helper()
	Skip(args ...any)
	Fatal(args ...any)
}

// Missing ends the test because a peer is not installed: Skip under -short,
// Fatal otherwise (and always outside `go test`, where there is no -short).
// The message should say how to install it.
func Missing(t T, format string, args ...any) {
	t.Helper()
	msg := fmt.Sprintf(format, args...)
	if short() {
		t.Skip(msg)
	}
	t.Fatal(msg + " (the full run needs every peer installed: make deps; go test -short skips this)")
}

// short reports whether `go test -short` runs this: the testing package
// registers the flag test.short in a test binary only.
func short() bool {
	f := flag.Lookup("test.short")
	return f != nil && f.Value.String() == "true"
}
