//go:build !cgo || purego

package dkim

import (
	"crypto"
	"crypto/rsa"
)

// OpenSSLRSA reports whether RSA signatures are made by OpenSSL's libcrypto
// (cgo builds) rather than by Go's crypto/rsa (CGO_ENABLED=0 or -tags purego).
const OpenSSLRSA = false

// newRSASigner returns k itself: this build signs with crypto/rsa.
func newRSASigner(k *rsa.PrivateKey) (crypto.Signer, error) { return k, nil }

// newRSAVerifier returns crypto/rsa's verifier of pub's signatures.
func newRSAVerifier(pub *rsa.PublicKey) rsaVerifier { return goVerifier{pub} }
