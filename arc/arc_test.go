package arc

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/mailnode/mailnode/dkim"
	"github.com/mailnode/mailnode/dns/dnstest"
	"github.com/mailnode/mailnode/internal/testpeer"
	"github.com/mailnode/mailnode/resolver"
)

// zone is the test's DNS: key record name -> TXT value, shared by our
// validator (lookup) and python3-dkim (a key file).
type zone struct {
	mu   sync.Mutex
	recs map[string]string
}

func (z *zone) lookup(_ context.Context, name string) ([]string, error) {
	z.mu.Lock()
	defer z.mu.Unlock()
	v, ok := z.recs[strings.ToLower(strings.TrimSuffix(name, "."))]
	if !ok {
		return nil, errors.New("NXDOMAIN " + name)
	}
	return []string{v}, nil
}

// file writes the records as pyarc.py reads them.
func (z *zone) file(t *testing.T) string {
	z.mu.Lock()
	defer z.mu.Unlock()
	var b strings.Builder
	for n, v := range z.recs {
		fmt.Fprintf(&b, "%s %s\n", n, v)
	}
	p := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

var (
	keyOnce sync.Once
	rsaKeys []*rsa.PrivateKey
)

// testKey returns an RSA key of the test domain d with selector s, publishes
// it in z, and writes its PKCS#1 PEM (what python3-dkim signs with).
func testKey(t *testing.T, z *zone, n int, d, s string) (dkim.Key, string) {
	t.Helper()
	keyOnce.Do(func() {
		for range 3 {
			k, err := rsa.GenerateKey(rand.Reader, 2048)
			if err != nil {
				panic(err)
			}
			rsaKeys = append(rsaKeys, k)
		}
	})
	rk := rsaKeys[n]
	txt, err := dkim.TXTValue(rk)
	if err != nil {
		t.Fatal(err)
	}
	z.mu.Lock()
	if z.recs == nil {
		z.recs = map[string]string{}
	}
	z.recs[s+"._domainkey."+d] = txt
	z.mu.Unlock()
	k, err := dkim.NewKey(d, s, "rsa", rk)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "key.pem")
	pemData := pem.EncodeToMemory(&pem.Block{Type: "RSA PRIVATE KEY", Bytes: x509.MarshalPKCS1PrivateKey(rk)})
	if err := os.WriteFile(p, pemData, 0o600); err != nil {
		t.Fatal(err)
	}
	return k, p
}

const testMessage = "Received: from mx.origin.test by mx.forwarder.test; Sun, 6 Dec 2026 08:00:00 +0000\r\n" +
	"From: Origin Sender <sender@origin.test>\r\n" +
	"To: sales@forwarder.test\r\n" +
	"Subject: quarterly   figures\r\n" +
	"\tfolded\r\n" +
	"Date: Sun, 6 Dec 2026 08:00:00 +0000\r\n" +
	"Message-ID: <arc-1@origin.test>\r\n" +
	"Authentication-Results: mx.forwarder.test; spf=pass smtp.mailfrom=origin.test\r\n" +
	"\r\n" +
	"Numbers  for the quarter.  \r\n" +
	"\r\n" +
	"Second paragraph.\r\n\r\n\r\n"

var now = time.Date(2026, 12, 6, 8, 0, 0, 0, time.UTC)

// seal adds our next ARC set on top of msg, validating its chain first.
func seal(t *testing.T, z *zone, k dkim.Key, authserv string, msg []byte) ([]byte, Result) {
	t.Helper()
	hs, body := SplitMessage(msg)
	v := NewValidator(context.Background(), hs, z.lookup, now)
	v.Write(body)
	r := v.Result(context.Background())
	res := []string{"spf=pass smtp.mailfrom=origin.test"}
	if r.CV != None {
		res = append(res, "arc="+string(r.CV))
	}
	set, err := Sealer{Key: k, AuthServID: authserv}.Seal(hs, v.BodyHash(), r, res, now)
	if err != nil {
		t.Fatalf("Seal: %v", err)
	}
	return prepend(set, msg), r
}

func prepend(set []dkim.Header, msg []byte) []byte {
	var b bytes.Buffer
	for _, h := range set {
		b.WriteString(h.Name + ":" + h.Value + "\r\n")
	}
	b.Write(msg)
	return b.Bytes()
}

// pyarc runs arc/testdata/pyarc.py.
func pyarc(t *testing.T, msg []byte, args ...string) (string, bool) {
	t.Helper()
	if err := exec.Command("/usr/bin/python3", "-c", "import dkim, authres").Run(); err != nil {
		testpeer.Missing(t, "python3-dkim / python3-authres not installed (apt-get install python3-dkim python3-authres)")
	}
	cmd := exec.Command("/usr/bin/python3", append([]string{"testdata/pyarc.py"}, args...)...)
	cmd.Stdin = bytes.NewReader(msg)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err := cmd.Run()
	if args[0] == "sign" && err != nil {
		t.Fatalf("python3-dkim arc_sign: %v\n%s", err, errb.String())
	}
	return out.String(), err == nil
}

func verifyOurs(t *testing.T, z *zone, msg []byte) Result {
	t.Helper()
	return Verify(context.Background(), msg, z.lookup, now)
}

func TestSealI1(t *testing.T) {
	z := &zone{}
	k, _ := testKey(t, z, 0, "forwarder.test", "arc1")
	sealed, prior := seal(t, z, k, "mx.forwarder.test", []byte(testMessage))
	if prior.CV != None {
		t.Fatalf("an unsealed message validates as %s", prior.CV)
	}
	for _, want := range []string{"ARC-Seal: i=1; a=rsa-sha256; cv=none; d=forwarder.test; s=arc1;",
		"ARC-Message-Signature: i=1; a=rsa-sha256; c=relaxed/relaxed;\r\n\td=forwarder.test; s=arc1;",
		"ARC-Authentication-Results: i=1; mx.forwarder.test;\r\n\tspf=pass smtp.mailfrom=origin.test\r\n"} {
		if !bytes.Contains(sealed, []byte(want)) {
			t.Errorf("sealed message lacks %q:\n%s", want, sealed)
		}
	}
	if !bytes.HasPrefix(sealed, []byte("ARC-Seal:")) {
		t.Errorf("the seal is not on top:\n%s", sealed)
	}
	if r := verifyOurs(t, z, sealed); r.CV != Pass {
		t.Errorf("our validator: %s (%s)\n%s", r.CV, r.Reason, sealed)
	}
	kf := z.file(t)
	if out, ok := pyarc(t, sealed, "verify", kf); !ok || !strings.HasPrefix(out, "pass") {
		t.Errorf("python3-dkim arc_verify: %s\n%s", out, sealed)
	}

	// One body byte, one signed header changed: both validators fail.
	for name, bad := range map[string][]byte{
		"body":    bytes.Replace(sealed, []byte("Second paragraph"), []byte("Second paragrapH"), 1),
		"subject": bytes.Replace(sealed, []byte("quarterly"), []byte("quarterlY"), 1),
	} {
		if r := verifyOurs(t, z, bad); r.CV != Fail {
			t.Errorf("%s changed: our validator says %s", name, r.CV)
		}
		if out, ok := pyarc(t, bad, "verify", kf); ok || !strings.HasPrefix(out, "fail") {
			t.Errorf("%s changed: python3-dkim says %s", name, out)
		}
	}
	// Whitespace and folding that relaxed canonicalization ignores.
	loose := bytes.Replace(sealed, []byte("Subject: quarterly"), []byte("Subject:   quarterly "), 1)
	loose = bytes.Replace(loose, []byte("Numbers  for"), []byte("Numbers for"), 1)
	if r := verifyOurs(t, z, loose); r.CV != Pass {
		t.Errorf("relaxed changes: our validator says %s (%s)", r.CV, r.Reason)
	}
	// The key record gone from DNS: fail, naming the lookup.
	z.mu.Lock()
	delete(z.recs, "arc1._domainkey.forwarder.test")
	z.mu.Unlock()
	if r := verifyOurs(t, z, sealed); r.CV != Fail || !strings.Contains(r.Reason, "NXDOMAIN") {
		t.Errorf("without the key: %s (%s)", r.CV, r.Reason)
	}
}

// A message sealed elsewhere (python3-dkim's arc_sign) gets i=2 with
// cv=pass; our own i=1 does too; both validators pass the chain.
func TestSealI2(t *testing.T) {
	z := &zone{}
	_, otherPEM := testKey(t, z, 1, "list.test", "s1")
	ours, _ := testKey(t, z, 0, "forwarder.test", "arc1")
	msg := strings.Replace(testMessage, "mx.forwarder.test; spf", "mx.list.test; spf", 1)
	kf := z.file(t)
	first, _ := pyarc(t, []byte(msg), "sign", kf, otherPEM, "s1", "list.test", "mx.list.test")
	if !strings.Contains(first, "cv=none") {
		t.Fatalf("python3-dkim's i=1:\n%s", first)
	}
	if r := verifyOurs(t, z, []byte(first)); r.CV != Pass {
		t.Fatalf("our validator on python3-dkim's i=1: %s (%s)\n%s", r.CV, r.Reason, first)
	}
	for name, in := range map[string][]byte{"python i=1": []byte(first)} {
		sealed, prior := seal(t, z, ours, "mx.forwarder.test", in)
		if prior.CV != Pass || prior.Chain.Highest != 1 {
			t.Fatalf("%s: prior %+v", name, prior)
		}
		if !bytes.HasPrefix(sealed, []byte("ARC-Seal: i=2; a=rsa-sha256; cv=pass;")) {
			t.Errorf("%s: no i=2 cv=pass seal on top:\n%s", name, sealed)
		}
		if r := verifyOurs(t, z, sealed); r.CV != Pass {
			t.Errorf("%s: our validator: %s (%s)", name, r.CV, r.Reason)
		}
		if out, ok := pyarc(t, sealed, "verify", kf); !ok {
			t.Errorf("%s: python3-dkim arc_verify: %s\n%s", name, out, sealed)
		}
		// A third sealer (python) accepts our i=2 as a pass and goes on.
		third, _ := pyarc(t, []byte(strings.Replace(string(sealed), "Authentication-Results: mx.list.test;", "Authentication-Results: mx.list.test; arc=pass;", 1)),
			"sign", kf, otherPEM, "s1", "list.test", "mx.list.test")
		if !strings.HasPrefix(third, "ARC-Seal: i=3; cv=pass;") {
			t.Errorf("%s: python3-dkim's i=3:\n%s", name, third)
		}
		if r := verifyOurs(t, z, []byte(third)); r.CV != Pass {
			t.Errorf("%s: our validator on i=3: %s (%s)", name, r.CV, r.Reason)
		}
	}
	// Our own i=1, then our i=2.
	one, _ := seal(t, z, ours, "mx.forwarder.test", []byte(testMessage))
	two, prior := seal(t, z, ours, "mx.forwarder.test", one)
	if prior.CV != Pass || !bytes.HasPrefix(two, []byte("ARC-Seal: i=2; a=rsa-sha256; cv=pass;")) {
		t.Fatalf("ours twice: prior %s (%s):\n%s", prior.CV, prior.Reason, two)
	}
	if out, ok := pyarc(t, two, "verify", kf); !ok {
		t.Errorf("ours twice: python3-dkim arc_verify: %s\n%s", out, two)
	}
}

// A chain broken on the way (the body changed after i=1) validates as
// fail; the next set says cv=fail and seals only itself, and ends the
// chain: no set is added after it.
func TestSealOnFailedChain(t *testing.T) {
	z := &zone{}
	ours, _ := testKey(t, z, 0, "forwarder.test", "arc1")
	one, _ := seal(t, z, ours, "mx.forwarder.test", []byte(testMessage))
	broken := bytes.Replace(one, []byte("Second paragraph"), []byte("Second paragrapH"), 1)
	two, prior := seal(t, z, ours, "mx.forwarder.test", broken)
	if prior.CV != Fail || !strings.Contains(prior.Reason, "body hash") {
		t.Fatalf("prior: %s (%s)", prior.CV, prior.Reason)
	}
	if !bytes.HasPrefix(two, []byte("ARC-Seal: i=2; a=rsa-sha256; cv=fail;")) {
		t.Fatalf("no cv=fail seal:\n%s", two)
	}
	r := verifyOurs(t, z, two)
	if r.CV != Fail || !r.Terminated {
		t.Errorf("after cv=fail: %s terminated=%v", r.CV, r.Terminated)
	}
	// The cv=fail seal covers its own set only: it verifies on its own.
	if err := (&Validator{}).checkSealOnly(t, z, two); err != nil {
		t.Errorf("the cv=fail seal: %v", err)
	}
	hs, body := SplitMessage(two)
	v := NewValidator(context.Background(), hs, z.lookup, now)
	v.Write(body)
	if _, err := (Sealer{Key: ours, AuthServID: "x"}).Seal(hs, v.BodyHash(), v.Result(context.Background()), nil, now); !errors.Is(err, ErrTerminated) {
		t.Errorf("sealing after cv=fail: %v", err)
	}
	kf := z.file(t)
	if out, ok := pyarc(t, two, "verify", kf); ok || strings.HasPrefix(out, "pass") {
		t.Errorf("python3-dkim passes a failed chain: %s", out)
	}
}

// checkSealOnly verifies the top seal of msg over its own set alone.
func (*Validator) checkSealOnly(t *testing.T, z *zone, msg []byte) error {
	hs, _ := SplitMessage(msg)
	c := ParseChain(hs)
	if c.Err != nil {
		return c.Err
	}
	top := c.Sets[len(c.Sets)-1]
	s := parseSeal(top.Seal, now)
	if s.err != nil {
		return s.err
	}
	k, st, reason := dkim.LookupKey(context.Background(), z.lookup, s.selector+"._domainkey."+s.domain, "rsa")
	if k == nil {
		return fmt.Errorf("%s %s", st, reason)
	}
	return verifyRSA(k, sealDigest([]Set{top}), s.b)
}

func TestSealRefuses(t *testing.T) {
	z := &zone{}
	ours, _ := testKey(t, z, 0, "forwarder.test", "arc1")
	_, ek, _ := ed25519.GenerateKey(rand.Reader)
	ed, err := dkim.NewKey("forwarder.test", "e1", "ed25519", ek)
	if err != nil {
		t.Fatal(err)
	}
	hs, _ := SplitMessage([]byte(testMessage))
	if _, err := (Sealer{Key: ed, AuthServID: "x"}).Seal(hs, make([]byte, 32), Result{CV: None}, nil, now); !errors.Is(err, ErrNotRSA) {
		t.Errorf("Ed25519: %v", err)
	}
	// 50 sets: no 51st.
	var b strings.Builder
	for i := 50; i >= 1; i-- {
		fmt.Fprintf(&b, "ARC-Seal: i=%d; a=rsa-sha256; cv=pass; d=x.test; s=s; b=AAAA\r\n", i)
		fmt.Fprintf(&b, "ARC-Message-Signature: i=%d; a=rsa-sha256; d=x.test; s=s; h=from; bh=AAAA; b=AAAA\r\n", i)
		fmt.Fprintf(&b, "ARC-Authentication-Results: i=%d; x.test; none\r\n", i)
	}
	msg := b.String() + testMessage
	r := verifyOurs(t, z, []byte(msg))
	if r.CV != Fail {
		t.Errorf("50 forged sets: %s", r.CV)
	}
	hs, _ = SplitMessage([]byte(msg))
	if _, err := (Sealer{Key: ours, AuthServID: "x"}).Seal(hs, make([]byte, 32), r, nil, now); !errors.Is(err, ErrInstanceLimit) {
		t.Errorf("51st set: %v", err)
	}
}

// Malformed chains fail with a reason, never a panic.
func TestMalformedChains(t *testing.T) {
	z := &zone{}
	testKey(t, z, 0, "forwarder.test", "arc1")
	set := func(i int, cv string) string {
		return fmt.Sprintf("ARC-Seal: i=%d; a=rsa-sha256; cv=%s; d=forwarder.test; s=arc1; b=AAAA\r\n"+
			"ARC-Message-Signature: i=%d; a=rsa-sha256; c=relaxed/relaxed; d=forwarder.test; s=arc1; h=from; bh=AAAA; b=AAAA\r\n"+
			"ARC-Authentication-Results: i=%d; mx.forwarder.test; none\r\n", i, cv, i, i)
	}
	for name, c := range map[string]struct{ head, reason string }{
		"missing instance 1": {set(2, "pass"), "instance 1 has 0"},
		"duplicate seal":     {set(1, "none") + "ARC-Seal: i=1; a=rsa-sha256; cv=none; d=x; s=y; b=AA\r\n", "instance 1 has 1 ARC-Authentication-Results, 1 ARC-Message-Signature and 2 ARC-Seal"},
		"no i=":              {"ARC-Seal: a=rsa-sha256; cv=none; d=x; s=y; b=AA\r\n", "no instance tag"},
		"i=0":                {"ARC-Seal: i=0; cv=none\r\n", "below 1"},
		"i=51":               {"ARC-Seal: i=51; cv=none\r\n", "above 50"},
		"i=huge":             {"ARC-Seal: i=99999999999999999999; cv=none\r\n", "malformed instance"},
		"bad tags":           {"ARC-Message-Signature: i=1; ==; ;\r\n", "ARC-Message-Signature"},
		"AAR without i":      {"ARC-Authentication-Results: mx; none\r\n", "no instance tag"},
		"unknown cv":         {strings.Replace(set(1, "none"), "cv=none", "cv=maybe", 1), "unknown cv"},
		"i=1 with cv=pass":   {set(1, "pass"), "cv=pass"},
		"h= in seal":         {strings.Replace(set(1, "none"), "cv=none;", "cv=none; h=from;", 1), "h= is not allowed"},
		"AMS signs ARC-Seal": {strings.Replace(set(1, "none"), "h=from", "h=from:arc-seal", 1), "lists ARC-Seal"},
		"sha1":               {strings.Replace(set(1, "none"), "a=rsa-sha256; cv", "a=rsa-sha1; cv", 1), "not rsa-sha256"},
		"bad signature":      {set(1, "none"), "does not"},
		"empty":              {"ARC-Seal:\r\nARC-Message-Signature:\r\nARC-Authentication-Results:\r\n", "no instance tag"},
		"AMS without bh":     {strings.Replace(set(1, "none"), "bh=AAAA; ", "", 1), "no bh= tag"},
		"expired seal":       {strings.Replace(set(1, "none"), "cv=none;", "cv=none; x=1;", 1), "expired"},
		"bad x=":             {strings.Replace(set(1, "none"), "cv=none;", "cv=none; x=12abc;", 1), "malformed x="},
		"latest says fail":   {set(1, "fail"), "ended"},
	} {
		r := verifyOurs(t, z, []byte(c.head+testMessage))
		if r.CV != Fail || !strings.Contains(r.Reason, c.reason) {
			t.Errorf("%s: %s (%s), want fail with %q", name, r.CV, r.Reason, c.reason)
		}
	}
}

func FuzzVerify(f *testing.F) {
	z := &zone{recs: map[string]string{}}
	f.Add([]byte("ARC-Seal: i=1; a=rsa-sha256; cv=none; d=x; s=y; b=AA\r\nARC-Message-Signature: i=1; a=rsa-sha256; d=x; s=y; h=from; bh=AA; b=AA\r\nARC-Authentication-Results: i=1; x; none\r\nFrom: a@b\r\n\r\nbody\r\n"))
	f.Add([]byte("ARC-Authentication-Results: i=; ;\r\nARC-Seal: i=50\r\n\r\n"))
	f.Fuzz(func(t *testing.T, msg []byte) {
		r := Verify(context.Background(), msg, z.lookup, now)
		if r.Chain.Fields > 0 && r.CV == None {
			t.Fatalf("ARC fields but cv=none")
		}
		if r.CV == Pass {
			t.Fatalf("a chain without keys passes")
		}
		hs, _ := SplitMessage(msg)
		var k dkim.Key
		k.Algorithm = "rsa"
		k.Domain, k.Selector = "x.test", "s"
		k.Signer = rsaKeysForFuzz()
		if _, err := (Sealer{Key: k, AuthServID: "x"}).Seal(hs, make([]byte, 32), r, nil, now); err != nil &&
			!errors.Is(err, ErrTerminated) && !errors.Is(err, ErrInstanceLimit) && !errors.Is(err, ErrUnnumbered) {
			t.Fatalf("Seal: %v", err)
		}
	})
}

var fuzzKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		panic(err)
	}
	return k
})

func rsaKeysForFuzz() *rsa.PrivateKey { return fuzzKey() }

// BenchmarkSeal: one ARC set (two RSA-2048 signatures) over the test
// message, its chain validated first (none).
func BenchmarkSeal(b *testing.B) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		b.Fatal(err)
	}
	key, _ := dkim.NewKey("forwarder.test", "arc1", "rsa", k)
	s := Sealer{Key: key, AuthServID: "mx.forwarder.test"}
	hs, body := SplitMessage([]byte(testMessage))
	res := []string{"spf=pass smtp.mailfrom=origin.test"}
	b.ReportAllocs()
	for b.Loop() {
		v := NewValidator(context.Background(), hs, nil, now)
		v.Write(body)
		if _, err := s.Seal(hs, v.BodyHash(), v.Result(context.Background()), res, now); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkValidate: a two-set chain validated (three RSA-2048
// verifications), keys from memory.
func BenchmarkValidate(b *testing.B) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		b.Fatal(err)
	}
	key, _ := dkim.NewKey("forwarder.test", "arc1", "rsa", k)
	txt, _ := dkim.TXTValue(k)
	z := &zone{recs: map[string]string{"arc1._domainkey.forwarder.test": txt}}
	s := Sealer{Key: key, AuthServID: "mx.forwarder.test"}
	msg := []byte(testMessage)
	for range 2 {
		hs, body := SplitMessage(msg)
		r := Verify(context.Background(), msg, z.lookup, now)
		set, err := s.Seal(hs, hashBody(body), r, []string{"none"}, now)
		if err != nil {
			b.Fatal(err)
		}
		msg = prepend(set, msg)
	}
	hs, body := SplitMessage(msg)
	b.ReportAllocs()
	for b.Loop() {
		v := NewValidator(context.Background(), hs, z.lookup, now)
		v.Write(body)
		if r := v.Result(context.Background()); r.CV != Pass {
			b.Fatal(r.CV, r.Reason)
		}
	}
}

func hashBody(body []byte) []byte {
	h := dkim.NewBodyHasher()
	h.Write(body)
	return h.Sum()
}

// With resolver.CacheFirst, the keys of sealers seen before come from the
// resolver's cache at once (no goroutine, no question to the server) and
// the chain validates as it did the first time, whose keys were asked for.
func TestValidatorCacheFirst(t *testing.T) {
	z := &zone{}
	k1, _ := testKey(t, z, 0, "forwarder.test", "arc1")
	k2, _ := testKey(t, z, 1, "second.test", "arc2")
	once, _ := seal(t, z, k1, "mx.forwarder.test", []byte(testMessage))
	twice, _ := seal(t, z, k2, "mx.second.test", once)
	zoneText := ". 3600 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 60\n"
	for name, txt := range z.recs {
		zoneText += name + ". 3600 IN TXT " + strconv.Quote(txt) + "\n"
	}
	d := dnstest.Start(t, zoneText)
	r := resolver.NewClient(d.Addr, time.Second)
	var log resolver.AskLog
	lookup := log.TXT(r.LookupTXT)
	ctx := resolver.CacheFirst(context.Background())
	for i := range 3 {
		asked := d.Queries.Load()
		log.Take() // the last message's
		hs, body := SplitMessage(twice)
		v := NewValidator(ctx, hs, lookup, now)
		calls := log.Take()
		if i > 0 {
			for _, s := range append([]*sig{v.ams}, v.seals...) {
				select {
				case <-s.key.done:
				default:
					t.Errorf("message %d: a cached key was not taken at once", i)
				}
			}
			if len(calls) != 2 || !calls[0] || !calls[1] {
				t.Errorf("message %d: lookups %v, want the two keys from the cache only", i, calls)
			}
		}
		v.Write(body)
		if res := v.Result(context.Background()); res.CV != Pass {
			t.Fatalf("message %d: chain %s (%v)", i, res.CV, res.Reason)
		}
		if n := d.Queries.Load() - asked; (i == 0 && n != 2) || (i > 0 && n != 0) {
			t.Errorf("message %d asked the server %d questions", i, n)
		}
	}
}
