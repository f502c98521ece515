package dkim

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ed25519"
	"fmt"
	"math/rand/v2"
	"strings"
	"testing"
	"time"

	msgauth "github.com/emersion/go-msgauth/dkim"
	"github.com/mailnode/mailnode/resolver"
)

// keyDB answers key lookups from the TXT records given (resolver.Mock): a
// name missing is NXDOMAIN.
func keyDB(txt map[string][]string) *resolver.Mock { return &resolver.Mock{TXT: txt} }

// ours verifies msg with the Verifier, the body given in chunks of random
// sizes (as the milter protocol cuts it).
func ours(t testing.TB, msg []byte, db *resolver.Mock, rng *rand.Rand) []Result {
	t.Helper()
	hs, body := splitMessage(t, msg)
	v := NewVerifier(context.Background(), hs, db.LookupTXT, 8, time.Now())
	for len(body) > 0 {
		n := min(len(body), 1+rng.IntN(97))
		v.Write(body[:n])
		body = body[n:]
	}
	return v.Results(context.Background())
}

// theirs verifies msg with go-msgauth: the statuses the Verifier must give.
func theirs(t testing.TB, msg []byte, db *resolver.Mock) []Status {
	t.Helper()
	vs, err := msgauth.VerifyWithOptions(bytes.NewReader(msg), &msgauth.VerifyOptions{
		LookupTXT: func(name string) ([]string, error) { return db.LookupTXT(context.Background(), name) },
	})
	if err != nil {
		t.Fatalf("go-msgauth: %v", err)
	}
	var out []Status
	for _, v := range vs {
		switch {
		case v.Err == nil:
			out = append(out, Pass)
		case msgauth.IsTempFail(v.Err):
			out = append(out, TempError)
		case msgauth.IsPermFail(v.Err):
			out = append(out, PermError)
		default:
			out = append(out, Fail)
		}
	}
	return out
}

func statuses(rs []Result) []Status {
	var out []Status
	for _, r := range rs {
		out = append(out, r.Status)
	}
	return out
}

// msgauthSign signs msg with go-msgauth, an independent signer.
func msgauthSign(t testing.TB, msg []byte, o msgauth.SignOptions) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := msgauth.Sign(&b, bytes.NewReader(msg), &o); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// verifyBodies are bodies as Postfix hands them over (CRLF line ends). A
// lone CR is left out: go-msgauth's relaxed canonicalization takes it for a
// line end (dropping the space before it, and itself at the end of the
// body), where RFC 6376 and mailnode's signer and verifier keep it as
// content; TestSimpleBody covers it.
var verifyBodies = map[string]string{
	"plain":          "Hello Carol,\r\n\r\nthe numbers are in.\r\n",
	"trailing empty": "Hello\r\n\r\n\r\n\r\n",
	"no final CRLF":  "Hello\r\nno line end",
	"empty":          "",
	"only empty":     "\r\n\r\n",
	"whitespace":     "a  b\t\tc   \r\n \t \r\n  lead\r\nend\t\r\n",
	"long line":      strings.Repeat("x", 5000) + "\r\n" + strings.Repeat("y ", 3000) + "\r\n",
}

const verifyHeader = "From: Outside News <news@outside.test>\r\n" +
	"To: Alice <alice@example.com>,\r\n  Bob <bob@example.com>\r\n" +
	"Subject:   Quarterly\t report \r\n" +
	"Date: Sun, 01 Mar 2026 12:00:00 +0000\r\n" +
	"Message-ID: <v1@outside.test>\r\n"

// TestVerifierAgreesWithGoMsgauth: for every body, canonicalization and
// key type, an intact message passes and every tampering fails, exactly as
// go-msgauth (an independent verifier) decides.
func TestVerifierAgreesWithGoMsgauth(t *testing.T) {
	keys := testKeys(t)
	db := keyDB(map[string][]string{})
	for _, k := range keys {
		v, _ := TXTValue(k.Signer)
		db.TXT[k.Selector+"._domainkey.outside.test"] = []string{v}
	}
	rng := rand.New(rand.NewPCG(1, 2))
	tamper := map[string]func([]byte) []byte{
		"intact": func(m []byte) []byte { return m },
		"body byte": func(m []byte) []byte {
			i := bytes.Index(m, []byte("\r\n\r\n")) + 4
			if i >= len(m) {
				return append(m, 'x')
			}
			m[len(m)-1] ^= 0x20
			return m
		},
		"subject": func(m []byte) []byte { return bytes.Replace(m, []byte("Quarterly"), []byte("Quarterlx"), 1) },
		"header folded anew": func(m []byte) []byte {
			return bytes.Replace(m, []byte("Subject:   Quarterly\t report"), []byte("Subject: Quarterly\r\n report"), 1)
		},
		"From added on top":          func(m []byte) []byte { return append([]byte("From: evil@outside.test\r\n"), m...) },
		"trailing empty lines added": func(m []byte) []byte { return append(m, "\r\n\r\n"...) },
	}
	for bodyName, body := range verifyBodies {
		for _, hc := range []msgauth.Canonicalization{msgauth.CanonicalizationSimple, msgauth.CanonicalizationRelaxed} {
			for _, bc := range []msgauth.Canonicalization{msgauth.CanonicalizationSimple, msgauth.CanonicalizationRelaxed} {
				for _, k := range keys {
					signed := msgauthSign(t, []byte(verifyHeader+"\r\n"+body), msgauth.SignOptions{
						Domain: "outside.test", Selector: k.Selector, Signer: k.Signer.(crypto.Signer),
						HeaderCanonicalization: hc, BodyCanonicalization: bc,
						HeaderKeys: []string{"From", "To", "Subject", "Date", "Message-ID"},
					})
					for tn, f := range tamper {
						name := fmt.Sprintf("%s/%s-%s/%s/%s", bodyName, hc, bc, k.Algorithm, tn)
						m := f(bytes.Clone(signed))
						got, want := statuses(ours(t, m, db, rng)), theirs(t, m, db)
						if fmt.Sprint(got) != fmt.Sprint(want) {
							t.Errorf("%s: ours %v, go-msgauth %v", name, got, want)
						}
						if tn == "intact" && (len(got) != 1 || got[0] != Pass) {
							t.Errorf("%s: intact message: %v", name, got)
						}
					}
				}
			}
		}
	}
}

// TestVerifierOwnSignatures: what milterd signs (RSA and Ed25519,
// over-signed From) verifies, and an extra From breaks it.
func TestVerifierOwnSignatures(t *testing.T) {
	keys := testKeys(t)
	signed, _ := signMessage(t, keys, []byte(testMessage))
	db := keyDB(map[string][]string{})
	for _, k := range keys {
		v, _ := TXTValue(k.Signer)
		db.TXT[k.Selector+"._domainkey."+k.Domain] = []string{v}
	}
	rng := rand.New(rand.NewPCG(3, 4))
	rs := ours(t, signed, db, rng)
	if len(rs) != 2 || rs[0].Status != Pass || rs[1].Status != Pass {
		t.Fatalf("own signatures: %+v", rs)
	}
	if rs[0].Domain != "example.com" || rs[0].Identifier != "@example.com" || rs[0].Selector != "mx2026r" || rs[0].Algorithm != "rsa-sha256" {
		t.Errorf("result fields: %+v", rs[0])
	}
	i := bytes.Index(signed, []byte("From: Alice"))
	forged := append(bytes.Clone(signed[:i]), append([]byte("From: Mallory <m@example.com>\r\n"), signed[i:]...)...)
	for _, r := range ours(t, forged, db, rng) {
		if r.Status != Fail {
			t.Errorf("second From added: %+v", r)
		}
	}
}

// TestVerifierKeyRecords: the key record's problems, each as go-msgauth
// classes it.
func TestVerifierKeyRecords(t *testing.T) {
	keys := testKeys(t)
	rsaTXT, _ := TXTValue(keys[0].Signer)
	edTXT, _ := TXTValue(keys[1].Signer)
	msg := []byte(verifyHeader + "\r\n" + verifyBodies["plain"])
	signed := msgauthSign(t, msg, msgauth.SignOptions{Domain: "outside.test", Selector: "s", Signer: keys[0].Signer.(crypto.Signer)})
	const name = "s._domainkey.outside.test"
	cases := []struct {
		name string
		txt  []string
		want Status
	}{
		{"good", []string{rsaTXT}, Pass},
		{"tags reordered and spaced", []string{"k = rsa ; p=" + rsaTXT[strings.Index(rsaTXT, "p=")+2:] + " ; v=DKIM1"}, Pass},
		{"temporary", nil, TempError}, // the lookup times out
		{"revoked", []string{"v=DKIM1; k=rsa; p="}, PermError},
		{"two records", []string{rsaTXT, rsaTXT}, PermError},
		{"Ed25519 key for rsa-sha256", []string{edTXT}, PermError},
		{"sha1 only", []string{rsaTXT + "; h=sha1"}, PermError},
		{"sha256 listed", []string{rsaTXT + "; h=sha1:sha256"}, Pass},
		{"other service", []string{rsaTXT + "; s=tlsrpt"}, PermError},
		{"wrong version", []string{strings.Replace(rsaTXT, "DKIM1", "DKIM2", 1)}, PermError},
		{"garbage p=", []string{"v=DKIM1; p=!!!"}, PermError},
		{"no p=", []string{"v=DKIM1; k=rsa"}, PermError},
	}
	rng := rand.New(rand.NewPCG(5, 6))
	for _, c := range cases {
		db := keyDB(map[string][]string{name: c.txt})
		if c.want == TempError {
			db.Fail = []string{name}
		}
		got := statuses(ours(t, signed, db, rng))
		want := theirs(t, signed, db)
		if len(got) != 1 || got[0] != c.want {
			t.Errorf("%s: got %v, want %v", c.name, got, c.want)
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("%s: ours %v, go-msgauth %v", c.name, got, want)
		}
	}
	if got := statuses(ours(t, signed, keyDB(nil), rng)); len(got) != 1 || got[0] != PermError {
		t.Errorf("no key record (NXDOMAIN): %v", got)
	}
}

// TestVerifierSignatureTags: signatures that cannot be used.
func TestVerifierSignatureTags(t *testing.T) {
	keys := testKeys(t)
	rsaTXT, _ := TXTValue(keys[0].Signer)
	db := keyDB(map[string][]string{"s._domainkey.outside.test": {rsaTXT}})
	msg := []byte(verifyHeader + "\r\n" + verifyBodies["plain"])
	signed := string(msgauthSign(t, msg, msgauth.SignOptions{Domain: "outside.test", Selector: "s", Signer: keys[0].Signer.(crypto.Signer)}))
	sig, rest, _ := strings.Cut(signed, "\r\nFrom:")
	rest = "\r\nFrom:" + rest
	expired := msgauthSign(t, msg, msgauth.SignOptions{Domain: "outside.test", Selector: "s", Signer: keys[0].Signer.(crypto.Signer),
		Expiration: time.Now().Add(-time.Hour)})
	cases := []struct {
		name string
		msg  string
		want Status
	}{
		{"version 2", strings.Replace(sig, "v=1", "v=2", 1) + rest, PermError},
		{"no d=", strings.Replace(sig, "d=outside.test", "", 1) + rest, PermError},
		{"d= repeated", strings.Replace(sig, "d=outside.test;", "d=outside.test; d=outside.test;", 1) + rest, PermError},
		{"i= outside d=", strings.Replace(sig, "d=outside.test;", "d=outside.test; i=@elsewhere.test;", 1) + rest, PermError},
		{"unknown algorithm", strings.Replace(sig, "a=rsa-sha256", "a=rsa-md5", 1) + rest, PermError},
		{"rsa-sha1", strings.Replace(sig, "a=rsa-sha256", "a=rsa-sha1", 1) + rest, PermError},
		{"l= given", strings.Replace(sig, "d=outside.test;", "d=outside.test; l=5;", 1) + rest, Fail},
		{"bad canonicalization", strings.Replace(sig, "c=", "c=loose/", 1) + rest, PermError},
		{"From not signed", strings.Replace(sig, "h=From:", "h=", 1) + rest, PermError},
		{"b= changed", strings.Replace(sig, "b=", "b=AAAA", 1) + rest, Fail},
		{"expired", string(expired), PermError},
		{"bad tag name", strings.Replace(sig, "d=outside.test;", "d=outside.test; 9x=1;", 1) + rest, PermError},
	}
	rng := rand.New(rand.NewPCG(7, 8))
	for _, c := range cases {
		got := statuses(ours(t, []byte(c.msg), db, rng))
		if len(got) != 1 || got[0] != c.want {
			t.Errorf("%s: got %v, want %v\n%s", c.name, got, c.want, c.msg[:min(len(c.msg), 300)])
		}
	}
}

// TestVerifierWaitsForKeys: Results gives temperror for a lookup still
// running when its context ends, and Abort ends the lookups.
func TestVerifierWaitsForKeys(t *testing.T) {
	keys := testKeys(t)
	signed, _ := signMessage(t, keys[:1], []byte(testMessage))
	hs, body := splitMessage(t, signed)
	started := make(chan struct{})
	slow := func(ctx context.Context, name string) ([]string, error) {
		close(started)
		<-ctx.Done()
		return nil, ctx.Err()
	}
	v := NewVerifier(context.Background(), hs, slow, 8, time.Now())
	v.Write(body)
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	rs := v.Results(ctx)
	if len(rs) != 1 || rs[0].Status != TempError {
		t.Fatalf("slow key lookup: %+v", rs)
	}
}

// TestVerifierMaxSignatures: only the first max signatures are checked.
func TestVerifierMaxSignatures(t *testing.T) {
	var hs []Header
	for range 20 {
		hs = append(hs, Header{Name: "DKIM-Signature", Value: " v=1; junk"})
	}
	v := NewVerifier(context.Background(), hs, keyDB(nil).LookupTXT, 8, time.Now())
	if v.Signatures() != 8 {
		t.Fatalf("%d signatures checked", v.Signatures())
	}
	for _, r := range v.Results(context.Background()) {
		if r.Status != PermError {
			t.Errorf("junk signature: %+v", r)
		}
	}
}

func TestWithoutB(t *testing.T) {
	for in, want := range map[string]string{
		" v=1; b=abc\r\n def; bh=xyz": " v=1; b=; bh=xyz",
		" v=1; bh=xyz; b = abc":       " v=1; bh=xyz; b =",
		" b=abc;":                     " b=;",
		" v=1;\r\n\tb\t=\tQ;d=x":      " v=1;\r\n\tb\t=;d=x",
		" v=1; bh=xyz":                " v=1; bh=xyz",
	} {
		if got := withoutB(in); got != want {
			t.Errorf("withoutB(%q) = %q, want %q", in, got, want)
		}
	}
}

// FuzzVerifier: whatever the body and header, a message signed by
// go-msgauth verifies, the same message with one body byte changed does not
// (unless the change is one canonicalization removes), and nothing panics.
func FuzzVerifier(f *testing.F) {
	for _, b := range verifyBodies {
		f.Add([]byte(b), "Quarterly report", true, false, uint16(0))
	}
	f.Add([]byte("x\r\n"), "a\r\n b", false, true, uint16(1))
	seed := make([]byte, ed25519.SeedSize)
	key := ed25519.NewKeyFromSeed(seed)
	txt, _ := TXTValue(key)
	db := keyDB(map[string][]string{"f._domainkey.outside.test": {txt}})
	f.Fuzz(func(t *testing.T, body []byte, subject string, relaxedH, relaxedB bool, flip uint16) {
		if strings.ContainsAny(subject, "\r\n\x00") || bytes.IndexByte(body, 0) >= 0 {
			return
		}
		canon := func(r bool) msgauth.Canonicalization {
			if r {
				return msgauth.CanonicalizationRelaxed
			}
			return msgauth.CanonicalizationSimple
		}
		// Postfix hands the milter CRLF line ends; no lone CR (see verifyBodies).
		body = bytes.ReplaceAll(bytes.ReplaceAll(body, []byte("\r"), nil), []byte("\n"), []byte("\r\n"))
		msg := []byte("From: a@outside.test\r\nSubject: " + subject + "\r\n\r\n" + string(body))
		signed := msgauthSign(t, msg, msgauth.SignOptions{Domain: "outside.test", Selector: "f", Signer: key,
			HeaderCanonicalization: canon(relaxedH), BodyCanonicalization: canon(relaxedB)})
		rng := rand.New(rand.NewPCG(uint64(flip), 9))
		if got := statuses(ours(t, signed, db, rng)); len(got) != 1 || got[0] != Pass {
			t.Fatalf("intact message: %v", got)
		}
		if len(body) == 0 {
			return
		}
		m := bytes.Clone(signed)
		i := len(m) - len(body) + int(flip)%len(body)
		if m[i] == '\r' || m[i] == '\n' || m[i] == ' ' || m[i] == '\t' {
			return // whitespace changes can be canonical
		}
		m[i] ^= 0x01
		if m[i] == '\r' || m[i] == '\n' || m[i] == ' ' || m[i] == '\t' {
			return
		}
		got, want := statuses(ours(t, m, db, rng)), theirs(t, m, db)
		if fmt.Sprint(got) != fmt.Sprint(want) || got[0] != Fail {
			t.Fatalf("body byte %d changed: ours %v, go-msgauth %v", i, got, want)
		}
	})
}

// TestSimpleBody: the simple body canonicalization (RFC 6376 section
// 3.4.3), whatever the chunks it is written in.
func TestSimpleBody(t *testing.T) {
	for in, want := range map[string]string{
		"":                        "\r\n",
		"\r\n\r\n":                "\r\n",
		"abc":                     "abc\r\n",
		"abc\r\n":                 "abc\r\n",
		"abc\r\n\r\n\r\n":         "abc\r\n",
		"a \t\r\n\r\nb  \r\n\r\n": "a \t\r\n\r\nb  \r\n",
		"a\nb\n\n":                "a\r\nb\r\n",
		"one\rtwo\r\r\nthree\r":   "one\rtwo\r\r\nthree\r\r\n",
		"x\r\n\r":                 "x\r\n\r\r\n",
		"\r":                      "\r\r\n",
	} {
		for size := 1; size <= len(in)+1; size++ {
			var out bytes.Buffer
			var c SimpleBody
			c.Reset(&out)
			for rest := in; ; {
				n := min(size, len(rest))
				c.Write([]byte(rest[:n]))
				if rest = rest[n:]; rest == "" {
					break
				}
			}
			c.Close()
			if out.String() != want {
				t.Errorf("simple(%q) in chunks of %d = %q, want %q", in, size, out.String(), want)
			}
		}
	}
}
