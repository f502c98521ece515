// Package harness starts real, private mail nodes for mailnode's
// end-to-end tests and for `make demo`: Postfix and Dovecot (and the
// policyd/milterd sidecars when asked) run from the files that the real
// `mailnode render-config` binary wrote from an inventory, on loopback
// ports, inside a network namespace, each node in its own directory tree.
//
// # Setting up a test package
//
// Every test package that starts nodes needs this TestMain (package test
// already has it, in main_test.go; add your tests there, e.g.
// test/policy_e2e_test.go):
//
//	func TestMain(m *testing.M) { harness.Main(m) }
//
// Main checks the prerequisites (root, the Debian packages, the vmail
// user) and fails loudly naming what is missing, builds cmd/mailnode once
// (set MAILNODE_BIN to use another binary), creates a fresh namespace
// with only loopback up and /etc/netns/NAME/resolv.conf = 127.0.0.1,
// re-runs the test binary inside it, and deletes the namespace afterwards.
// Nothing a test starts can reach an address off the machine, not even DNS
// (a test that needs DNS runs its own server on 127.0.0.1 and points
// node.resolver at it through Options.Edit). With -short, StartNode skips.
//
// # Starting a node
//
//	n := harness.StartNode(t, harness.Options{
//		Policy:   true,  // wire and start `mailnode policyd`
//		Milter:   true,  // wire and start `mailnode milterd`
//		DKIMKeys: true,  // create a key for every selector first
//		Edit: func(doc map[string]any) { // last changes to the inventory
//			harness.Set(doc, "policy.sender_login", "strict")
//		},
//	})
//
// StartNode copies the inventory (Options.Inventory, default
// examples/inventory.yaml) with every path moved into a private tree
// n.Dir (/tmp/mnXXXX: postfix/ config, queue/, data/, dovecot/, run/
// (Dovecot base_dir), vmail/ (Maildirs), spool/ (local(8) mailboxes),
// dkim/, state/, log/, tls/, srs.secret: forwarding.srs's secret, made
// unless Edit names an existing file, unbound-anchor/root.key:
// node.resolver_anchor_file, the root trust anchor an unbound started with
// the rendered unbound.conf keeps, seeded from dns-root-data's
// /usr/share/dns/root.key by SeedTrustAnchor) and every listener on a free
// 127.0.0.1 port; policy.enabled and milter.enabled are set explicitly from
// the options; relay domains get the in-process Sink as next hop; the
// sidecar sockets are unix:n.Dir/queue/private/mailnode-{policy,milter}
// (and milterd's SRS socketmap mailnode-srs beside them). The
// rewritten inventory is n.InventoryPath (loaded: n.Inv); the sidecars are
// started as `mailnode policyd|milterd --inventory n.InventoryPath`, log to
// n.DaemonLog(name) and must create their socket within 20 s. Everything
// stops in t.Cleanup; when the test failed, the mail log and Dovecot's log
// are printed. MAILNODE_KEEP=1 keeps the tree for a post-mortem.
//
// A null client (an inventory with node.role: nullclient, such as
// examples/nullclient.yaml; n.NullClient) starts Postfix and, with
// Options.Milter, milterd only: its smtpd on a bare port that its
// inet_interfaces (loopback-only) keeps on 127.0.0.1, no submission,
// Dovecot or policyd (Options.Policy is an error), and its relayhost the
// in-process Sink or Options.RelayNexthop unless Edit names another.
//
// A tier: StartTier starts several nodes from one inventory whose
// tier.nodes lists them all (mx<i+1>, the i-th address given), each node
// on its address (Options.ListenAddr; a non-loopback one such as
// 192.0.2.11 is added to lo) with render-config, policyd and milterd run
// with --node for its entry (Options.Node), signing with node 0's DKIM
// keys. What they share (policy.state in one Redis, or one behind the
// sentinels of statetest.StartReplicated) comes from Options.Edit.
//
// Trust: node.trusted_networks becomes TrustedClient/32 (127.0.0.2) plus
// the inventory's non-loopback networks, so a client from OutsideClient
// (127.0.0.1, the default source) is neither trusted nor authenticated and
// one bound to TrustedClient is a trust host. Options.TrustedNetworks
// overrides this.
//
// Addresses: n.SMTP (port-25 service), n.Submission (STARTTLS required,
// then AUTH PLAIN with the full address and the password of the example
// inventory: alicepass, bobpass, carolpass), n.IMAP, n.POP3; n.Hostname
// is node.hostname (unix users: root@n.Hostname). n.CertFile is the
// self-signed certificate Postfix and Dovecot present. With dovecot.sieve
// in the inventory, n.ManageSieve is Dovecot's ManageSieve service on a
// free port; with dovecot.spam_learning, a copy of the binary in n.Dir/bin
// (which the mail user can run) becomes dovecot.mailnode_path.
//
// # Talking SMTP
//
// Send runs one transaction and returns the exact reply of every stage:
//
//	tr, err := harness.Send(n.SMTP, harness.Envelope{
//		LocalAddr: harness.TrustedClient,           // optional source address
//		StartTLS:  true, AuthUser: "alice@example.com", AuthPass: "alicepass",
//		From:      "alice@example.com",
//		To:        []string{"x@outside.test"},
//		Data:      harness.NewMessage("alice@example.com", "x@outside.test", "subject", "body"),
//	})
//	tr.Rcpt[0].Text() // "550 5.7.1 <x@outside.test>: Recipient address rejected: ..."
//	tr.Rcpt[0].Code   // 550
//
// It stops where a real client would (failed EHLO/STARTTLS/AUTH/MAIL; no
// DATA without an accepted recipient; Data nil stops after RCPT). err is
// only for I/O and protocol errors. For anything else (pipelining, RSET,
// odd commands) use Dial and Client.Cmd, which also return Reply values.
//
// # Looking at deliveries
//
//	n.WaitMaildir(t, "alice@example.com", 1)  // []Mail, LMTP -> Maildir (vmail/<domain>/<user>)
//	n.WaitFolder(t, "bob@example.com", "Junk", 1) // a folder of it (Maildir++: .Junk)
//	n.WaitSpool(t, "root", 1)                 // local(8) mbox in spool/, split per message
//	n.WaitSink(t, 1)                          // []Message at the relay next hop (envelope + bytes)
//	n.WaitLog(t, "status=sent")               // poll the Postfix mail log
//	n.MailLog(), n.DaemonLog("policyd")
//
// The Wait helpers poll (no fixed sleeps) for up to DeliveryTimeout and
// fail the test with the mail log. Stored messages have LF line ends; LF
// converts a sent message for comparison.
//
// # Mailboxes as their users see them
//
//	n.IMAPSession("bob@example.com", "bobpass", "subscribed", "count Junk", "move INBOX Junk lunch")
//	n.PutSieveScript("bob@example.com", "bobpass", "mine", script)
//
// IMAPSession runs python3's imaplib (STARTTLS, LOGIN) and returns one
// result line per operation ("SUBSCRIBED Junk", "COUNT Junk 1", "MOVED
// INBOX Junk 1"); PutSieveScript uploads and activates a user's script
// over ManageSieve (STARTTLS, AUTHENTICATE PLAIN).
//
// # Outside tests
//
// Start/Stop and StopDir are the same machinery without testing.T; the
// demo (test/cmd/demo) uses them with a fixed Dir, fixed Ports and a Sink
// in its own process (Options.RelayNexthop). CreateNetns/DeleteNetns manage
// a named namespace.
package harness
