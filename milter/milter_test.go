package milter

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	gomilter "github.com/d--j/go-milter"
	msgauth "github.com/emersion/go-msgauth/dkim"
	"github.com/mailnode/mailnode/dkim"
	"github.com/mailnode/mailnode/internal/testpeer"
	"github.com/mailnode/mailnode/inventory"
	"github.com/mailnode/mailnode/milter/miltertest"
	"github.com/mailnode/mailnode/resolver"
	"github.com/mailnode/mailnode/test/harness"
)

var fixedNow = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

func testInventory(t testing.TB) *inventory.Inventory {
	t.Helper()
	inv, err := inventory.Load("../examples/inventory.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return inv
}

// testKeys: the fixed RSA key of dkim/testdata and an Ed25519 key from a
// fixed seed for example.com; the RSA key for example.net; a key for
// sender.org, an outside domain whose mail comes in signed.
func testKeys(t testing.TB) (local map[string][]dkim.Key, outside dkim.Key) {
	t.Helper()
	pem, err := os.ReadFile("../dkim/testdata/rsa2048.key")
	if err != nil {
		t.Fatal(err)
	}
	rk, err := dkim.ParseKey("rsa2048.key", pem, "rsa")
	if err != nil {
		t.Fatal(err)
	}
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = byte(i)
	}
	ek := ed25519.NewKeyFromSeed(seed)
	k1, _ := dkim.NewKey("example.com", "mx2026r", "rsa", rk)
	k2, _ := dkim.NewKey("example.com", "mx2026e", "ed25519", ek)
	k3, _ := dkim.NewKey("example.net", "mx2026r", "rsa", rk)
	k4, _ := dkim.NewKey("sender.org", "s1", "ed25519", ek)
	return map[string][]dkim.Key{"example.com": {k1, k2}, "example.net": {k3}}, k4
}

// testDNS publishes the test keys; tempfail.org times out.
func testDNS(t testing.TB) *resolver.Mock {
	local, outside := testKeys(t)
	all := append(append([]dkim.Key{}, local["example.com"]...), append(local["example.net"], outside)...)
	m := &resolver.Mock{TXT: map[string][]string{}, Fail: []string{"tempfail.org"}}
	for _, k := range all {
		v, _ := dkim.TXTValue(k.Signer)
		m.TXT[k.Selector+"._domainkey."+k.Domain] = []string{v}
	}
	return m
}

func testFilter(t testing.TB) (*Filter, *harness.SyncBuffer) {
	local, _ := testKeys(t)
	f := NewFilter(testInventory(t), local, testDNS(t).LookupTXT)
	f.Now = func() time.Time { return fixedNow }
	buf := &harness.SyncBuffer{}
	f.Log = slog.New(slog.NewTextHandler(buf, nil))
	f.CheckTimeout = 5 * time.Second
	return f, buf
}

// startServer serves f on a fresh unix socket and returns its path.
func startServer(t testing.TB, f *Filter, limits *GuardLimits) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "milter.sock")
	ln, err := Listen("unix:" + path)
	if err != nil {
		t.Fatal(err)
	}
	srv := NewServer(f)
	if limits != nil {
		srv.Limits = *limits
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ln) }()
	t.Cleanup(func() {
		srv.Close()
		ln.Close()
		<-done
	})
	return path
}

func hdrs(pairs ...string) []dkim.Header {
	var hs []dkim.Header
	for i := 0; i < len(pairs); i += 2 {
		hs = append(hs, dkim.Header{Name: pairs[i], Value: " " + pairs[i+1]})
	}
	return hs
}

func localMessage(from string) *miltertest.Message {
	return &miltertest.Message{
		Host: "client.example.com", Port: 40000, Addr: "198.51.100.7",
		AuthUser: "alice@example.com", QueueID: "4ABC",
		Sender: "alice@example.com", Rcpts: []string{"carol@partner.org", "x@elsewhere.test"},
		Headers: hdrs("From", "Alice <"+from+">", "To", "carol@partner.org",
			"Subject", "hello  there", "Date", "Sun, 01 Mar 2026 12:00:00 +0000",
			"Message-ID", "<1@example.com>"),
		Body: []byte("Hi Carol,\r\n\r\nthe  numbers are in. \r\n\r\n"),
	}
}

func keyFile(t testing.TB) string {
	local, outside := testKeys(t)
	var b strings.Builder
	for _, ks := range local {
		for _, k := range ks {
			v, _ := dkim.TXTValue(k.Signer)
			b.WriteString(dkim.RecordName(k.Selector, k.Domain) + " " + v + "\n")
		}
	}
	v, _ := dkim.TXTValue(outside.Signer)
	b.WriteString(dkim.RecordName(outside.Selector, outside.Domain) + " " + v + "\n")
	p := filepath.Join(t.TempDir(), "keys.txt")
	os.WriteFile(p, []byte(b.String()), 0o644)
	return p
}

func pyVerify(t testing.TB, msg []byte) (bool, string) {
	t.Helper()
	if err := exec.Command("/usr/bin/python3", "-c", "import dkim, nacl").Run(); err != nil {
		testpeer.Missing(t, "python3-dkim / python3-nacl not installed (apt-get install python3-dkim)")
	}
	cmd := exec.Command("/usr/bin/python3", "../dkim/testdata/pydkimverify.py", keyFile(t))
	cmd.Stdin = bytes.NewReader(msg)
	out, err := cmd.CombinedOutput()
	return err == nil, string(out)
}

func goVerify(t testing.TB, msg []byte) []*msgauth.Verification {
	t.Helper()
	lookup := testDNS(t).LookupTXT
	vs, err := msgauth.VerifyWithOptions(bytes.NewReader(msg), &msgauth.VerifyOptions{
		LookupTXT: func(n string) ([]string, error) { return lookup(context.Background(), n) },
	})
	if err != nil {
		t.Fatal(err)
	}
	return vs
}

func countMods(r *miltertest.Result, typ gomilter.ModifyActionType, name string) int {
	n := 0
	for _, m := range r.Mods {
		if m.Type == typ && strings.EqualFold(m.HeaderName, name) {
			n++
		}
	}
	return n
}

// TestClientSignsAuthenticated: an authenticated local sender over a real
// socket gets RSA and Ed25519 signatures that go-msgauth and python3-dkim
// accept; one changed body byte fails both.
func TestClientSignsAuthenticated(t *testing.T) {
	f, logs := testFilter(t)
	path := startServer(t, f, nil)
	c := miltertest.NewClient("unix", path)
	m := localMessage("alice@example.com")
	r, err := miltertest.Submit(c, m)
	if err != nil {
		t.Fatal(err)
	}
	if r.Action.Type != gomilter.ActionAccept || countMods(r, gomilter.ActionInsertHeader, "DKIM-Signature") != 2 {
		t.Fatalf("action %v, mods %v", r.Action, r.Mods)
	}
	for _, mod := range r.Mods {
		if mod.HeaderName == "DKIM-Signature" && (!strings.Contains(mod.HeaderValue, "d=example.com;") ||
			!strings.Contains(strings.Join(strings.Fields(mod.HeaderValue), ""), "h=from:from:to:subject:date:message-id;")) {
			t.Errorf("signature %q: want d=example.com and From oversigned", mod.HeaderValue)
		}
	}
	signed, _ := r.Apply(m)
	vs := goVerify(t, signed)
	if len(vs) != 2 || vs[0].Err != nil || vs[1].Err != nil {
		t.Fatalf("go-msgauth: %+v %+v", vs[0], vs[1])
	}
	if ok, out := pyVerify(t, signed); !ok {
		t.Fatalf("python3-dkim:\n%s\n%s", out, signed)
	}
	bad := bytes.Replace(signed, []byte("numbers"), []byte("numbert"), 1)
	if ok, out := pyVerify(t, bad); ok {
		t.Fatalf("python3-dkim accepts a changed body:\n%s", out)
	}
	for _, v := range goVerify(t, bad) {
		if v.Err == nil {
			t.Fatal("go-msgauth accepts a changed body")
		}
	}
	if !strings.Contains(logs.String(), `action=sign reason="authenticated sender, From domain local"`) ||
		!strings.Contains(logs.String(), "signed=example.com/mx2026r/rsa,example.com/mx2026e/ed25519") {
		t.Errorf("decision log: %s", logs)
	}
}

func TestClientOrigins(t *testing.T) {
	f, _ := testFilter(t)
	path := startServer(t, f, nil)
	c := miltertest.NewClient("unix", path)
	cases := []struct {
		name      string
		edit      func(m *miltertest.Message)
		wantSigns int
	}{
		{"trusted host", func(m *miltertest.Message) { m.AuthUser = ""; m.Addr = "10.20.0.5" }, 2},
		{"local submission", func(m *miltertest.Message) {
			m.AuthUser, m.Host, m.Addr, m.Port = "", "localhost", "127.0.0.1", 0
		}, 2},
		{"example.net, rsa only", func(m *miltertest.Message) { m.Headers[0].Value = " carol@example.net" }, 1},
		{"authorized, From outside", func(m *miltertest.Message) { m.Headers[0].Value = " someone@gmail.test" }, 0},
		{"unauthorized, From local", func(m *miltertest.Message) { m.AuthUser = "" }, 0},
		{"two From headers", func(m *miltertest.Message) {
			m.Headers = append(m.Headers, dkim.Header{Name: "From", Value: " bob@example.com"})
		}, 0},
		{"node hostname domain has no selectors", func(m *miltertest.Message) { m.Headers[0].Value = " root@mx1.example.com" }, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m := localMessage("alice@example.com")
			tc.edit(m)
			r, err := miltertest.Submit(c, m)
			if err != nil {
				t.Fatal(err)
			}
			if n := countMods(r, gomilter.ActionInsertHeader, "DKIM-Signature"); n != tc.wantSigns {
				t.Fatalf("%d signatures, want %d (%v)", n, tc.wantSigns, r.Mods)
			}
			if tc.wantSigns > 0 {
				signed, _ := r.Apply(m)
				for _, v := range goVerify(t, signed) {
					if v.Err != nil {
						t.Errorf("%s: %v", v.Domain, v.Err)
					}
				}
			}
		})
	}
}

// inbound is mail from an outside sender to a local mailbox, optionally
// signed by sender.org.
func inbound(t testing.TB, sign bool, extra ...dkim.Header) *miltertest.Message {
	m := &miltertest.Message{
		Host: "mail.sender.org", Port: 50000, Addr: "198.51.100.7", QueueID: "5DEF",
		Sender: "news@sender.org", Rcpts: []string{"alice@example.com"},
		Headers: append(hdrs("From", "News <news@sender.org>", "To", "alice@example.com",
			"Subject", "news", "Date", "Sun, 01 Mar 2026 12:00:00 +0000"), extra...),
		Body: []byte("Big news.\r\n"),
	}
	if sign {
		_, k := testKeys(t)
		signWith(t, m, k)
	}
	return m
}

// signWith puts key's DKIM-Signature of m on top of m's header.
func signWith(t testing.TB, m *miltertest.Message, key dkim.Key) {
	bh := dkim.NewBodyHasher()
	bh.Write(m.Body)
	v, err := dkim.Sign(key, m.Headers, bh.Sum(), fixedNow)
	if err != nil {
		t.Fatal(err)
	}
	m.Headers = append([]dkim.Header{{Name: "DKIM-Signature", Value: v}}, m.Headers...)
}

func arValue(t testing.TB, r *miltertest.Result) string {
	t.Helper()
	for _, m := range r.Mods {
		if m.Type == gomilter.ActionInsertHeader && m.HeaderName == "Authentication-Results" {
			return strings.Join(strings.Fields(m.HeaderValue), " ")
		}
	}
	t.Fatalf("no Authentication-Results in %v", r.Mods)
	return ""
}

func TestClientVerifiesInbound(t *testing.T) {
	f, logs := testFilter(t)
	path := startServer(t, f, nil)
	c := miltertest.NewClient("unix", path)

	r, err := miltertest.Submit(c, inbound(t, true))
	if err != nil {
		t.Fatal(err)
	}
	if got := arValue(t, r); got != "mx1.example.com; dkim=pass header.d=sender.org header.i=@sender.org" {
		t.Errorf("A-R %q", got)
	}
	if countMods(r, gomilter.ActionInsertHeader, "DKIM-Signature") != 0 {
		t.Error("inbound mail signed")
	}

	// Body changed after signing: fail.
	m := inbound(t, true)
	m.Body = []byte("Big news!\r\n")
	r, _ = miltertest.Submit(c, m)
	if got := arValue(t, r); !strings.HasPrefix(got, "mx1.example.com; dkim=fail") {
		t.Errorf("A-R %q", got)
	}

	// Unsigned: none.
	r, _ = miltertest.Submit(c, inbound(t, false))
	if got := arValue(t, r); got != "mx1.example.com; dkim=none" {
		t.Errorf("A-R %q", got)
	}

	// DNS trouble is temperror, and the message is still accepted.
	m = inbound(t, true)
	m.Headers[0].Value = strings.Replace(m.Headers[0].Value, "d=sender.org", "d=tempfail.org", 1)
	r, _ = miltertest.Submit(c, m)
	if got := arValue(t, r); !strings.HasPrefix(got, "mx1.example.com; dkim=temperror") || r.Action.Type != gomilter.ActionAccept {
		t.Errorf("A-R %q, action %v", got, r.Action)
	}
	if !strings.Contains(logs.String(), "action=verify") {
		t.Errorf("decision log: %s", logs)
	}
}

func TestClientRemovesForgedAR(t *testing.T) {
	f, _ := testFilter(t)
	path := startServer(t, f, nil)
	c := miltertest.NewClient("unix", path)
	m := inbound(t, false,
		dkim.Header{Name: "Authentication-Results", Value: " other.example; dkim=pass"},
		dkim.Header{Name: "Authentication-Results", Value: " MX1.example.com; dkim=pass header.d=example.com"},
		dkim.Header{Name: "Authentication-Results", Value: " mx1.example.com;\r\n\tspf=pass"})
	r, err := miltertest.Submit(c, m)
	if err != nil {
		t.Fatal(err)
	}
	out, _ := r.Apply(m)
	if n := bytes.Count(bytes.ToLower(out), []byte("authentication-results: mx1.example.com;")); n != 1 {
		t.Errorf("%d A-R headers with our authserv-id, want 1 (ours):\n%s", n, out)
	}
	if !bytes.Contains(out, []byte("Authentication-Results: other.example; dkim=pass")) {
		t.Errorf("someone else's A-R removed:\n%s", out)
	}
	// Forged A-R in relay mail (no check) is removed too.
	m = inbound(t, false, dkim.Header{Name: "Authentication-Results", Value: " mx1.example.com; dkim=pass"})
	m.Rcpts = []string{"carol@partner.org"}
	r, _ = miltertest.Submit(c, m)
	if countMods(r, gomilter.ActionChangeHeader, "Authentication-Results") != 1 || countMods(r, gomilter.ActionInsertHeader, "Authentication-Results") != 0 {
		t.Errorf("relay mods %v", r.Mods)
	}
}

// TestClientRelayPassesUntouched: mail with nothing to sign or check is
// accepted unchanged at its end; the end of headers gets no reply (one
// round trip fewer for the mail that is signed or checked).
func TestClientRelayPassesUntouched(t *testing.T) {
	f, _ := testFilter(t)
	path := startServer(t, f, nil)
	c := miltertest.NewClient("unix", path)
	m := inbound(t, false)
	m.Rcpts = []string{"carol@partner.org"}
	r, err := miltertest.Submit(c, m)
	if err != nil {
		t.Fatal(err)
	}
	if r.AtEOH || r.Action.Type != gomilter.ActionAccept || len(r.Mods) != 0 {
		t.Fatalf("relay mail: %+v", r)
	}
}

// TestClientSessionReuse: Postfix sends several messages over one milter
// connection; each gets its own decision.
func TestClientSessionReuse(t *testing.T) {
	f, _ := testFilter(t)
	path := startServer(t, f, nil)
	c := miltertest.NewClient("unix", path)
	macros := gomilter.NewMacroBag()
	s, err := c.Session(macros)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := 0; i < 3; i++ {
		m := localMessage("alice@example.com")
		if i == 1 {
			m = inbound(t, true)
		}
		r, err := miltertest.SubmitOn(s, macros, m)
		if err != nil {
			t.Fatal(err)
		}
		want := 2
		if i == 1 {
			want = 0
		}
		if n := countMods(r, gomilter.ActionInsertHeader, "DKIM-Signature"); n != want {
			t.Fatalf("message %d: %d signatures, want %d", i, n, want)
		}
		if err := s.Reset(macros); err != nil {
			t.Fatal(err)
		}
	}
}
