package dkim

import "context"

// What other signature schemes built on DKIM (ARC, RFC 8617) reuse: the
// relaxed header form, the c= and b= handling and the key record lookup.

// RelaxedHeader appends the relaxed canonical form (RFC 6376 section
// 3.4.2) of one header field to dst, with a final CRLF when withCRLF.
func RelaxedHeader(dst []byte, name, value string, withCRLF bool) []byte {
	return relaxedHeader(dst, name, value, withCRLF)
}

// LookupKey fetches and checks the key record name (selector._domainkey.
// domain) for a key of type keyAlg ("rsa" or "ed25519") used with SHA-256,
// with the rules of verification: RSA keys of at least 1024 bits, a
// revoked or missing key is a permerror, a DNS timeout a temperror. It
// returns the key, kept parsed for the next lookup of the same record, or
// nil with the status and the reason.
func LookupKey(ctx context.Context, lookup LookupTXTFunc, name, keyAlg string) (*PublicKey, Status, string) {
	s := &sigCheck{keyAlg: keyAlg}
	s.res.Algorithm = keyAlg + "-sha256"
	s.fetchKey(ctx, lookup, name)
	if s.key == nil {
		return nil, s.keyErr.Status, s.keyErr.Reason
	}
	return s.key, Pass, ""
}

// WithoutB returns a signature field's value with the value of its b= tag
// removed and everything else, whitespace included, as it was: the form
// the signature itself covers.
func WithoutB(v string) string { return withoutB(v) }

// ParseCanon parses a c= tag's value ("header/body", each simple or
// relaxed, simple where left out); ok is false for an unknown
// canonicalization.
func ParseCanon(c string) (relaxedHead, relaxedBody, ok bool) { return parseCanon(c) }
