// Package spamtest holds test helpers for the spam gate: an in-process DNS
// server that serves test zones on loopback, and starters for the real
// rspamd and spamd (Debian packages) in a private directory, meant to run
// inside a network namespace with only loopback up (see Main), so that
// nothing a test starts can reach off the machine.
package spamtest

import (
	"testing"

	"github.com/mailnode/mailnode/dns/dnstest"
)

// DNS is the project's one in-process authoritative test server (package
// dnstest): NXDOMAIN for a name it does not know, NODATA for a known name
// without records of the type asked; names can be made to fail (Fail) or
// to go unanswered (Drop); Queries counts the questions.
type DNS = dnstest.Server

// StartDNS serves zone (master file text with absolute names, one record a
// line, e.g. "sender.test. 300 IN TXT \"v=spf1 ip4:127.0.0.1 -all\""; the
// TTL is 3600 where none is given) on a free loopback port until the test
// ends.
// The server is made authoritative for the whole tree (a root SOA), so a
// name outside the test zone is NXDOMAIN rather than REFUSED.
func StartDNS(t testing.TB, zone string) *DNS {
	return dnstest.Start(t, ". 3600 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 60\n"+zone)
}
