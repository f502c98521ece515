// Package test holds mailnode's end-to-end tests: each starts a real
// private Postfix + Dovecot (and the sidecars when enabled) from the files
// `mailnode render-config` wrote, talks SMTP to it and checks the exact
// replies and the delivered bytes. The package's TestMain runs everything
// inside a network namespace it creates; the building blocks live in
// package test/harness.
package test
