package test

import (
	"bytes"
	"net/mail"
	"slices"
	"strings"
	"testing"

	"github.com/mailnode/mailnode/arc"
	"github.com/mailnode/mailnode/spam"
	"github.com/mailnode/mailnode/spam/spamtest"
	"github.com/mailnode/mailnode/test/harness"
)

// The spam gate end to end: a real Postfix with policyd and milterd, DNS
// answered by an in-process server (node.resolver points at it), and in
// turn the builtin checks, the real rspamd and the real spamd, started by
// the test inside the namespace. Outside mail leaves through the relay
// sink (postfix.relayhost), so the test sees what would leave the node.

// spamE2EZone: sender.test publishes SPF for the loopback clients and a
// DMARC reject policy; 127.0.0.66 is listed in bl.test.
const spamE2EZone = `
sender.test.          IN TXT "v=spf1 ip4:127.0.0.0/8 -all"
_dmarc.sender.test.   IN TXT "v=DMARC1; p=reject"
sender.test.          IN MX 10 mx.sender.test.
mx.sender.test.       IN A 127.0.0.1
66.0.0.127.bl.test.   IN A 127.0.0.2
`

// listedClient is the source address listed in bl.test.
const listedClient = "127.0.0.66"

func spamE2ENode(t *testing.T, dnsAddr string, settings map[string]any) *harness.Node {
	t.Helper()
	return spamE2ENodeWith(t, dnsAddr, settings, nil)
}

// spamE2ENodeWith is spamE2ENode with a further change to the inventory
// (edit may be nil).
func spamE2ENodeWith(t *testing.T, dnsAddr string, settings map[string]any, edit func(doc map[string]any)) *harness.Node {
	t.Helper()
	return harness.StartNode(t, harness.Options{Policy: true, Milter: true, DKIMKeys: true, Edit: func(doc map[string]any) {
		if edit != nil {
			defer edit(doc)
		}
		harness.Set(doc, "policy.greylist.enabled", false) // policyd's business, tested there
		harness.Set(doc, "node.resolver", dnsAddr)
		for k, v := range settings {
			if !strings.Contains(k, ".") {
				k = "spam." + k // a field of spam; a dotted key is a path of its own
			}
			harness.Set(doc, k, v)
		}
		// Mail to outside goes to the same sink as the relay domains.
		if ds, ok := doc["domains"].([]any); ok {
			for _, d := range ds {
				if m, ok := d.(map[string]any); ok && m["class"] == "relay" {
					harness.Set(doc, "postfix.relayhost", m["nexthop"])
				}
			}
		}
	}})
}

func gtubeMessage(from, to string) []byte {
	return harness.NewMessage(from, to, "test", "This is the GTUBE, the\r\n"+spam.GTUBE+"\r\n")
}

// spamSend sends one message from outside (source address src, "" for
// the default OutsideClient) and returns the final reply to DATA.
func spamSend(t *testing.T, n *harness.Node, src, from, to string, msg []byte) harness.Reply {
	t.Helper()
	tr, err := harness.Send(n.SMTP, harness.Envelope{LocalAddr: src, Helo: "mx.sender.test", From: from, To: []string{to}, Data: msg})
	if err != nil {
		t.Fatalf("send %s -> %s: %v", from, to, err)
	}
	if len(tr.Rcpt) != 1 || tr.Rcpt[0].Code != 250 {
		t.Fatalf("send %s -> %s: RCPT %v", from, to, tr.Rcpt)
	}
	return tr.Final
}

// spamHeaders returns the header block of a stored or transmitted message.
func spamHeaders(t *testing.T, raw []byte) mail.Header {
	t.Helper()
	m, err := mail.ReadMessage(bytes.NewReader(harness.LF(raw)))
	if err != nil {
		t.Fatalf("delivered message: %v\n%s", err, raw)
	}
	return m.Header
}

// wantUntouched checks that a message passed the spam gate untouched: no
// X-Spam field, no tag, no Authentication-Results of ours.
func wantUntouched(t *testing.T, n *harness.Node, raw []byte) {
	t.Helper()
	h := spamHeaders(t, raw)
	for k := range h {
		if strings.HasPrefix(strings.ToLower(k), "x-spam") {
			t.Errorf("spam check off, but %s: %s", k, h.Get(k))
		}
	}
	for _, ar := range h["Authentication-Results"] {
		if strings.HasPrefix(strings.ToLower(strings.TrimSpace(ar)), strings.ToLower(n.Hostname)) {
			t.Errorf("spam check off, but Authentication-Results: %s", ar)
		}
	}
	if s := h.Get("Subject"); s != "test" {
		t.Errorf("Subject %q changed", s)
	}
}

// wantChecked checks the headers of a delivered, checked message and
// returns them.
func wantChecked(t *testing.T, n *harness.Node, raw []byte, statusPrefix string) mail.Header {
	t.Helper()
	h := spamHeaders(t, raw)
	ar := strings.Join(strings.Fields(h.Get("Authentication-Results")), " ")
	if !strings.HasPrefix(ar, n.Hostname+"; spf=pass smtp.mailfrom=x@sender.test; dkim=none; dmarc=pass header.from=sender.test") {
		t.Errorf("Authentication-Results: %q", ar)
	}
	if len(h["Authentication-Results"]) != 1 {
		t.Errorf("%d Authentication-Results fields", len(h["Authentication-Results"]))
	}
	if h.Get("X-Spam-Score") == "" || !strings.HasPrefix(strings.Join(strings.Fields(h.Get("X-Spam-Status")), " "), statusPrefix) {
		t.Errorf("X-Spam-Score %q, X-Spam-Status %q, want prefix %q", h.Get("X-Spam-Score"), h.Get("X-Spam-Status"), statusPrefix)
	}
	wantOnTop(t, raw)
	return h
}

// wantOnTop checks where Postfix put milterd's fields: together, in the
// order Authentication-Results, X-Spam-Score, X-Spam-Status,
// X-Spam-Symbols, right above Postfix's own Received field (RFC 8601 puts
// Authentication-Results at the top of the header the MTA received).
func wantOnTop(t *testing.T, raw []byte) {
	t.Helper()
	hs, _ := arc.SplitMessage(raw)
	var names []string
	for _, h := range hs {
		names = append(names, strings.TrimSpace(h.Name))
	}
	want := []string{"Authentication-Results", "X-Spam-Score", "X-Spam-Status", "X-Spam-Symbols", "Received"}
	i := slices.Index(names, want[0])
	if i < 0 || len(names) < i+len(want) || !slices.Equal(names[i:i+len(want)], want) {
		t.Errorf("delivered header fields %v, want %v together in that order", names, want)
	}
}

func TestSpamE2EBuiltin(t *testing.T) {
	d := spamtest.StartDNS(t, spamE2EZone)
	n := spamE2ENode(t, d.Addr, map[string]any{"engine": "builtin", "dnsbl": []any{"bl.test"}})

	// GTUBE from outside to a local mailbox: 550 at the end of DATA.
	if r := spamSend(t, n, "", "x@sender.test", "alice@example.com", gtubeMessage("x@sender.test", "alice@example.com")); r.Code != 550 || !strings.Contains(r.Text(), "5.7.1 Message rejected as spam") {
		t.Errorf("GTUBE outside -> local: %v", r)
	}

	// The same GTUBE from an authenticated local user to outside: accepted
	// and leaves without spam headers.
	tr, err := harness.Send(n.Submission, harness.Envelope{StartTLS: true, AuthUser: "alice@example.com", AuthPass: "alicepass",
		From: "alice@example.com", To: []string{"x@outside.test"}, Data: gtubeMessage("alice@example.com", "x@outside.test")})
	if err != nil || tr.Final.Code != 250 {
		t.Fatalf("GTUBE authenticated -> outside: %v %+v", err, tr)
	}
	out := n.WaitSink(t, 1)
	wantUntouched(t, n, out[0].Data)

	// And from outside to a relay domain: accepted, relayed untouched.
	if r := spamSend(t, n, "", "x@sender.test", "dave@partner.org", gtubeMessage("x@sender.test", "dave@partner.org")); r.Code != 250 {
		t.Fatalf("GTUBE outside -> relay: %v", r)
	}
	out = n.WaitSink(t, 2)
	wantUntouched(t, n, out[1].Data)

	// A clean message from outside: delivered with Authentication-Results
	// and the X-Spam fields.
	msg := harness.NewMessage("x@sender.test", "alice@example.com", "test", "Lunch on Thursday at noon?")
	if r := spamSend(t, n, "", "x@sender.test", "alice@example.com", msg); r.Code != 250 {
		t.Fatalf("clean outside -> local: %v", r)
	}
	got := n.WaitMaildir(t, "alice@example.com", 1)
	h := wantChecked(t, n, got[0].Data, "No, score=-1.5 tag=5 reject=15 engine=builtin")
	if h.Get("Subject") != "test" || !strings.Contains(h.Get("X-Spam-Symbols"), "MN_DMARC_PASS(-1)") {
		t.Errorf("clean message: Subject %q, X-Spam-Symbols %q", h.Get("Subject"), h.Get("X-Spam-Symbols"))
	}

	// A client listed in the test DNSBL: tagged.
	msg = harness.NewMessage("x@sender.test", "bob@example.com", "test", "Cheap watches")
	if r := spamSend(t, n, listedClient, "x@sender.test", "bob@example.com", msg); r.Code != 250 {
		t.Fatalf("listed client: %v", r)
	}
	got = n.WaitMaildir(t, "bob@example.com", 1)
	h = wantChecked(t, n, got[0].Data, "Yes, score=5.5 tag=5 reject=15 engine=builtin")
	if h.Get("Subject") != "[SPAM] test" || !strings.Contains(h.Get("X-Spam-Symbols"), "MN_DNSBL_BL_TEST(7)") {
		t.Errorf("listed client: Subject %q, X-Spam-Symbols %q", h.Get("Subject"), h.Get("X-Spam-Symbols"))
	}
	if d.Queries.Load() == 0 {
		t.Error("milterd asked the test DNS server nothing")
	}
}

// A DNSBL listing rejects when reject_score says so; a forged DMARC
// p=reject From: is refused.
func TestSpamE2EReject(t *testing.T) {
	d := spamtest.StartDNS(t, spamE2EZone)
	n := spamE2ENode(t, d.Addr, map[string]any{"dnsbl": []any{"bl.test"}, "tag_score": 3, "reject_score": 5})
	msg := harness.NewMessage("x@sender.test", "bob@example.com", "test", "Cheap watches")
	if r := spamSend(t, n, listedClient, "x@sender.test", "bob@example.com", msg); r.Code != 550 || !strings.Contains(r.Text(), "5.7.1 Message rejected as spam") {
		t.Errorf("listed client, reject_score 5: %v", r)
	}
	// The From: domain's DMARC policy is reject and nothing aligns.
	msg = harness.NewMessage("ceo@sender.test", "bob@example.com", "test", "Please pay this invoice")
	if r := spamSend(t, n, "", "x@elsewhere.test", "bob@example.com", msg); r.Code != 550 || !strings.Contains(r.Text(), "5.7.1 Message rejected by the DMARC policy of <sender.test>") {
		t.Errorf("DMARC p=reject: %v", r)
	}
}

// spam.quarantine: the message is accepted into Postfix's hold queue (a
// node of its own, rendered with spam.quarantine on).
func TestSpamE2EQuarantine(t *testing.T) {
	d := spamtest.StartDNS(t, spamE2EZone)
	q := spamE2ENode(t, d.Addr, map[string]any{"quarantine": true})
	if r := spamSend(t, q, "", "x@sender.test", "alice@example.com", gtubeMessage("x@sender.test", "alice@example.com")); r.Code != 250 {
		t.Errorf("GTUBE with quarantine: %v", r)
	}
	q.WaitLog(t, "milter-hold: END-OF-MESSAGE from")
}

// engineDown sends a clean message after the engine was stopped.
func engineDown(t *testing.T, n *harness.Node, to string) harness.Reply {
	return spamSend(t, n, "", "x@sender.test", to, harness.NewMessage("x@sender.test", to, "test", "Is the engine there?"))
}

func TestSpamE2ERspamd(t *testing.T) {
	d := spamtest.StartDNS(t, spamE2EZone)
	eng := spamtest.StartRspamd(t, d.Addr)
	n := spamE2ENode(t, d.Addr, map[string]any{"engine": "rspamd", "rspamd_url": eng.URL})

	if r := spamSend(t, n, "", "x@sender.test", "alice@example.com", gtubeMessage("x@sender.test", "alice@example.com")); r.Code != 550 || !strings.Contains(r.Text(), "5.7.1 Message rejected as spam") {
		t.Errorf("GTUBE: %v", r)
	}
	if log, ok := n.DaemonLogWith("milterd", "spam_engine=rspamd", "disposition=reject"); !ok {
		t.Errorf("milterd log:\n%s", log)
	}

	msg := harness.NewMessage("x@sender.test", "alice@example.com", "test", "Lunch on Thursday at noon?")
	if r := spamSend(t, n, "", "x@sender.test", "alice@example.com", msg); r.Code != 250 {
		t.Fatalf("clean: %v", r)
	}
	h := wantChecked(t, n, n.WaitMaildir(t, "alice@example.com", 1)[0].Data, "No, score=")
	st := strings.Join(strings.Fields(h.Get("X-Spam-Status")), " ")
	if !strings.Contains(st, "engine=rspamd action=") || strings.Contains(st, "engine_error") {
		t.Errorf("X-Spam-Status %q", st)
	}
	// rspamd's own rules are among the symbols, next to the builtin ones.
	if sy := h.Get("X-Spam-Symbols"); !strings.Contains(sy, "MN_SPF_PASS") || !strings.Contains(sy, "MIME_") {
		t.Errorf("X-Spam-Symbols %q", sy)
	}

	// Engine stopped: on_engine_failure accept (the default) delivers, with
	// the failure in the header.
	eng.Stop()
	if r := engineDown(t, n, "bob@example.com"); r.Code != 250 {
		t.Fatalf("engine stopped: %v", r)
	}
	h = wantChecked(t, n, n.WaitMaildir(t, "bob@example.com", 1)[0].Data, "No, score=-1.5 tag=5 reject=15 engine=rspamd engine_error=")
	if st := h.Get("X-Spam-Status"); !strings.Contains(st, "rspamd") {
		t.Errorf("X-Spam-Status %q", st)
	}
}

func TestSpamE2ESpamd(t *testing.T) {
	d := spamtest.StartDNS(t, spamE2EZone)
	eng := spamtest.StartSpamd(t)
	n := spamE2ENode(t, d.Addr, map[string]any{"engine": "spamd", "spamd_address": eng.Addr, "on_engine_failure": "tempfail"})

	if r := spamSend(t, n, "", "x@sender.test", "alice@example.com", gtubeMessage("x@sender.test", "alice@example.com")); r.Code != 550 || !strings.Contains(r.Text(), "5.7.1 Message rejected as spam") {
		t.Errorf("GTUBE: %v", r)
	}
	if log, ok := n.DaemonLogWith("milterd", "spam_engine=spamd"); !ok {
		t.Errorf("milterd log:\n%s", log)
	}

	msg := harness.NewMessage("x@sender.test", "alice@example.com", "test", "Lunch on Thursday at noon?")
	if r := spamSend(t, n, "", "x@sender.test", "alice@example.com", msg); r.Code != 250 {
		t.Fatalf("clean: %v", r)
	}
	h := wantChecked(t, n, n.WaitMaildir(t, "alice@example.com", 1)[0].Data, "No, score=")
	if st := h.Get("X-Spam-Status"); !strings.Contains(st, "engine=spamd") || strings.Contains(st, "engine_error") {
		t.Errorf("X-Spam-Status %q", st)
	}

	// Engine stopped: on_engine_failure tempfail refuses for now.
	eng.Stop()
	if r := engineDown(t, n, "bob@example.com"); r.Code != 451 || !strings.Contains(r.Text(), "4.7.1 Spam check temporarily unavailable") {
		t.Errorf("engine stopped, tempfail: %v", r)
	}
}
