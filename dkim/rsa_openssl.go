//go:build cgo && !purego

package dkim

/*
#cgo LDFLAGS: -lcrypto
#include <stdlib.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>
#include <openssl/err.h>

// mn_key decodes a PKCS#1 DER RSA private key.
static EVP_PKEY *mn_key(const unsigned char *der, long len) {
	const unsigned char *p = der;
	return d2i_PrivateKey(EVP_PKEY_RSA, NULL, &p, len);
}

// mn_ctx is a context for key, signing (verify 0) or verifying
// RSASSA-PKCS1-v1_5 over a SHA-256 digest. A context is initialised once
// and then serves many digests.
static EVP_PKEY_CTX *mn_ctx(EVP_PKEY *key, int verify) {
	EVP_PKEY_CTX *ctx = EVP_PKEY_CTX_new(key, NULL);
	if (ctx == NULL) return NULL;
	if ((verify ? EVP_PKEY_verify_init(ctx) : EVP_PKEY_sign_init(ctx)) <= 0 ||
	    EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) <= 0 ||
	    EVP_PKEY_CTX_set_signature_md(ctx, EVP_sha256()) <= 0) {
		EVP_PKEY_CTX_free(ctx);
		return NULL;
	}
	return ctx;
}

// mn_sign signs a 32-byte digest into sig (siglen bytes of room); it
// returns the signature's length, or 0 on failure.
static size_t mn_sign(EVP_PKEY_CTX *ctx, const unsigned char *dgst, unsigned char *sig, size_t siglen) {
	size_t n = siglen;
	if (EVP_PKEY_sign(ctx, sig, &n, dgst, 32) <= 0) return 0;
	return n;
}
// mn_pubkey decodes a DER SubjectPublicKeyInfo.
static EVP_PKEY *mn_pubkey(const unsigned char *der, long len) {
	const unsigned char *p = der;
	return d2i_PUBKEY(NULL, &p, len);
}

// mn_verify reports whether sig is key's signature of the 32-byte digest.
// A failed verification leaves its reasons in the thread's error queue;
// they are dropped, the answer is all that is used.
static int mn_verify(EVP_PKEY_CTX *ctx, const unsigned char *sig, size_t siglen, const unsigned char *dgst) {
	int ok = EVP_PKEY_verify(ctx, sig, siglen, dgst, 32) == 1;
	if (!ok) ERR_clear_error();
	return ok;
}
*/
import "C"

import (
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"runtime"
	"unsafe"
)

// OpenSSLRSA reports whether RSA signatures are made by OpenSSL's libcrypto
// (cgo builds) rather than by Go's crypto/rsa (CGO_ENABLED=0 or -tags purego).
const OpenSSLRSA = true

// opensslRSA signs with OpenSSL's libcrypto. On the x86-64 machines mail
// nodes run on, its RSA-2048 private-key operation is 3-4 times faster than
// crypto/rsa's (OpenSSL uses the CPU's wide multiply instructions), and the
// signature is the one every DKIM signer makes: RSASSA-PKCS1-v1_5 is
// deterministic, so both produce the same bytes (the tests hold them to
// that). OpenSSL blinds the private-key operation and checks the CRT
// result with the public key, as crypto/rsa does.
type opensslRSA struct {
	pub  *rsa.PublicKey
	size int
	h    *opensslHandle
}

// opensslHandle owns the C objects; a cleanup frees them once the signer
// is unreachable (a reload replaces every key).
type opensslHandle struct {
	key    *C.EVP_PKEY
	verify bool                 // its contexts verify (else they sign)
	ctxs   chan *C.EVP_PKEY_CTX // idle contexts
}

func newHandle(key *C.EVP_PKEY, verify bool) *opensslHandle {
	return &opensslHandle{key: key, verify: verify, ctxs: make(chan *C.EVP_PKEY_CTX, ctxPool)}
}

// get returns an idle context, or a new one (nil if OpenSSL cannot make it).
func (h *opensslHandle) get() *C.EVP_PKEY_CTX {
	select {
	case ctx := <-h.ctxs:
		return ctx
	default:
	}
	verify := C.int(0)
	if h.verify {
		verify = 1
	}
	ctx := C.mn_ctx(h.key, verify)
	if ctx == nil {
		C.ERR_clear_error()
	}
	return ctx
}

// put keeps ctx for the next get, or frees it when ctxPool are idle.
func (h *opensslHandle) put(ctx *C.EVP_PKEY_CTX) {
	select {
	case h.ctxs <- ctx:
	default:
		C.EVP_PKEY_CTX_free(ctx)
	}
}

// ctxPool is how many idle contexts a key keeps; more concurrent signers
// make their own and free them after use.
const ctxPool = 16

// newRSASigner returns an OpenSSL signer for k, checked against k's public
// key on a test digest.
func newRSASigner(k *rsa.PrivateKey) (crypto.Signer, error) {
	der := x509.MarshalPKCS1PrivateKey(k)
	cder := C.CBytes(der)
	clear(der)
	key := C.mn_key((*C.uchar)(cder), C.long(len(der)))
	C.OPENSSL_cleanse(cder, C.size_t(len(der)))
	C.free(cder)
	if key == nil {
		return nil, errors.New("dkim: OpenSSL could not load the RSA key")
	}
	h := newHandle(key, false)
	s := &opensslRSA{pub: &k.PublicKey, size: k.Size(), h: h}
	runtime.AddCleanup(s, func(h *opensslHandle) { h.free() }, h)
	digest := make([]byte, 32)
	for i := range digest {
		digest[i] = byte(i)
	}
	sig, err := s.Sign(nil, digest, crypto.SHA256)
	if err == nil {
		err = rsa.VerifyPKCS1v15(s.pub, crypto.SHA256, digest, sig)
	}
	if err != nil {
		return nil, fmt.Errorf("dkim: OpenSSL's RSA signature does not verify: %w", err)
	}
	return s, nil
}

func (h *opensslHandle) free() {
	for {
		select {
		case ctx := <-h.ctxs:
			C.EVP_PKEY_CTX_free(ctx)
		default:
			C.EVP_PKEY_free(h.key)
			return
		}
	}
}

func (s *opensslRSA) Public() crypto.PublicKey { return s.pub }

// Sign signs a SHA-256 digest (opts must be crypto.SHA256; rand is not
// used: OpenSSL draws its blinding from its own generator).
func (s *opensslRSA) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	if opts.HashFunc() != crypto.SHA256 || len(digest) != 32 {
		return nil, fmt.Errorf("dkim: OpenSSL RSA signer takes SHA-256 digests only, got %v of %d bytes", opts.HashFunc(), len(digest))
	}
	ctx := s.h.get()
	if ctx == nil {
		return nil, errors.New("dkim: OpenSSL: no signing context")
	}
	sig := make([]byte, s.size)
	n := C.mn_sign(ctx, (*C.uchar)(unsafe.Pointer(&digest[0])), (*C.uchar)(unsafe.Pointer(&sig[0])), C.size_t(len(sig)))
	s.h.put(ctx)
	runtime.KeepAlive(s)
	if n == 0 || int(n) != s.size {
		return nil, errors.New("dkim: OpenSSL RSA signature failed")
	}
	return sig, nil
}

// opensslVerifier verifies RSA signatures with OpenSSL. The key, once
// loaded, keeps its Montgomery setup: crypto/rsa computes it again for
// every verification (half of its 30 us per RSA-2048 signature here),
// OpenSSL verifies in 15 us.
type opensslVerifier struct {
	h *opensslHandle // the key and idle verification contexts
}

// newRSAVerifier returns a verifier of pub's signatures: OpenSSL's, or
// crypto/rsa's if OpenSSL will not take the key.
func newRSAVerifier(pub *rsa.PublicKey) rsaVerifier {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return goVerifier{pub}
	}
	key := C.mn_pubkey((*C.uchar)(unsafe.Pointer(&der[0])), C.long(len(der)))
	if key == nil {
		C.ERR_clear_error()
		return goVerifier{pub}
	}
	h := newHandle(key, true)
	v := &opensslVerifier{h: h}
	runtime.AddCleanup(v, func(h *opensslHandle) { h.free() }, h)
	return v
}

func (v *opensslVerifier) verify(digest, sig []byte) bool {
	if len(digest) != 32 || len(sig) == 0 {
		return false
	}
	ctx := v.h.get()
	if ctx == nil {
		return false
	}
	ok := C.mn_verify(ctx, (*C.uchar)(unsafe.Pointer(&sig[0])), C.size_t(len(sig)), (*C.uchar)(unsafe.Pointer(&digest[0]))) == 1
	v.h.put(ctx)
	runtime.KeepAlive(v)
	return ok
}
