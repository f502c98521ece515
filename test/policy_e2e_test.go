package test

import (
	"fmt"
	"net"
	"strings"
	"sync"
	"testing"

	"github.com/mailnode/mailnode/test/harness"
)

// The ACL matrix of docs/design.md through a real Postfix with policyd wired
// first in smtpd_relay_restrictions, driven by a real SMTP client:
// untrusted clients from harness.OutsideClient (127.0.0.1) on port 25,
// trust hosts from harness.TrustedClient (127.0.0.2) on port 25, and SASL
// users on the submission port after STARTTLS, authenticated by the real
// Dovecot. Every assertion is on the exact reply to RCPT.

// policySession is how a client reaches the node: none, trust or auth.
type policySession string

const (
	viaNone  policySession = "none"
	viaTrust policySession = "trust"
	viaAuth  policySession = "auth"
)

const (
	e2eLocalSender   = "alice@example.com" // alice logs in on submission
	e2eRelaySender   = "carol@partner.org"
	e2eOutsideSender = "eve@outside.test"
	e2eLocalRcpt     = "bob@example.com"
	e2eRelayRcpt     = "dave@partner.org"
	e2eOutsideRcpt   = "frank@outside.test"

	accepted          = "250 2.1.5 Ok"
	pleaseAuth        = "550 5.7.1 Please authenticate for send mail from domain <example.com>"
	ownServiceRelay   = "550 5.7.1 Please use own mail service for send mail from <carol@partner.org>"
	ownServiceOutside = "550 5.7.1 Please use own mail service for send mail from <eve@outside.test>"
	noRelay           = "550 5.7.1 Sorry, relay for <frank@outside.test> not permitted"
	listOnly          = "550 5.7.1 Sorry, <all-staff@example.com> accepts mail from internal senders only"
)

type e2eCase struct {
	name    string
	via     policySession
	from    string
	rcpt    string
	want    string // the exact RCPT reply
	prefix  bool   // want is a prefix (Postfix's own replies carry more text)
	authAs  string // SASL login for viaAuth; default alice
	authPwd string
}

// matrixE2E are the 27 cells, written out as docs/design.md has them.
var matrixE2E = []e2eCase{
	{name: "outside/none->local", via: viaNone, from: e2eOutsideSender, rcpt: e2eLocalRcpt, want: accepted},
	{name: "outside/none->relay", via: viaNone, from: e2eOutsideSender, rcpt: e2eRelayRcpt, want: accepted},
	{name: "outside/none->outside", via: viaNone, from: e2eOutsideSender, rcpt: e2eOutsideRcpt, want: noRelay},
	{name: "local/none->local", via: viaNone, from: e2eLocalSender, rcpt: e2eLocalRcpt, want: pleaseAuth},
	{name: "local/none->relay", via: viaNone, from: e2eLocalSender, rcpt: e2eRelayRcpt, want: pleaseAuth},
	{name: "local/none->outside", via: viaNone, from: e2eLocalSender, rcpt: e2eOutsideRcpt, want: pleaseAuth},
	{name: "relay/none->local", via: viaNone, from: e2eRelaySender, rcpt: e2eLocalRcpt, want: ownServiceRelay},
	{name: "relay/none->relay", via: viaNone, from: e2eRelaySender, rcpt: e2eRelayRcpt, want: ownServiceRelay},
	{name: "relay/none->outside", via: viaNone, from: e2eRelaySender, rcpt: e2eOutsideRcpt, want: ownServiceRelay},

	{name: "local/auth->local", via: viaAuth, from: e2eLocalSender, rcpt: e2eLocalRcpt, want: accepted},
	{name: "local/auth->relay", via: viaAuth, from: e2eLocalSender, rcpt: e2eRelayRcpt, want: accepted},
	{name: "local/auth->outside", via: viaAuth, from: e2eLocalSender, rcpt: e2eOutsideRcpt, want: accepted},
	{name: "outside/auth->local", via: viaAuth, from: e2eOutsideSender, rcpt: e2eLocalRcpt, want: ownServiceOutside},
	{name: "outside/auth->relay", via: viaAuth, from: e2eOutsideSender, rcpt: e2eRelayRcpt, want: ownServiceOutside},
	{name: "outside/auth->outside", via: viaAuth, from: e2eOutsideSender, rcpt: e2eOutsideRcpt, want: ownServiceOutside},
	{name: "relay/auth->local", via: viaAuth, from: e2eRelaySender, rcpt: e2eLocalRcpt, want: ownServiceRelay},
	{name: "relay/auth->relay", via: viaAuth, from: e2eRelaySender, rcpt: e2eRelayRcpt, want: ownServiceRelay},
	{name: "relay/auth->outside", via: viaAuth, from: e2eRelaySender, rcpt: e2eOutsideRcpt, want: ownServiceRelay},

	{name: "local/trust->local", via: viaTrust, from: e2eLocalSender, rcpt: e2eLocalRcpt, want: accepted},
	{name: "local/trust->relay", via: viaTrust, from: e2eLocalSender, rcpt: e2eRelayRcpt, want: accepted},
	{name: "local/trust->outside", via: viaTrust, from: e2eLocalSender, rcpt: e2eOutsideRcpt, want: accepted},
	{name: "outside/trust->local", via: viaTrust, from: e2eOutsideSender, rcpt: e2eLocalRcpt, want: ownServiceOutside},
	{name: "outside/trust->relay", via: viaTrust, from: e2eOutsideSender, rcpt: e2eRelayRcpt, want: ownServiceOutside},
	{name: "outside/trust->outside", via: viaTrust, from: e2eOutsideSender, rcpt: e2eOutsideRcpt, want: ownServiceOutside},
	{name: "relay/trust->local", via: viaTrust, from: e2eRelaySender, rcpt: e2eLocalRcpt, want: ownServiceRelay},
	{name: "relay/trust->relay", via: viaTrust, from: e2eRelaySender, rcpt: e2eRelayRcpt, want: ownServiceRelay},
	{name: "relay/trust->outside", via: viaTrust, from: e2eRelaySender, rcpt: e2eOutsideRcpt, want: ownServiceRelay},
}

// moreE2E: internal lists, the null sender, unknown users, unix users and
// the normalisation of case, trailing dots and sub-domains.
var moreE2E = []e2eCase{
	{name: "list from outside", via: viaNone, from: e2eOutsideSender, rcpt: "all-staff@example.com", want: listOnly},
	{name: "list from the null sender", via: viaNone, from: "", rcpt: "all-staff@example.com", want: listOnly},
	{name: "list from an unauthenticated local sender", via: viaNone, from: e2eLocalSender, rcpt: "all-staff@example.com", want: pleaseAuth},
	{name: "list from an authenticated user", via: viaAuth, from: e2eLocalSender, rcpt: "all-staff@example.com", want: accepted},
	{name: "list from a trust host", via: viaTrust, from: "bob@example.com", rcpt: "all-staff@example.com", want: accepted},
	{name: "list from a relay sender on a trust host", via: viaTrust, from: e2eRelaySender, rcpt: "all-staff@example.com", want: ownServiceRelay},
	{name: "alias from outside", via: viaNone, from: e2eOutsideSender, rcpt: "sales@example.com", want: accepted},

	{name: "null sender to local", via: viaNone, from: "", rcpt: e2eLocalRcpt, want: accepted},
	{name: "null sender to outside", via: viaNone, from: "", rcpt: e2eOutsideRcpt, want: noRelay},
	{name: "null sender from a trust host to outside", via: viaTrust, from: "", rcpt: e2eOutsideRcpt, want: accepted},
	{name: "null sender authenticated to outside", via: viaAuth, from: "", rcpt: e2eOutsideRcpt, want: accepted},

	{name: "unknown user from outside", via: viaNone, from: e2eOutsideSender, rcpt: "nobody@example.com",
		want: "550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown", prefix: true},
	{name: "unknown user, authenticated", via: viaAuth, from: e2eLocalSender, rcpt: "nobody@example.com",
		want: "550 5.1.1 <nobody@example.com>: Recipient address rejected: User unknown", prefix: true},
	{name: "unknown user, unauthenticated local sender", via: viaNone, from: e2eLocalSender, rcpt: "nobody@example.com", want: pleaseAuth},
	{name: "unix user at the host name", via: viaNone, from: e2eOutsideSender, rcpt: "root@mx1.example.com", want: accepted},
	{name: "the host name as a local sender", via: viaNone, from: "root@mx1.example.com", rcpt: e2eOutsideRcpt,
		want: "550 5.7.1 Please authenticate for send mail from domain <mx1.example.com>"},

	{name: "upper-case local sender", via: viaNone, from: "ALICE@Example.COM", rcpt: e2eOutsideRcpt, want: pleaseAuth},
	{name: "upper-case recipient", via: viaNone, from: e2eOutsideSender, rcpt: "BOB@EXAMPLE.COM", want: accepted},
	{name: "upper-case relay sender echoed as sent", via: viaNone, from: "Carol@PARTNER.org", rcpt: e2eLocalRcpt,
		want: "550 5.7.1 Please use own mail service for send mail from <Carol@PARTNER.org>"},
	{name: "trailing-dot local sender", via: viaNone, from: "alice@example.com.", rcpt: e2eOutsideRcpt, want: pleaseAuth},
	{name: "sub-domain of a local domain is outside", via: viaNone, from: e2eOutsideSender, rcpt: "x@sub.example.com",
		want: "550 5.7.1 Sorry, relay for <x@sub.example.com> not permitted"},
	{name: "sub-domain of a relay domain is outside", via: viaNone, from: e2eOutsideSender, rcpt: "x@mx.partner.org",
		want: "550 5.7.1 Sorry, relay for <x@mx.partner.org> not permitted"},
	{name: "local domain as a suffix is outside", via: viaNone, from: e2eOutsideSender, rcpt: "x@notexample.com",
		want: "550 5.7.1 Sorry, relay for <x@notexample.com> not permitted"},
	{name: "sub-domain sender, authenticated", via: viaAuth, from: "alice@sub.example.com", rcpt: e2eOutsideRcpt,
		want: "550 5.7.1 Please use own mail service for send mail from <alice@sub.example.com>"},
	{name: "another local domain, authenticated", via: viaAuth, from: "carol@example.net", rcpt: e2eOutsideRcpt, want: accepted},
}

// runE2E sends MAIL and one RCPT the way the case says and returns the
// reply to RCPT.
func runE2E(t *testing.T, n *harness.Node, c e2eCase) harness.Reply {
	t.Helper()
	r, err := rcptReply(n, c)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func rcptReply(n *harness.Node, c e2eCase) (harness.Reply, error) {
	env := harness.Envelope{From: c.from, To: []string{c.rcpt}}
	addr := n.SMTP
	switch c.via {
	case viaNone:
		env.LocalAddr = harness.OutsideClient
	case viaTrust:
		env.LocalAddr = harness.TrustedClient
	case viaAuth:
		addr = n.Submission
		env.LocalAddr = harness.OutsideClient
		env.StartTLS = true
		env.AuthUser, env.AuthPass = c.authAs, c.authPwd
		if env.AuthUser == "" {
			env.AuthUser, env.AuthPass = "alice@example.com", "alicepass"
		}
	}
	tr, err := harness.Send(addr, env)
	switch {
	case err != nil:
		return harness.Reply{}, fmt.Errorf("SMTP session: %v (transcript %+v)", err, tr)
	case c.via == viaAuth && tr.Auth.Code != 235:
		return harness.Reply{}, fmt.Errorf("AUTH as %s: %q", env.AuthUser, tr.Auth.Text())
	case tr.Mail.Code != 250:
		return harness.Reply{}, fmt.Errorf("MAIL FROM:<%s>: %q", c.from, tr.Mail.Text())
	case len(tr.Rcpt) != 1:
		return harness.Reply{}, fmt.Errorf("no reply to RCPT: %+v", tr)
	}
	return tr.Rcpt[0], nil
}

// smtpReply is the reply the client must see for a case. Postfix frames
// every reject a policy service returns as an access-table result:
// "550 5.7.1 <rcpt>: Recipient address rejected: " and then policyd's text
// (smtpd_check.c, check_table_result; stock Postfix has no option to drop
// the frame). Code, enhanced code and text are policyd's, exactly.
func smtpReply(c e2eCase) string {
	if text, ok := strings.CutPrefix(c.want, "550 5.7.1 "); ok && !c.prefix {
		return "550 5.7.1 <" + c.rcpt + ">: Recipient address rejected: " + text
	}
	return c.want
}

func checkE2E(t *testing.T, n *harness.Node, c e2eCase) {
	t.Helper()
	got, want := runE2E(t, n, c).Text(), smtpReply(c)
	if c.prefix && !strings.HasPrefix(got, want) || !c.prefix && got != want {
		t.Errorf("MAIL FROM:<%s> RCPT TO:<%s> via %s:\n got  %q\n want %q", c.from, c.rcpt, c.via, got, want)
	}
}

func TestPolicyMatrixEndToEnd(t *testing.T) {
	// The matrix alone: greylisting (on in the example inventory) would
	// defer its inbound cells; test/greylist_e2e_test.go covers it.
	n := harness.StartNode(t, harness.Options{Policy: true, Edit: func(doc map[string]any) {
		harness.Set(doc, "policy.greylist.enabled", false)
	}})
	if len(matrixE2E) != 27 {
		t.Fatalf("%d matrix cases, want 27", len(matrixE2E))
	}
	t.Run("matrix", func(t *testing.T) {
		for _, c := range matrixE2E {
			t.Run(strings.ReplaceAll(c.name, "/", "_"), func(t *testing.T) { checkE2E(t, n, c) })
		}
	})
	t.Run("lists, null sender, unknown users, normalisation", func(t *testing.T) {
		for _, c := range moreE2E {
			t.Run(c.name, func(t *testing.T) { checkE2E(t, n, c) })
		}
	})
	t.Run("policyd's mail log names the cells", func(t *testing.T) {
		waitDaemonLog(t, n, "policyd", []string{
			"from=<eve@outside.test> to=<frank@outside.test> state=RCPT cell=outside/none->outside",
			`action="550 5.7.1 Sorry, relay for <frank@outside.test> not permitted" reason=relay-denied`,
			"sasl_user=alice@example.com from=<alice@example.com> to=<frank@outside.test> state=RCPT cell=local/auth->outside",
			"cell=local/trust->outside",
			"action=DUNNO reason=inbound spam_check=on",
		})
	})

	// A dead policyd: Postfix applies default_action=451 4.3.5 to every
	// recipient; nothing is accepted, so nothing can be relayed.
	// Postfix retries the policy service once, a second later
	// (smtpd_policy_service_try_limit, _retry_delay), so each RCPT takes
	// about a second: the sessions run in parallel.
	t.Run("policyd stopped: 451 4.3.5 and no relay", func(t *testing.T) {
		stopPolicyd(t, n)
		sinkBefore := len(n.Sink.Messages())
		cases := append(append([]e2eCase{}, matrixE2E...), moreE2E...)
		replies := make([]harness.Reply, len(cases))
		errs := make([]error, len(cases))
		var wg sync.WaitGroup
		for i, c := range cases {
			wg.Add(1)
			go func() {
				defer wg.Done()
				replies[i], errs[i] = rcptReply(n, c)
			}()
		}
		wg.Wait()
		t.Logf("with policyd down, e.g. %s -> %s: %q", cases[2].from, cases[2].rcpt, replies[2].Text())
		for i, c := range cases {
			t.Run(strings.ReplaceAll(c.name, "/", "_"), func(t *testing.T) {
				if errs[i] != nil {
					t.Fatal(errs[i])
				}
				if got := replies[i].Text(); !strings.HasPrefix(got, "451 4.3.5 ") {
					t.Errorf("MAIL FROM:<%s> RCPT TO:<%s> via %s: got %q, want 451 4.3.5", c.from, c.rcpt, c.via, got)
				}
			})
		}
		// Whole messages, to outside and to the relay domain's next hop: none is taken.
		for _, to := range []string{e2eOutsideRcpt, e2eRelayRcpt} {
			msg := harness.NewMessage(e2eOutsideSender, to, "relay?", "must not pass")
			tr, err := harness.Send(n.SMTP, harness.Envelope{LocalAddr: harness.OutsideClient, From: e2eOutsideSender, To: []string{to}, Data: msg})
			if err != nil {
				t.Fatal(err)
			}
			if tr.DataCmd.Code != 0 || tr.Final.Code != 0 {
				t.Errorf("message to %s reached DATA: %q / %q", to, tr.DataCmd.Text(), tr.Final.Text())
			}
		}
		if got := len(n.Sink.Messages()); got != sinkBefore {
			t.Errorf("the next hop received %d messages while policyd was down", got-sinkBefore)
		}
		// Postfix's log lines arrive through postlogd, a moment after the
		// reply the client saw.
		n.WaitLog(t, "mailnode-policy")
	})
}

// TestPolicySenderLoginStrictEndToEnd: with policy.sender_login: strict an
// authenticated user sends only as its own mailbox and aliases.
func TestPolicySenderLoginStrictEndToEnd(t *testing.T) {
	n := harness.StartNode(t, harness.Options{Policy: true, Edit: func(doc map[string]any) {
		harness.Set(doc, "policy.sender_login", "strict")
	}})
	for _, c := range []e2eCase{
		{name: "own mailbox", via: viaAuth, from: "alice@example.com", rcpt: e2eOutsideRcpt, want: accepted},
		{name: "own alias", via: viaAuth, from: "a.smith@example.com", rcpt: e2eOutsideRcpt, want: accepted},
		{name: "own mailbox, other case", via: viaAuth, from: "Alice@EXAMPLE.com", rcpt: e2eOutsideRcpt, want: accepted},
		{name: "another user's mailbox", via: viaAuth, from: "bob@example.com", rcpt: e2eOutsideRcpt,
			want: "550 5.7.1 Please use own mail service for send mail from <bob@example.com>"},
		{name: "an alias of several mailboxes", via: viaAuth, from: "sales@example.com", rcpt: e2eLocalRcpt,
			want: "550 5.7.1 Please use own mail service for send mail from <sales@example.com>"},
		{name: "another local domain", via: viaAuth, from: "carol@example.net", rcpt: e2eOutsideRcpt,
			want: "550 5.7.1 Please use own mail service for send mail from <carol@example.net>"},
		{name: "bob as himself", via: viaAuth, authAs: "bob@example.com", authPwd: "bobpass", from: "bob@example.com", rcpt: e2eOutsideRcpt, want: accepted},
		{name: "a trust host keeps the domain rule", via: viaTrust, from: "bob@example.com", rcpt: e2eOutsideRcpt, want: accepted},
	} {
		t.Run(c.name, func(t *testing.T) { checkE2E(t, n, c) })
	}
}

// stopPolicyd stops the node's policyd (SIGTERM, as a service manager
// would) and waits until its socket no longer answers.
func stopPolicyd(t *testing.T, n *harness.Node) {
	t.Helper()
	// SIGTERM, and wait for the process to exit (SIGKILL after 10s, which
	// the log check below would show).
	if err := n.StopDaemon("policyd"); err != nil {
		t.Fatalf("stopping policyd: %v", err)
	}
	sock := strings.TrimPrefix(n.Inv.Policy.Listen, "unix:")
	if c, err := net.Dial("unix", sock); err == nil {
		c.Close()
		t.Fatalf("policyd still answers on %s after it exited", sock)
	}
	if log := n.DaemonLog("policyd"); !strings.Contains(log, "policyd: stopped") {
		t.Errorf("policyd did not log a clean stop:\n%s", log)
	}
}
