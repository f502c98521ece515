package dkim

import (
	"bytes"
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/base64"
	"math/big"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/mailnode/mailnode/dns/dnstest"
	"github.com/mailnode/mailnode/resolver"
)

// The verifier a cached RSA key gets (OpenSSL's in cgo builds) accepts
// exactly the signatures crypto/rsa accepts: the good one, and none of its
// damaged forms (a bit flipped anywhere, cut, lengthened, zero, the modulus
// itself, another digest), from many goroutines at once.
func TestRSAVerifierMatchesCryptoRSA(t *testing.T) {
	rk := testRSAKey(t)
	pub := &rk.PublicKey
	v := newRSAVerifier(pub)
	if _, isGo := v.(goVerifier); isGo == OpenSSLRSA {
		t.Fatalf("verifier %T in a build with OpenSSLRSA=%v", v, OpenSSLRSA)
	}
	digest := sha256.Sum256([]byte("the signed header"))
	other := sha256.Sum256([]byte("another header"))
	good, err := rsa.SignPKCS1v15(nil, rk, crypto.SHA256, digest[:])
	if err != nil {
		t.Fatal(err)
	}
	type c struct {
		name        string
		digest, sig []byte
	}
	cases := []c{
		{"good", digest[:], good},
		{"other digest", other[:], good},
		{"cut", digest[:], good[:len(good)-1]},
		{"lengthened", digest[:], append(bytes.Clone(good), 0)},
		{"leading zero", digest[:], append([]byte{0}, good...)},
		{"zero", digest[:], make([]byte, len(good))},
		{"modulus", digest[:], pub.N.FillBytes(make([]byte, len(good)))},
		{"modulus+1", digest[:], new(big.Int).Add(pub.N, big.NewInt(1)).FillBytes(make([]byte, len(good)+1))[1:]},
		{"one byte", digest[:], []byte{1}},
		{"empty", digest[:], nil},
		{"short digest", digest[:31], good},
	}
	for i := 0; i < len(good)*8; i += 61 {
		s := bytes.Clone(good)
		s[i/8] ^= 1 << (i % 8)
		cases = append(cases, c{"bit " + strconv.Itoa(i), digest[:], s})
	}
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Go(func() {
			for _, tc := range cases {
				want := rsa.VerifyPKCS1v15(pub, crypto.SHA256, tc.digest, tc.sig) == nil
				if got := v.verify(tc.digest, tc.sig); got != want {
					t.Errorf("%s: verify %v, crypto/rsa %v", tc.name, got, want)
				}
			}
		})
	}
	wg.Wait()
}

// A key record's p= is parsed once: the same text gives the same key; the
// cache stays within maxCachedKeys; bad keys are refused with the reasons
// verification gives, and not kept.
func TestKeyCache(t *testing.T) {
	test := testKeys(t)
	rsaTXT, _ := TXTValue(test[0].Signer)
	edTXT, _ := TXTValue(test[1].Signer)
	p := func(txt string) string {
		tags, err := ParseTags(txt)
		if err != nil {
			t.Fatal(err)
		}
		return StripFWS(tags["p"])
	}
	a, why := parseKey("rsa", p(rsaTXT))
	b, _ := parseKey("rsa", p(rsaTXT))
	if a == nil || a != b {
		t.Fatalf("the same p= twice: %p %p (%s)", a, b, why)
	}
	e, _ := parseKey("ed25519", p(edTXT))
	if e == nil || e == a {
		t.Fatalf("Ed25519 key: %v", e)
	}
	if k, _ := parseKey("ed25519", p(rsaTXT)); k != nil {
		t.Error("an RSA key taken as Ed25519")
	}
	for _, c := range []struct{ p, why string }{
		{"!!", "malformed p= in key record"},
		{base64.StdEncoding.EncodeToString([]byte("not a key")), "malformed RSA key"},
	} {
		if k, why := parseKey("rsa", c.p); k != nil || why != c.why {
			t.Errorf("p=%s: %v %q, want %q", c.p, k, why, c.why)
		}
	}
	// Fill past the bound with distinct Ed25519 keys (any 32 bytes parse).
	raw, _ := base64.StdEncoding.DecodeString(p(edTXT))
	for i := range 2 * maxCachedKeys {
		k := bytes.Clone(raw)
		k[0], k[1] = byte(i), byte(i>>8)
		if key, why := parseKey("ed25519", base64.StdEncoding.EncodeToString(k)); key == nil {
			t.Fatal(why)
		}
	}
	keys.mu.Lock()
	n := len(keys.m)
	keys.mu.Unlock()
	if n > maxCachedKeys || n < maxCachedKeys*7/8 {
		t.Errorf("%d keys cached, bound %d", n, maxCachedKeys)
	}
}

// With resolver.CacheFirst, a key already in the resolver's cache is taken
// from it at once, the server asked nothing; without the mark, the lookup
// runs in its goroutine as before (TestVerifierWaitsForKeys).
func TestVerifierCacheFirst(t *testing.T) {
	keys := testKeys(t)
	signed, _ := signMessage(t, keys, []byte(testMessage))
	hs, body := splitMessage(t, signed)
	zone := ". 3600 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 60\n"
	for _, k := range keys {
		v, _ := TXTValue(k.Signer)
		zone += k.Selector + "._domainkey." + k.Domain + ". 3600 IN TXT " + strconv.Quote(v) + "\n"
	}
	d := dnstest.Start(t, zone)
	r := resolver.NewClient(d.Addr, time.Second)
	ctx := resolver.CacheFirst(context.Background())
	var log resolver.AskLog
	lookup := log.TXT(r.LookupTXT)
	for i := range 3 {
		asked := d.Queries.Load()
		log.Take() // the last message's
		v := NewVerifier(ctx, hs, lookup, 8, fixedTime)
		calls := log.Take()
		if i > 0 {
			for _, s := range v.sigs {
				select {
				case <-s.done:
				default:
					t.Errorf("message %d: a cached key was not taken at once", i)
				}
			}
			if len(calls) != 2 || !calls[0] || !calls[1] {
				t.Errorf("message %d: lookups %v, want two from the cache only", i, calls)
			}
		}
		v.Write(body)
		rs := v.Results(context.Background())
		if len(rs) != 2 || rs[0].Status != Pass || rs[1].Status != Pass {
			t.Fatalf("message %d: %+v", i, rs)
		}
		if n := d.Queries.Load() - asked; (i == 0) != (n == 2) || (i > 0 && n != 0) {
			t.Errorf("message %d asked the server %d questions", i, n)
		}
	}
}

// A key whose p= text is longer than maxCachedKeyText is parsed for each
// signature and not kept.
func TestKeyCacheSkipsHugeKeys(t *testing.T) {
	// A public key needs no primes: an odd 9216-bit modulus will do.
	n := new(big.Int).Lsh(big.NewInt(1), 9215)
	n.Or(n, big.NewInt(0xdeadbeef))
	der, err := x509.MarshalPKIXPublicKey(&rsa.PublicKey{N: n, E: 65537})
	if err != nil {
		t.Fatal(err)
	}
	p := base64.StdEncoding.EncodeToString(der)
	if len(p) <= maxCachedKeyText {
		t.Fatalf("a 9216-bit key's p= is only %d long", len(p))
	}
	a, why := parseKey("rsa", p)
	b, _ := parseKey("rsa", p)
	if a == nil || b == nil || a == b {
		t.Fatalf("huge key: %p %p %s, want two parsed keys", a, b, why)
	}
}
