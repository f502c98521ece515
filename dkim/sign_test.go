package dkim

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"encoding/base64"
	"flag"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	msgauth "github.com/emersion/go-msgauth/dkim"
	"github.com/mailnode/mailnode/internal/testpeer"
	"github.com/mailnode/mailnode/resolver"
)

var update = flag.Bool("update", false, "rewrite golden files")

// testKeys are fixed keys: the RSA key in testdata and an Ed25519 key from a
// fixed seed, so signatures are byte-exact from run to run.
func testKeys(t testing.TB) []Key {
	t.Helper()
	rk := testRSAKey(t)
	seed := make([]byte, ed25519.SeedSize)
	for i := range seed {
		seed[i] = byte(i)
	}
	r, _ := NewKey("example.com", "mx2026r", "rsa", rk)
	e, _ := NewKey("example.com", "mx2026e", "ed25519", ed25519.NewKeyFromSeed(seed))
	return []Key{r, e}
}

var fixedTime = time.Date(2026, 3, 1, 12, 0, 0, 0, time.UTC)

const testMessage = "Received: from client.example.net (client [10.20.0.5])\r\n" +
	"\tby mx1.example.com (Postfix) with ESMTPSA id 4ABC\r\n" +
	"From: Alice Smith <alice@example.com>\r\n" +
	"To: Carol <carol@partner.org>,\r\n" +
	"  Bob  <bob@example.com>\r\n" +
	"Subject:   Quarterly   report\t\r\n" +
	"Date: Sun, 01 Mar 2026 12:00:00 +0000\r\n" +
	"Message-ID: <20260301120000.4ABC@example.com>\r\n" +
	"MIME-Version: 1.0\r\n" +
	"Content-Type: text/plain; charset=utf-8\r\n" +
	"X-Mailer: test\r\n" +
	"\r\n" +
	"Hello Carol,  \r\n" +
	"\r\n" +
	"the  numbers\tare in.\r\n" +
	"\r\n" +
	"Alice\r\n" +
	"\r\n\r\n"

// SplitMessage cuts a raw message (CRLF) into header fields and body.
func splitMessage(t testing.TB, msg []byte) ([]Header, []byte) {
	t.Helper()
	i := bytes.Index(msg, []byte("\r\n\r\n"))
	if i < 0 {
		t.Fatal("no header/body separator")
	}
	var hs []Header
	for _, line := range strings.SplitAfter(string(msg[:i+2]), "\r\n") {
		if line == "" {
			continue
		}
		if line[0] == ' ' || line[0] == '\t' {
			hs[len(hs)-1].Value += line
			continue
		}
		name, value, _ := strings.Cut(line, ":")
		hs = append(hs, Header{Name: name, Value: value})
	}
	for k := range hs {
		hs[k].Value = strings.TrimSuffix(hs[k].Value, "\r\n")
	}
	return hs, msg[i+4:]
}

// signMessage returns msg with one DKIM-Signature per key prepended.
func signMessage(t testing.TB, keys []Key, msg []byte) ([]byte, []string) {
	t.Helper()
	hs, body := splitMessage(t, msg)
	bh := NewBodyHasher()
	bh.Write(body)
	sum := bh.Sum()
	var out bytes.Buffer
	var sigs []string
	for _, k := range keys {
		v, err := Sign(k, hs, sum, fixedTime)
		if err != nil {
			t.Fatal(err)
		}
		sigs = append(sigs, v)
		out.WriteString("DKIM-Signature:" + v + "\r\n")
	}
	out.Write(msg)
	return out.Bytes(), sigs
}

// lookupFor publishes keys (resolver.Mock) for go-msgauth's verifier.
func lookupFor(t testing.TB, keys []Key) func(string) ([]string, error) {
	db := &resolver.Mock{TXT: map[string][]string{}}
	for _, k := range keys {
		v, err := TXTValue(k.Signer)
		if err != nil {
			t.Fatal(err)
		}
		db.TXT[k.Selector+"._domainkey."+k.Domain] = []string{v}
	}
	return func(name string) ([]string, error) { return db.LookupTXT(context.Background(), name) }
}

func TestSignGolden(t *testing.T) {
	keys := testKeys(t)
	signed, sigs := signMessage(t, keys, []byte(testMessage))
	golden := filepath.Join("testdata", "golden-signed.eml")
	if *update {
		os.WriteFile(golden, signed, 0o644)
	}
	want, err := os.ReadFile(golden)
	if err != nil {
		t.Fatalf("%v (run go test ./dkim -run TestSignGolden -update)", err)
	}
	if !bytes.Equal(signed, want) {
		t.Errorf("signed message differs from %s:\n%s", golden, signed)
	}
	// The h= list: every present signed header once, From twice.
	for _, s := range sigs {
		if !strings.Contains(strings.NewReplacer("\r\n\t", "").Replace(s),
			"h=from:from:to:subject:date:message-id:mime-version:content-type;") {
			t.Errorf("unexpected h= in %q", s)
		}
		if strings.Contains(s, " l=") {
			t.Errorf("signature has l=: %q", s)
		}
	}
}

func TestSignVerifiesWithGoMsgauth(t *testing.T) {
	keys := testKeys(t)
	signed, _ := signMessage(t, keys, []byte(testMessage))
	vs, err := msgauth.VerifyWithOptions(bytes.NewReader(signed), &msgauth.VerifyOptions{LookupTXT: lookupFor(t, keys)})
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) != 2 {
		t.Fatalf("%d verifications, want 2", len(vs))
	}
	for _, v := range vs {
		if v.Err != nil {
			t.Errorf("%s: %v", v.Domain, v.Err)
		}
	}
	// One body byte changed: every signature fails.
	bad := bytes.Replace(signed, []byte("numbers"), []byte("numbern"), 1)
	vs, _ = msgauth.VerifyWithOptions(bytes.NewReader(bad), &msgauth.VerifyOptions{LookupTXT: lookupFor(t, keys)})
	for _, v := range vs {
		if v.Err == nil {
			t.Errorf("%s: tampered body verified", v.Domain)
		}
	}
}

// TestBodyHashMatchesGoMsgauth signs the same message with go-msgauth
// (relaxed/relaxed) and compares bh= for bodies of every shape.
func TestBodyHashMatchesGoMsgauth(t *testing.T) {
	keys := testKeys(t)
	bodies := []string{"", "\r\n", "a", "a  b \r\n\r\n", "x\r\n \r\n\ty\r\n\r\n\r\n", string(benchBody(200000))}
	for _, body := range bodies {
		msg := "From: a@example.com\r\n\r\n" + body
		var out bytes.Buffer
		err := msgauth.Sign(&out, strings.NewReader(msg), &msgauth.SignOptions{
			Domain: "example.com", Selector: "s", Signer: keys[1].Signer,
			HeaderCanonicalization: msgauth.CanonicalizationRelaxed, BodyCanonicalization: msgauth.CanonicalizationRelaxed,
		})
		if err != nil {
			t.Fatal(err)
		}
		theirs := out.String()
		theirs = theirs[strings.Index(theirs, "bh=")+3:]
		theirs = theirs[:strings.IndexByte(theirs, ';')]
		bh := NewBodyHasher()
		bh.Write([]byte(body))
		if ours := base64.StdEncoding.EncodeToString(bh.Sum()); ours != theirs {
			t.Errorf("body %.40q: bh %s, go-msgauth %s", body, ours, theirs)
		}
	}
}

// writeKeyFile writes the "NAME TXT" file pydkimverify.py reads.
func writeKeyFile(t testing.TB, keys []Key) string {
	var b strings.Builder
	for _, k := range keys {
		v, err := TXTValue(k.Signer)
		if err != nil {
			t.Fatal(err)
		}
		b.WriteString(RecordName(k.Selector, k.Domain) + " " + v + "\n")
	}
	p := filepath.Join(t.TempDir(), "keys.txt")
	if err := os.WriteFile(p, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// pyVerify runs python3-dkim on msg; it reports whether every signature passed.
func pyVerify(t testing.TB, keyFile string, msg []byte) (bool, string) {
	t.Helper()
	if _, err := exec.Command("/usr/bin/python3", "-c", "import dkim, nacl").CombinedOutput(); err != nil {
		testpeer.Missing(t, "python3-dkim / python3-nacl not installed (apt-get install python3-dkim)")
	}
	cmd := exec.Command("/usr/bin/python3", "testdata/pydkimverify.py", keyFile)
	cmd.Dir = "."
	cmd.Stdin = bytes.NewReader(msg)
	out, err := cmd.CombinedOutput()
	return err == nil, string(out)
}

func TestSignVerifiesWithPythonDKIM(t *testing.T) {
	keys := testKeys(t)
	kf := writeKeyFile(t, keys)
	signed, _ := signMessage(t, keys, []byte(testMessage))
	if ok, out := pyVerify(t, kf, signed); !ok || strings.Count(out, "pass") != 2 {
		t.Fatalf("python3-dkim rejects our signatures:\n%s", out)
	}
	bad := bytes.Replace(signed, []byte("numbers"), []byte("numbern"), 1)
	if ok, out := pyVerify(t, kf, bad); ok || strings.Contains(out, "pass") {
		t.Fatalf("python3-dkim accepts a changed body:\n%s", out)
	}
	// A large body in odd chunks.
	big := append([]byte("From: a@example.com\r\nSubject: big\r\n\r\n"), benchBody(300000)...)
	signed, _ = signMessage(t, keys, big)
	if ok, out := pyVerify(t, kf, signed); !ok {
		t.Fatalf("python3-dkim rejects a large message:\n%s", out)
	}
}

func TestSignRejectsWrongKey(t *testing.T) {
	keys := testKeys(t)
	if _, err := NewKey("example.com", "x", "rsa", keys[1].Signer); err == nil {
		t.Error("Ed25519 key accepted for an rsa selector")
	}
	if _, err := NewKey("example.com", "x", "ed25519", keys[0].Signer); err == nil {
		t.Error("RSA key accepted for an ed25519 selector")
	}
	var _ crypto.Signer = keys[0].Signer
}

// pickHeadersMap is pickHeaders as it was written first, with a map of
// lower-cased names: the reference the in-place comparison must equal.
func pickHeadersMap(headers []Header) (picked []Header, names []string) {
	byName := make(map[string][]int, len(SignedHeaders))
	for i, h := range headers {
		n := strings.ToLower(strings.TrimSpace(h.Name))
		byName[n] = append(byName[n], i)
	}
	for _, name := range SignedHeaders {
		lname := strings.ToLower(name)
		idx := byName[lname]
		reps := len(idx)
		if lname == "from" {
			reps++
		}
		for r := 0; r < reps; r++ {
			names = append(names, lname)
			if k := len(idx) - 1 - r; k >= 0 {
				picked = append(picked, headers[idx[k]])
			}
		}
	}
	return picked, names
}

func TestPickHeadersAsMap(t *testing.T) {
	pool := []string{"From", "FROM", " from ", "To", "tO", "Cc", "Subject", "Received", "Date",
		"Message-ID", "message-id", "Message-\u0130D", "\u212aeywords", "Reply-To", "In-Reply-To",
		"References", "MIME-Version", "Content-Type", "content-type\t", "X-Mailer", "", "Fröm"}
	r := rand.New(rand.NewPCG(5, 6))
	for iter := 0; iter < 2000; iter++ {
		var hs []Header
		for n := r.IntN(25); n > 0; n-- {
			hs = append(hs, Header{Name: pool[r.IntN(len(pool))], Value: fmt.Sprint(" v", n)})
		}
		gp, gn := pickHeaders(hs)
		wp, wn := pickHeadersMap(hs)
		if !slices.Equal(gp, wp) || !slices.Equal(gn, wn) {
			t.Fatalf("%q:\n got %q %q\nwant %q %q", hs, gp, gn, wp, wn)
		}
	}
}

func TestAppendLowerAsToLower(t *testing.T) {
	for _, s := range []string{"", "From", "DKIM-Signature", "message-id", "X-\u0130D", "\u212aeywords", "Fröm", "A\u00c0Z"} {
		if got := string(appendLower([]byte("x:"), s)); got != "x:"+strings.ToLower(s) {
			t.Errorf("%q: got %q, want %q", s, got, "x:"+strings.ToLower(s))
		}
	}
}
