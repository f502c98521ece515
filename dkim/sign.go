package dkim

import (
	"crypto"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"hash"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
	"unicode/utf8"
)

// SignedHeaders are the header fields mailnode signs, in the order they are
// listed in h=. Each is signed as often as it occurs; From is listed once
// more than it occurs (over-signed), so that a From added later breaks the
// signature instead of being displayed unsigned.
var SignedHeaders = []string{
	"From", "To", "Cc", "Subject", "Date", "Message-ID", "Reply-To",
	"In-Reply-To", "References", "MIME-Version", "Content-Type",
}

// Header is one header field as the MTA hands it over: the name, and the
// raw value after the colon with its folding (CRLF or LF) kept.
type Header struct {
	Name, Value string
}

// Key is one selector's signing key.
type Key struct {
	Domain    string // d=
	Selector  string // s=
	Algorithm string // "rsa" or "ed25519"
	Signer    crypto.Signer
}

// NewKey checks that signer matches algorithm and returns the Key. An RSA
// key is handed to OpenSSL for signing where this build has it.
func NewKey(domain, selector, algorithm string, signer crypto.Signer) (Key, error) {
	switch signer.Public().(type) {
	case *rsa.PublicKey:
		if algorithm != "rsa" {
			return Key{}, fmt.Errorf("dkim: %s/%s: RSA key for a %s selector", domain, selector, algorithm)
		}
		// Sign with OpenSSL where this build has it (see OpenSSLRSA). A
		// key OpenSSL will not take (a FIPS-only libcrypto refuses short
		// keys) is signed by crypto/rsa: the same signature, more slowly.
		if rk, ok := signer.(*rsa.PrivateKey); ok {
			if fast, err := newRSASigner(rk); err == nil {
				signer = fast
			}
		}
	case ed25519.PublicKey:
		if algorithm != "ed25519" {
			return Key{}, fmt.Errorf("dkim: %s/%s: Ed25519 key for a %s selector", domain, selector, algorithm)
		}
	default:
		return Key{}, fmt.Errorf("dkim: %s/%s: unsupported key type %T", domain, selector, signer.Public())
	}
	return Key{Domain: domain, Selector: selector, Algorithm: algorithm, Signer: signer}, nil
}

// BodyHasher streams a body through relaxed canonicalization into SHA-256:
// the bh= of every signature mailnode makes (all use relaxed/relaxed and
// SHA-256, so one body hash serves every selector).
type BodyHasher struct {
	h     hash.Hash
	canon RelaxedBody
}

// NewBodyHasher returns a hasher for one body.
func NewBodyHasher() *BodyHasher {
	b := &BodyHasher{h: sha256.New()}
	b.canon.Reset(b.h)
	return b
}

// Reset starts a new body.
func (b *BodyHasher) Reset() {
	b.h.Reset()
	b.canon.Reset(b.h)
}

// Write adds a chunk of the body as it arrives (CRLF line ends).
func (b *BodyHasher) Write(p []byte) (int, error) { return b.canon.Write(p) }

// Sum finishes the body and returns its hash.
func (b *BodyHasher) Sum() []byte {
	b.canon.Close()
	return b.h.Sum(nil)
}

// Sign returns the value of a DKIM-Signature header field (everything after
// "DKIM-Signature:", folded with CRLF TAB) signing headers, top to bottom as
// in the message, and the body whose relaxed SHA-256 hash is bodyHash, at
// time t. Signatures are relaxed/relaxed, without l=.
func Sign(key Key, headers []Header, bodyHash []byte, t time.Time) (string, error) {
	var alg string
	switch key.Algorithm {
	case "rsa":
		alg = "rsa-sha256"
	case "ed25519":
		alg = "ed25519-sha256"
	default:
		return "", fmt.Errorf("dkim: unknown algorithm %q", key.Algorithm)
	}
	picked, names := pickHeaders(headers)

	var v strings.Builder
	line := 0 // length of the current output line
	add := func(tag string) {
		if line > 0 && line+1+len(tag) > 76 {
			v.WriteString("\r\n\t")
			line = 1
		} else {
			v.WriteByte(' ')
			line++
		}
		v.WriteString(tag)
		line += len(tag)
	}
	line = len("DKIM-Signature:")
	add("v=1;")
	add("a=" + alg + ";")
	add("c=relaxed/relaxed;")
	add("d=" + key.Domain + ";")
	add("s=" + key.Selector + ";")
	add("t=" + strconv.FormatInt(t.Unix(), 10) + ";")
	// h= folds at its colons.
	for i, n := range names {
		part := n
		if i == 0 {
			part = "h=" + n
		}
		if i < len(names)-1 {
			part += ":"
		} else {
			part += ";"
		}
		if i == 0 {
			add(part)
			continue
		}
		if line+len(part) > 76 {
			v.WriteString("\r\n\t")
			line = 1
		}
		v.WriteString(part)
		line += len(part)
	}
	add("bh=" + base64.StdEncoding.EncodeToString(bodyHash) + ";")
	add("b=")
	unsigned := v.String()

	h := sha256.New()
	var canon []byte // one buffer for every field's canonical form
	for _, hd := range picked {
		canon = relaxedHeader(canon[:0], hd.Name, hd.Value, true)
		h.Write(canon)
	}
	h.Write(relaxedHeader(canon[:0], "DKIM-Signature", unsigned, false))
	digest := h.Sum(nil)

	var sig []byte
	var err error
	switch key.Algorithm {
	case "rsa":
		sig, err = key.Signer.Sign(rand.Reader, digest, crypto.SHA256)
	case "ed25519":
		// RFC 8463: PureEdDSA over the SHA-256 hash of the canonical data.
		sig, err = key.Signer.Sign(nil, digest, crypto.Hash(0))
	}
	if err != nil {
		return "", fmt.Errorf("dkim: sign %s/%s: %w", key.Domain, key.Selector, err)
	}
	b64 := base64.StdEncoding.EncodeToString(sig)
	var out strings.Builder
	out.Grow(len(unsigned) + len(b64) + 16)
	out.WriteString(unsigned)
	for len(b64) > 0 {
		room := 76 - line
		if room < 8 {
			out.WriteString("\r\n\t")
			line = 1
			room = 75
		}
		n := min(room, len(b64))
		out.WriteString(b64[:n])
		line += n
		b64 = b64[n:]
	}
	return out.String(), nil
}

// pickHeaders selects the header instances to sign and the h= list: per
// RFC 6376 section 5.4.2 each listed name takes the last unused instance,
// counting from the bottom; the extra From finds none and signs its absence.
//
// It runs for every message signed, so it compares names in place rather
// than lower-casing each into a map (a map, and a string per upper-case
// name, per message).
func pickHeaders(headers []Header) (picked []Header, names []string) {
	picked = make([]Header, 0, len(headers))
	names = make([]string, 0, len(headers)+1)
	for _, sn := range signedNames() {
		for k := len(headers) - 1; k >= 0; k-- {
			if headerIs(headers[k].Name, sn.lower) {
				names = append(names, sn.lower)
				picked = append(picked, headers[k])
			}
		}
		if sn.lower == "from" {
			names = append(names, sn.lower)
		}
	}
	return picked, names
}

// signedName is a name of SignedHeaders and its lower case.
type signedName struct{ name, lower string }

var signedLower atomic.Pointer[[]signedName]

// signedNames returns SignedHeaders with their lower case, computed once
// (again only if SignedHeaders has changed since).
func signedNames() []signedName {
	if p := signedLower.Load(); p != nil && len(*p) == len(SignedHeaders) {
		same := true
		for i, sn := range *p {
			if sn.name != SignedHeaders[i] {
				same = false
				break
			}
		}
		if same {
			return *p
		}
	}
	l := make([]signedName, len(SignedHeaders))
	for i, n := range SignedHeaders {
		l[i] = signedName{n, strings.ToLower(n)}
	}
	signedLower.Store(&l)
	return l
}

// headerIs reports whether the header field name raw, without surrounding
// white space and lower-cased, is lower: ASCII case-folding in place, and
// strings.ToLower for a name with other bytes.
func headerIs(raw, lower string) bool {
	raw = strings.TrimSpace(raw)
	if len(raw) != len(lower) {
		for i := 0; i < len(raw); i++ {
			if raw[i] >= utf8.RuneSelf {
				return strings.ToLower(raw) == lower
			}
		}
		return false
	}
	for i := 0; i < len(raw); i++ {
		c := raw[i]
		if c >= utf8.RuneSelf {
			return strings.ToLower(raw) == lower
		}
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		if c != lower[i] {
			return false
		}
	}
	return true
}

// appendLower appends strings.ToLower(s) to dst, without the string in
// between for the ASCII names header fields have.
func appendLower(dst []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if s[i] >= utf8.RuneSelf {
			return append(dst, strings.ToLower(s)...)
		}
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		dst = append(dst, c)
	}
	return dst
}

// relaxedHeader appends the relaxed canonical form (RFC 6376 section 3.4.2)
// of one header field to dst: lower-case name, unfolded value with runs of
// whitespace made one space and none around the colon or at the end, and a
// CRLF when withCRLF.
func relaxedHeader(dst []byte, name, value string, withCRLF bool) []byte {
	dst = appendLower(dst, strings.TrimRight(name, " \t"))
	dst = append(dst, ':')
	wsp := false
	content := false
	for i := 0; i < len(value); i++ {
		switch c := value[i]; c {
		case '\r', '\n':
			// unfolding: the line break goes, the whitespace after it stays
		case ' ', '\t':
			wsp = true
		default:
			if wsp && content {
				dst = append(dst, ' ')
			}
			wsp = false
			content = true
			dst = append(dst, c)
		}
	}
	if withCRLF {
		dst = append(dst, '\r', '\n')
	}
	return dst
}
