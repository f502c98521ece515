package dkim

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"fmt"
	"os"
	"sync"
	"testing"
)

func testRSAKey(t testing.TB) *rsa.PrivateKey {
	t.Helper()
	pem, err := os.ReadFile("testdata/rsa2048.key")
	if err != nil {
		t.Fatal(err)
	}
	k, err := ParseKey("testdata/rsa2048.key", pem, "rsa")
	if err != nil {
		t.Fatal(err)
	}
	return k.(*rsa.PrivateKey)
}

// The signer NewKey makes gives, for every digest, the very bytes
// crypto/rsa gives (RSASSA-PKCS1-v1_5 is deterministic), from many
// goroutines at once, so a context shared by two of them would show.
func TestRSASignerMatchesCryptoRSA(t *testing.T) {
	if !OpenSSLRSA {
		t.Skip("this build signs with crypto/rsa (CGO_ENABLED=0 or -tags purego)")
	}
	rk := testRSAKey(t)
	key, err := NewKey("example.com", "s", "rsa", rk)
	if err != nil {
		t.Fatal(err)
	}
	if _, same := key.Signer.(*rsa.PrivateKey); same {
		t.Fatal("NewKey kept crypto/rsa's key in a build with OpenSSL")
	}
	if !key.Signer.Public().(*rsa.PublicKey).Equal(&rk.PublicKey) {
		t.Fatal("public key differs")
	}
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for g := range 24 { // more than the idle contexts a key keeps
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 8 {
				d := sha256.Sum256(fmt.Appendf(nil, "message %d/%d", g, i))
				got, err := key.Signer.Sign(rand.Reader, d[:], crypto.SHA256)
				if err != nil {
					errs <- err
					return
				}
				want, _ := rsa.SignPKCS1v15(nil, rk, crypto.SHA256, d[:])
				if !bytes.Equal(got, want) {
					errs <- fmt.Errorf("digest %d/%d: OpenSSL's signature differs from crypto/rsa's", g, i)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

func TestRSASignerRefusesOtherDigests(t *testing.T) {
	s, err := newRSASigner(testRSAKey(t))
	if err != nil {
		t.Fatal(err)
	}
	if !OpenSSLRSA {
		t.Skip("crypto/rsa build")
	}
	if _, err := s.Sign(nil, make([]byte, 20), crypto.SHA1); err == nil {
		t.Error("SHA-1 digest signed")
	}
	if _, err := s.Sign(nil, make([]byte, 31), crypto.SHA256); err == nil {
		t.Error("short digest signed")
	}
}

// BenchmarkRSASign: one RSA-2048 signature of a SHA-256 digest, by
// crypto/rsa and by the signer milterd uses.
func BenchmarkRSASign(b *testing.B) {
	rk := testRSAKey(b)
	fast, err := newRSASigner(rk)
	if err != nil {
		b.Fatal(err)
	}
	d := sha256.Sum256([]byte("digest"))
	for _, c := range []struct {
		name string
		s    crypto.Signer
	}{{"crypto-rsa", rk}, {"node", fast}} {
		b.Run(c.name, func(b *testing.B) {
			for b.Loop() {
				if _, err := c.s.Sign(rand.Reader, d[:], crypto.SHA256); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
