package dkim

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"sync"
)

// A signer's key record comes back with every message it signs. Taking
// its key from it (base64, ASN.1) and, for RSA, setting the key up for
// verification cost more than the verification itself, so the keys of
// recent records are kept, parsed and ready: keys maps a record's k= and
// p= to its key. The record is still looked up (through the resolver's
// cache, for its TTL) and its other tags checked for every signature; only
// the work on the same p= text is not done again.

// PublicKey is a key record's key, parsed once and ready to verify with;
// a verifier keeps it for the next signature with the same record.
type PublicKey struct {
	pub crypto.PublicKey // *rsa.PublicKey or ed25519.PublicKey
	rsa rsaVerifier      // RSA keys
}

// Public returns the key: an *rsa.PublicKey or an ed25519.PublicKey.
func (k *PublicKey) Public() crypto.PublicKey { return k.pub }

// rsaVerifier verifies RSASSA-PKCS1-v1_5 signatures of SHA-256 digests with
// one public key: OpenSSL's in cgo builds (rsa_openssl.go), crypto/rsa's
// otherwise.
type rsaVerifier interface {
	verify(digest, sig []byte) bool
}

type goVerifier struct{ pub *rsa.PublicKey }

func (v goVerifier) verify(digest, sig []byte) bool {
	return rsa.VerifyPKCS1v15(v.pub, crypto.SHA256, digest, sig) == nil
}

// Verify reports whether sig is the key's signature of a SHA-256 digest:
// RSASSA-PKCS1-v1_5 for an RSA key (OpenSSL's verification in cgo
// builds), Ed25519 over the digest for an Ed25519 key.
func (k *PublicKey) Verify(digest, sig []byte) bool {
	switch pub := k.pub.(type) {
	case *rsa.PublicKey:
		return k.rsa.verify(digest, sig)
	case ed25519.PublicKey:
		return ed25519.Verify(pub, digest, sig)
	}
	return false
}

// maxCachedKeys bounds the cache: a few KiB each for RSA-2048 (the p=
// text, the key and OpenSSL's copy). A full cache forgets an eighth of
// its keys, whichever the map gives. Only records whose p= is at most
// maxCachedKeyText long are kept (RSA keys up to 8192 bits), so that
// senders publishing huge keys cannot make the cache large.
const (
	maxCachedKeys    = 1024
	maxCachedKeyText = 1536
)

type keyCacheKey struct{ alg, p string }

var keys struct {
	mu sync.Mutex
	m  map[keyCacheKey]*PublicKey
}

// parseKey returns the key of a record's k= (alg, "rsa" or "ed25519") and
// p= (base64, whitespace removed), or nil and the reason it cannot be used:
// a permerror.
func parseKey(alg, p string) (*PublicKey, string) {
	ck := keyCacheKey{alg, p}
	keys.mu.Lock()
	k := keys.m[ck]
	keys.mu.Unlock()
	if k != nil {
		return k, ""
	}
	der, err := base64.StdEncoding.DecodeString(p)
	if err != nil {
		return nil, "malformed p= in key record"
	}
	switch alg {
	case "rsa":
		// SubjectPublicKeyInfo as RFC 6376 shows it; some publish the bare
		// RSAPublicKey (erratum 3017): both are taken.
		pub, err := x509.ParsePKIXPublicKey(der)
		if err != nil {
			if pub, err = x509.ParsePKCS1PublicKey(der); err != nil {
				return nil, "malformed RSA key"
			}
		}
		rk, ok := pub.(*rsa.PublicKey)
		if !ok {
			return nil, "k=rsa but not an RSA key"
		}
		if rk.N.BitLen() < 1024 {
			return nil, "RSA key shorter than 1024 bits (RFC 8301)"
		}
		k = &PublicKey{pub: rk, rsa: newRSAVerifier(rk)}
	case "ed25519":
		if len(der) != ed25519.PublicKeySize {
			return nil, "malformed Ed25519 key"
		}
		k = &PublicKey{pub: ed25519.PublicKey(der)}
	default:
		return nil, "unknown key type k=" + alg
	}
	if len(p) > maxCachedKeyText {
		return k, ""
	}
	keys.mu.Lock()
	if keys.m == nil {
		keys.m = make(map[keyCacheKey]*PublicKey)
	}
	if len(keys.m) >= maxCachedKeys {
		n := maxCachedKeys / 8
		for old := range keys.m {
			delete(keys.m, old)
			if n--; n == 0 {
				break
			}
		}
	}
	keys.m[ck] = k
	keys.mu.Unlock()
	return k, ""
}
