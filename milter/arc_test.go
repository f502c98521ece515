package milter

import (
	"bytes"
	"context"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	gomilter "github.com/d--j/go-milter"

	"github.com/mailnode/mailnode/arc"
	"github.com/mailnode/mailnode/dkim"
	"github.com/mailnode/mailnode/internal/testpeer"
	"github.com/mailnode/mailnode/milter/miltertest"
	"github.com/mailnode/mailnode/resolver"
	"github.com/mailnode/mailnode/spam"
)

// arcEnv is a filter whose DNS also publishes the RSA test key as
// s1._domainkey.list.test, a mailing list that seals before the node.
type arcEnv struct {
	f      *Filter
	logs   interface{ String() string }
	dns    *resolver.Mock
	path   string // the milter socket
	list   dkim.Key
	keyPEM string // list.test's key as PKCS#1 PEM, for python3-dkim
}

func newARCEnv(t *testing.T) *arcEnv {
	t.Helper()
	f, logs := testFilter(t)
	m := testDNS(t)
	f.Checks = DefaultChecks(m.LookupTXT)
	f.ARC.Lookup = m.LookupTXT
	local, _ := testKeys(t)
	rk := local["example.net"][0]
	list, _ := dkim.NewKey("list.test", "s1", "rsa", rk.Signer)
	v, _ := dkim.TXTValue(rk.Signer)
	m.TXT["s1._domainkey.list.test"] = []string{v}
	raw, err := os.ReadFile("../dkim/testdata/rsa2048.key")
	if err != nil {
		t.Fatal(err)
	}
	priv, err := dkim.ParseKey("rsa2048.key", raw, "rsa")
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "list.pem")
	os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(priv.(*rsa.PrivateKey))}), 0o600)
	return &arcEnv{f: f, logs: logs, dns: m, path: startServer(t, f, nil), list: list, keyPEM: p}
}

// keys writes the published keys as pyarc.py reads them.
func (e *arcEnv) keys(t *testing.T) string {
	var b strings.Builder
	for n, v := range e.dns.TXT {
		b.WriteString(n + " " + v[0] + "\n")
	}
	p := filepath.Join(t.TempDir(), "keys.txt")
	os.WriteFile(p, []byte(b.String()), 0o644)
	return p
}

func pyARC(t *testing.T, msg []byte, args ...string) (string, bool) {
	t.Helper()
	if err := exec.Command("/usr/bin/python3", "-c", "import dkim, authres").Run(); err != nil {
		testpeer.Missing(t, "python3-dkim / python3-authres not installed (apt-get install python3-dkim python3-authres)")
	}
	cmd := exec.Command("/usr/bin/python3", append([]string{"../arc/testdata/pyarc.py"}, args...)...)
	cmd.Stdin = bytes.NewReader(msg)
	out, err := cmd.CombinedOutput()
	return string(out), err == nil
}

// forwardedInbound is mail from sender.org (DKIM-signed with its Ed25519 key) from
// an outside client to rcpts.
func forwardedInbound(t *testing.T, rcpts ...string) *miltertest.Message {
	t.Helper()
	_, outside := testKeys(t)
	hs := hdrs("From", "Sender <x@sender.org>", "To", "sales@example.com",
		"Subject", "forward  me", "Date", "Sun, 01 Mar 2026 12:00:00 +0000", "Message-ID", "<arc@sender.org>")
	body := []byte("Dear sales,\r\n\r\nplease  quote.\r\n")
	bh := dkim.NewBodyHasher()
	bh.Write(body)
	sig, err := dkim.Sign(outside, hs, bh.Sum(), fixedNow)
	if err != nil {
		t.Fatal(err)
	}
	return &miltertest.Message{Host: "mx.sender.org", Port: 40000, Addr: "198.51.100.9", QueueID: "5ARC",
		Sender: "x@sender.org", Rcpts: rcpts, Headers: append([]dkim.Header{{Name: "DKIM-Signature", Value: " " + sig}}, hs...), Body: body}
}

func (e *arcEnv) submit(t *testing.T, m *miltertest.Message) (*miltertest.Result, []byte) {
	t.Helper()
	r, err := miltertest.Submit(miltertest.NewClient("unix", e.path), m)
	if err != nil {
		t.Fatal(err)
	}
	if r.Action.Type != gomilter.ActionAccept {
		t.Fatalf("action %v", r.Action)
	}
	out, err := r.Apply(m)
	if err != nil {
		t.Fatal(err)
	}
	return r, out
}

func TestARCSealsForwarded(t *testing.T) {
	e := newARCEnv(t)
	kf := e.keys(t)

	// sales@example.com forwards to carol@partner.org (a relay domain).
	r, out := e.submit(t, forwardedInbound(t, "sales@example.com"))
	if n := countMods(r, gomilter.ActionInsertHeader, "ARC-Seal"); n != 1 {
		t.Fatalf("%d ARC-Seal fields:\n%s", n, out)
	}
	for _, want := range []string{
		"ARC-Seal: i=1; a=rsa-sha256; cv=none; d=example.com; s=mx2026r;",
		"ARC-Message-Signature: i=1; a=rsa-sha256; c=relaxed/relaxed;",
		"ARC-Authentication-Results: i=1; mx1.example.com;\r\n\tdkim=pass header.d=sender.org",
	} {
		if !bytes.Contains(out, []byte(want)) {
			t.Errorf("no %q in:\n%s", want, out)
		}
	}
	if !bytes.HasPrefix(out, []byte("ARC-Seal:")) {
		t.Errorf("the seal is not on top:\n%s", out)
	}
	// The same results as Authentication-Results.
	hs, _ := arc.SplitMessage(out)
	var ar, aar string
	for _, h := range hs {
		switch h.Name {
		case "Authentication-Results":
			ar = h.Value
		case "ARC-Authentication-Results":
			aar = h.Value
		}
	}
	if ar == "" || " i=1;"+ar != aar {
		t.Errorf("AAR %q is not i=1; + A-R %q", aar, ar)
	}
	if v := arc.Verify(context.Background(), out, dkim.LookupTXTFunc(e.dns.LookupTXT), fixedNow); v.CV != arc.Pass {
		t.Errorf("our validator: %s (%s)", v.CV, v.Reason)
	}
	if res, ok := pyARC(t, out, "verify", kf); !ok {
		t.Errorf("python3-dkim arc_verify: %s\n%s", res, out)
	}
	if !strings.Contains(e.logs.String(), "milterd: arc sealed") || !strings.Contains(e.logs.String(), "rcpt=sales@example.com domain=example.com instance=1 cv=none selector=mx2026r") {
		t.Errorf("log: %s", e.logs)
	}

	// Mail for a local mailbox only, and forwarding.arc off: nothing.
	r, out = e.submit(t, forwardedInbound(t, "alice@example.com"))
	if countMods(r, gomilter.ActionInsertHeader, "ARC-Seal") != 0 || bytes.Contains(out, []byte("ARC-")) {
		t.Errorf("local delivery sealed:\n%s", out)
	}
	// A local user's mail to the alias is signed, not sealed.
	lm := localMessage("alice@example.com")
	lm.Rcpts = []string{"sales@example.com"}
	r, out = e.submit(t, lm)
	if countMods(r, gomilter.ActionInsertHeader, "DKIM-Signature") != 2 || bytes.Contains(out, []byte("ARC-")) {
		t.Errorf("outbound mail to the alias:\n%s", out)
	}
	saved := e.f.ARC
	e.f.ARC = nil
	_, out = e.submit(t, forwardedInbound(t, "sales@example.com"))
	e.f.ARC = saved
	if bytes.Contains(out, []byte("ARC-")) {
		t.Errorf("forwarding.arc off, sealed:\n%s", out)
	}
}

// A message that arrives sealed by a list (python3-dkim's arc_sign) leaves
// with i=2 cv=pass, and Authentication-Results says arc=pass.
func TestARCSealsOnTopOfChain(t *testing.T) {
	e := newARCEnv(t)
	kf := e.keys(t)
	m := forwardedInbound(t, "sales@example.com")
	var raw bytes.Buffer
	for _, h := range append(m.Headers, dkim.Header{Name: "Authentication-Results", Value: " mx.list.test; dkim=pass header.d=sender.org"}) {
		raw.WriteString(h.Name + ":" + h.Value + "\r\n")
	}
	raw.WriteString("\r\n")
	raw.Write(m.Body)
	sealed, ok := pyARC(t, raw.Bytes(), "sign", kf, e.keyPEM, "s1", "list.test", "mx.list.test")
	if !ok {
		t.Fatalf("python3-dkim arc_sign: %s", sealed)
	}
	m.Headers, m.Body = arc.SplitMessage([]byte(sealed))
	for i := range m.Headers {
		m.Headers[i].Value = strings.ReplaceAll(m.Headers[i].Value, "\r\n", "\n")
	}
	_, out := e.submit(t, m)
	if !bytes.HasPrefix(out, []byte("ARC-Seal: i=2; a=rsa-sha256; cv=pass; d=example.com;")) {
		t.Fatalf("no i=2 cv=pass seal on top:\n%s", out)
	}
	if !bytes.Contains(out, []byte("Authentication-Results: mx1.example.com;")) || !bytes.Contains(out, []byte("\tarc=pass\r\n")) {
		t.Errorf("no arc=pass in Authentication-Results:\n%s", out)
	}
	if v := arc.Verify(context.Background(), out, dkim.LookupTXTFunc(e.dns.LookupTXT), fixedNow); v.CV != arc.Pass {
		t.Errorf("our validator: %s (%s)", v.CV, v.Reason)
	}
	if res, ok := pyARC(t, out, "verify", kf); !ok {
		t.Errorf("python3-dkim arc_verify: %s\n%s", res, out)
	}

	// The list's seal broken on the way (the body changed): i=2 says
	// cv=fail and Authentication-Results arc=fail.
	m.Body = bytes.Replace(m.Body, []byte("quote"), []byte("quotE"), 1)
	_, out = e.submit(t, m)
	if !bytes.HasPrefix(out, []byte("ARC-Seal: i=2; a=rsa-sha256; cv=fail;")) || !bytes.Contains(out, []byte("\tarc=fail\r\n")) {
		t.Errorf("broken chain:\n%s", out)
	}
}

// A forwarding domain with only an Ed25519 selector is not sealed, and the
// log says why.
func TestARCNeedsRSA(t *testing.T) {
	e := newARCEnv(t)
	local, _ := testKeys(t)
	e.f.Keys = map[string][]dkim.Key{"example.com": {local["example.com"][1]}}
	e.f.Metrics = NewMetrics()
	_, out := e.submit(t, forwardedInbound(t, "sales@example.com"))
	if n := counter(t, e.f.Metrics, "mailnode_milter_arc_unsealed_total", "why", "no_rsa_key"); n != 1 {
		t.Errorf("mailnode_milter_arc_unsealed_total{why=no_rsa_key} = %v", n)
	}
	if bytes.Contains(out, []byte("ARC-")) {
		t.Errorf("sealed with Ed25519:\n%s", out)
	}
	if !strings.Contains(e.logs.String(), `milterd: arc not sealed" queue_id=5ARC rcpt=sales@example.com domain=example.com why="the domain has no RSA DKIM selector signing`) {
		t.Errorf("log: %s", e.logs)
	}
}

func TestOutgoingHeaders(t *testing.T) {
	in := hdrs("Authentication-Results", "mx.example.com; forged", "X-Spam-Status", "Yes", "Subject", "hi", "Authentication-Results", "other; x")
	got := outgoingHeaders(in, []HeaderChange{
		{Delete: true, Index: 1, Name: "Authentication-Results"},
		{Delete: true, Index: 1, Name: "x-spam-status"},
		{Replace: true, Index: 1, Name: "Subject", Value: " [SPAM] hi"},
		{Index: 0, Name: "X-Spam-Score", Value: " 9"},
		{Index: 0, Name: "Authentication-Results", Value: " mx.example.com; none"},
	})
	var b strings.Builder
	for _, h := range got {
		b.WriteString(h.Name + ":" + h.Value + "|")
	}
	if want := "Authentication-Results: mx.example.com; none|X-Spam-Score: 9|Subject: [SPAM] hi|Authentication-Results: other; x|"; b.String() != want {
		t.Errorf("got  %s\nwant %s", b.String(), want)
	}
}

// The set covers the message as it leaves: tagged as spam (Subject
// rewritten, X-Spam-* fields that came with it replaced, a forged
// Authentication-Results of the node's removed) in the same pass.
func TestARCSealsTaggedMessage(t *testing.T) {
	f := spamFilter(t, &fakeEngine{rep: &spam.Report{Score: 8, Action: "add header"}}, nil)
	f.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	f.Metrics = NewMetrics()
	path := startServer(t, f, nil)
	m := forwardedInbound(t, "sales@example.com")
	m.Headers = append(m.Headers,
		dkim.Header{Name: "X-Spam-Status", Value: " No, forged"},
		dkim.Header{Name: "Authentication-Results", Value: " mx1.example.com; dkim=pass header.d=example.com"})
	r, err := miltertest.Submit(miltertest.NewClient("unix", path), m)
	if err != nil {
		t.Fatal(err)
	}
	out, err := r.Apply(m)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(out, []byte("\r\nSubject: [SPAM] forward  me\r\n")) || bytes.Contains(out, []byte("forged")) ||
		bytes.Count(out, []byte("\r\nAuthentication-Results: mx1.example.com")) != 1 || !bytes.HasPrefix(out, []byte("ARC-Seal: i=1;")) {
		t.Fatalf("not tagged, cleaned and sealed:\n%s", out)
	}
	if v := arc.Verify(context.Background(), out, dkim.LookupTXTFunc(testDNS(t).LookupTXT), fixedNow); v.CV != arc.Pass {
		t.Errorf("our validator: %s (%s)\n%s", v.CV, v.Reason, out)
	}
	if n := counter(t, f.Metrics, "mailnode_milter_arc_seals_total", "cv", "none"); n != 1 {
		t.Errorf("mailnode_milter_arc_seals_total{cv=none} = %v", n)
	}
	if res, ok := pyARC(t, out, "verify", keyFile(t)); !ok {
		t.Errorf("python3-dkim arc_verify: %s\n%s", res, out)
	}
}
