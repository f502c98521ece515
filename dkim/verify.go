package dkim

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"hash"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/mailnode/mailnode/resolver"
)

// Verification of inbound signatures (RFC 6376 section 6, RFC 8463,
// RFC 8301) as the message streams by: the Verifier is made from the
// complete header, starts every key lookup at once, hashes the body chunk
// by chunk as it arrives (one hash per body canonicalization in use), and
// checks the signatures when the body has ended. Memory does not grow with
// the body, and the DNS round trips overlap the body's transfer.
//
// Two choices go beyond the RFC's minimum, as most verifiers make them: a
// signature with a body length (l=) fails, since whatever follows the
// signed length could be anything, and rsa-sha1 is a permerror (RFC 8301).

// Status is the outcome of one signature's verification, named as in
// Authentication-Results (RFC 8601).
type Status string

const (
	Pass      Status = "pass"
	Fail      Status = "fail"      // the signature or the body hash does not match, or l= was used
	PermError Status = "permerror" // the signature or its key record cannot be used
	TempError Status = "temperror" // the key could not be fetched now
)

// Result is one signature's verdict.
type Result struct {
	Status     Status
	Reason     string // why, when not Pass
	Domain     string // d=
	Identifier string // i=, or "@" + d= when absent
	Selector   string // s=
	Algorithm  string // a=
}

// LookupTXTFunc resolves the TXT records of a name. An error that is a
// net.Error with Timeout() or Temporary() true is temporary (temperror);
// any other error, NXDOMAIN included, is permanent.
type LookupTXTFunc func(ctx context.Context, name string) ([]string, error)

// Verifier checks the DKIM signatures of one message.
type Verifier struct {
	headers []Header
	sigs    []*sigCheck
	bodies  []*bodyHash
	cancel  context.CancelFunc
}

// sigCheck is one DKIM-Signature field on its way to a Result.
type sigCheck struct {
	res     Result
	field   Header    // the signature field as received
	relaxed bool      // header canonicalization
	keyAlg  string    // "rsa" or "ed25519"
	names   []string  // h=, lower case
	bh, b   []byte    // decoded bh= and b=
	body    *bodyHash // the body canonicalization it hashes with
	decided bool      // res is final already (unusable signature)

	done   chan struct{} // closed when the key lookup has ended
	key    *PublicKey
	keyErr Result // Status and Reason when there is no usable key
}

// bodyHash is one body canonicalization's running SHA-256.
type bodyHash struct {
	relaxed bool
	h       hash.Hash
	r       RelaxedBody
	s       SimpleBody
	sum     []byte
}

func (b *bodyHash) write(p []byte) {
	if b.relaxed {
		b.r.Write(p)
	} else {
		b.s.Write(p)
	}
}

func (b *bodyHash) final() []byte {
	if b.sum == nil {
		if b.relaxed {
			b.r.Close()
		} else {
			b.s.Close()
		}
		b.sum = b.h.Sum(nil)
	}
	return b.sum
}

// NewVerifier parses the first max DKIM-Signature fields among headers (all
// header fields of the message, top to bottom, values as received) and
// starts their key lookups, which end at the latest when Results returns,
// Abort is called or ctx ends. A message without signatures gives a
// Verifier without results.
func NewVerifier(ctx context.Context, headers []Header, lookup LookupTXTFunc, max int, now time.Time) *Verifier {
	ctx, cancel := context.WithCancel(ctx)
	v := &Verifier{headers: headers, cancel: cancel}
	for _, h := range headers {
		if !strings.EqualFold(strings.TrimRight(h.Name, " \t"), "DKIM-Signature") {
			continue
		}
		if len(v.sigs) == max {
			break
		}
		s := &sigCheck{field: h, done: make(chan struct{})}
		v.sigs = append(v.sigs, s)
		selector, relaxedBody, ok := s.parse(now)
		if !ok {
			s.decided = true
			continue
		}
		s.body = v.bodyFor(relaxedBody)
		s.startKey(ctx, lookup, selector+"._domainkey."+s.res.Domain)
	}
	return v
}

// startKey fetches the signature's key and closes s.done when it has
// (resolver.Start: from the lookup's cache at once where ctx is marked
// resolver.CacheFirst, else in a goroutine of its own).
func (s *sigCheck) startKey(ctx context.Context, lookup LookupTXTFunc, name string) {
	resolver.Start(ctx, s.done, func(ctx context.Context) {
		s.key, s.keyErr = nil, Result{}
		s.fetchKey(ctx, lookup, name)
	})
}

// Signatures is how many signatures the Verifier checks.
func (v *Verifier) Signatures() int { return len(v.sigs) }

// Write takes the next body chunk (CRLF line ends). It never fails.
func (v *Verifier) Write(p []byte) (int, error) {
	for _, b := range v.bodies {
		b.write(p)
	}
	return len(p), nil
}

// Results ends the body and returns one Result per signature, in header
// order. It waits for the key lookups until ctx ends; a lookup still
// running then gives a temperror.
func (v *Verifier) Results(ctx context.Context) []Result {
	defer v.cancel()
	out := make([]Result, len(v.sigs))
	for i, s := range v.sigs {
		if !s.decided {
			select {
			case <-s.done:
				s.verify(v.headers)
			case <-ctx.Done():
				s.res.Status, s.res.Reason = TempError, "key lookup timed out"
			}
		}
		out[i] = s.res
	}
	return out
}

// Abort stops the key lookups of a message that will not end.
func (v *Verifier) Abort() { v.cancel() }

func (v *Verifier) bodyFor(relaxed bool) *bodyHash {
	for _, b := range v.bodies {
		if b.relaxed == relaxed {
			return b
		}
	}
	b := &bodyHash{relaxed: relaxed, h: sha256.New()}
	b.r.Reset(b.h)
	b.s.Reset(b.h)
	v.bodies = append(v.bodies, b)
	return b
}

func (s *sigCheck) fail(st Status, reason string) bool {
	s.res.Status, s.res.Reason = st, reason
	return false
}

// parse reads the signature's tags (RFC 6376 section 3.5). It returns the
// selector and the body canonicalization, or false with s.res decided.
func (s *sigCheck) parse(now time.Time) (selector string, relaxedBody, ok bool) {
	tags, err := ParseTags(s.field.Value)
	if err != nil {
		return "", false, s.fail(PermError, "malformed signature: "+err.Error())
	}
	s.res.Domain = strings.ToLower(tags["d"])
	s.res.Selector = tags["s"]
	s.res.Algorithm = tags["a"]
	if v, ok := tags["v"]; !ok || v != "1" {
		return "", false, s.fail(PermError, "signature version v= is not 1")
	}
	for _, t := range []string{"a", "b", "bh", "d", "h", "s"} {
		if tags[t] == "" {
			return "", false, s.fail(PermError, "signature without "+t+"=")
		}
	}
	s.res.Identifier = "@" + s.res.Domain
	if i, ok := tags["i"]; ok {
		at := strings.LastIndexByte(i, '@')
		dom := strings.ToLower(i[at+1:])
		if at < 0 || (dom != s.res.Domain && !strings.HasSuffix(dom, "."+s.res.Domain)) {
			return "", false, s.fail(PermError, "i= is not within d=")
		}
		s.res.Identifier = i
	}
	for _, n := range strings.Split(tags["h"], ":") {
		s.names = append(s.names, strings.ToLower(trimFWS(n)))
	}
	signsFrom := false
	for _, n := range s.names {
		signsFrom = signsFrom || n == "from"
	}
	if !signsFrom {
		return "", false, s.fail(PermError, "From is not signed")
	}
	switch s.res.Algorithm {
	case "rsa-sha256":
		s.keyAlg = "rsa"
	case "ed25519-sha256":
		s.keyAlg = "ed25519"
	case "rsa-sha1":
		return "", false, s.fail(PermError, "rsa-sha1 is too weak (RFC 8301)")
	default:
		return "", false, s.fail(PermError, "unknown algorithm a="+s.res.Algorithm)
	}
	if q, ok := tags["q"]; ok {
		dns := false
		for _, m := range strings.Split(q, ":") {
			dns = dns || trimFWS(m) == "dns/txt"
		}
		if !dns {
			return "", false, s.fail(PermError, "no supported key query method in q=")
		}
	}
	relaxedHead, relaxedBody, ok := parseCanon(tags["c"])
	if !ok {
		return "", false, s.fail(PermError, "unknown canonicalization c="+tags["c"])
	}
	s.relaxed = relaxedHead
	var t, x int64 = -1, -1
	if v, ok := tags["t"]; ok {
		if t, err = strconv.ParseInt(v, 10, 64); err != nil || t < 0 {
			return "", false, s.fail(PermError, "malformed t=")
		}
	}
	if v, ok := tags["x"]; ok {
		if x, err = strconv.ParseInt(v, 10, 64); err != nil || x < 0 {
			return "", false, s.fail(PermError, "malformed x=")
		}
		if t >= 0 && x < t {
			return "", false, s.fail(PermError, "x= is before t=")
		}
		if now.Unix() > x {
			return "", false, s.fail(PermError, "signature expired")
		}
	}
	if _, ok := tags["l"]; ok {
		return "", false, s.fail(Fail, "body length l= leaves part of the body unsigned")
	}
	if s.bh, err = base64.StdEncoding.DecodeString(StripFWS(tags["bh"])); err != nil {
		return "", false, s.fail(PermError, "malformed bh=")
	}
	if s.b, err = base64.StdEncoding.DecodeString(StripFWS(tags["b"])); err != nil {
		return "", false, s.fail(PermError, "malformed b=")
	}
	return s.res.Selector, relaxedBody, true
}

// parseCanon parses a c= value ("header/body", each simple or relaxed,
// simple where left out) into whether each part is relaxed; ok is false
// for an unknown canonicalization.
func parseCanon(c string) (relaxedHead, relaxedBody, ok bool) {
	hc, bc, _ := strings.Cut(c, "/")
	if hc == "" {
		hc = "simple"
	}
	if bc == "" {
		bc = "simple"
	}
	if (hc != "simple" && hc != "relaxed") || (bc != "simple" && bc != "relaxed") {
		return false, false, false
	}
	return hc == "relaxed", bc == "relaxed", true
}

// fetchKey looks the key record up and parses it (RFC 6376 section 3.6.1).
func (s *sigCheck) fetchKey(ctx context.Context, lookup LookupTXTFunc, name string) {
	keyErr := func(st Status, reason string) { s.keyErr = Result{Status: st, Reason: reason} }
	if lookup == nil {
		keyErr(TempError, "no resolver")
		return
	}
	txts, err := lookup(ctx, name)
	if err != nil {
		var ne net.Error
		if errors.As(err, &ne) && (ne.Timeout() || isTemporary(ne)) || ctx.Err() != nil {
			keyErr(TempError, "key unavailable: "+err.Error())
		} else {
			keyErr(PermError, "no key: "+err.Error())
		}
		return
	}
	switch len(txts) {
	case 0:
		keyErr(PermError, "no key record")
		return
	case 1:
	default:
		keyErr(PermError, "several key records")
		return
	}
	tags, err := ParseTags(txts[0])
	if err != nil {
		keyErr(PermError, "malformed key record: "+err.Error())
		return
	}
	if v, ok := tags["v"]; ok && v != "DKIM1" {
		keyErr(PermError, "key record version is not DKIM1")
		return
	}
	p, ok := tags["p"]
	if !ok {
		keyErr(PermError, "key record without p=")
		return
	}
	if p = StripFWS(p); p == "" {
		keyErr(PermError, "key revoked")
		return
	}
	if h, ok := tags["h"]; ok && !listHas(h, "sha256") {
		keyErr(PermError, "key not for sha256 (h="+h+")")
		return
	}
	if sv, ok := tags["s"]; ok && !listHas(sv, "*") && !listHas(sv, "email") {
		keyErr(PermError, "key not for email (s="+sv+")")
		return
	}
	k := tags["k"]
	if k == "" {
		k = "rsa"
	}
	if k != s.keyAlg {
		keyErr(PermError, "key type k="+k+" does not match a="+s.res.Algorithm)
		return
	}
	key, reason := parseKey(k, p)
	if key == nil {
		keyErr(PermError, reason)
		return
	}
	s.key = key
}

func isTemporary(e net.Error) bool {
	t, ok := e.(interface{ Temporary() bool })
	return ok && t.Temporary()
}

// verify decides a parsed signature whose key lookup has ended.
func (s *sigCheck) verify(headers []Header) {
	if s.key == nil {
		s.res.Status, s.res.Reason = s.keyErr.Status, s.keyErr.Reason
		return
	}
	if subtle.ConstantTimeCompare(s.body.final(), s.bh) != 1 {
		s.res.Status, s.res.Reason = Fail, "body hash does not match"
		return
	}
	h := sha256.New()
	var buf []byte
	used := make(map[string]int, len(s.names)) // instances of a name taken so far, from the bottom
	for _, name := range s.names {
		n := used[name]
		used[name] = n + 1
		for i := len(headers) - 1; i >= 0; i-- {
			if !strings.EqualFold(strings.TrimRight(headers[i].Name, " \t"), name) {
				continue
			}
			if n > 0 {
				n--
				continue
			}
			buf = s.canonHeader(buf[:0], headers[i].Name, headers[i].Value, true)
			h.Write(buf)
			break
		}
	}
	buf = s.canonHeader(buf[:0], s.field.Name, withoutB(s.field.Value), false)
	h.Write(buf)
	digest := h.Sum(nil)
	ok := s.key.Verify(digest, s.b)
	if !ok {
		s.res.Status, s.res.Reason = Fail, "signature does not verify"
		return
	}
	s.res.Status, s.res.Reason = Pass, ""
}

// canonHeader appends one header field in the signature's header
// canonicalization; the signature's own field goes without its final CRLF.
func (s *sigCheck) canonHeader(dst []byte, name, value string, withCRLF bool) []byte {
	if s.relaxed {
		return relaxedHeader(dst, name, value, withCRLF)
	}
	dst = append(dst, name...)
	dst = append(dst, ':')
	dst = AppendCRLF(dst, value)
	if withCRLF {
		dst = append(dst, '\r', '\n')
	}
	return dst
}

// AppendCRLF appends v with every lone LF made CRLF: the MTA may hand over
// folded values with LF line ends, the signer hashed CRLF.
func AppendCRLF(dst []byte, v string) []byte {
	for i := 0; i < len(v); i++ {
		if v[i] == '\n' && (i == 0 || v[i-1] != '\r') {
			dst = append(dst, '\r')
		}
		dst = append(dst, v[i])
	}
	return dst
}

// withoutB returns a signature field's value with the value of its b= tag
// removed and everything else, whitespace included, as it was.
func withoutB(v string) string {
	start := 0
	for start <= len(v) {
		end := strings.IndexByte(v[start:], ';')
		if end < 0 {
			end = len(v)
		} else {
			end += start
		}
		if eq := strings.IndexByte(v[start:end], '='); eq >= 0 && trimFWS(v[start:start+eq]) == "b" {
			return v[:start+eq+1] + v[end:]
		}
		start = end + 1
	}
	return v
}

// parseTagList parses "name=value; name=value" (RFC 6376 section 3.2):
// whitespace around names and values is dropped, a trailing ";" allowed,
// a repeated name or a name that is not ALPHA *(ALNUM / "_") is an error.
func ParseTags(s string) (map[string]string, error) {
	tags := make(map[string]string, 12)
	for part := range strings.SplitSeq(s, ";") {
		name, value, ok := strings.Cut(part, "=")
		if !ok {
			if trimFWS(part) == "" {
				continue
			}
			return nil, errors.New("a tag without '='")
		}
		name = trimFWS(name)
		if !tagName(name) {
			return nil, errors.New("bad tag name " + strconv.Quote(name))
		}
		if _, dup := tags[name]; dup {
			return nil, errors.New("tag " + name + "= repeated")
		}
		tags[name] = trimFWS(value)
	}
	return tags, nil
}

func tagName(n string) bool {
	if n == "" || !isAlpha(n[0]) {
		return false
	}
	for i := 1; i < len(n); i++ {
		if c := n[i]; !isAlpha(c) && !(c >= '0' && c <= '9') && c != '_' {
			return false
		}
	}
	return true
}

func isAlpha(c byte) bool { return c|0x20 >= 'a' && c|0x20 <= 'z' }

func isFWS(c byte) bool { return c == ' ' || c == '\t' || c == '\r' || c == '\n' }

func trimFWS(s string) string {
	for len(s) > 0 && isFWS(s[0]) {
		s = s[1:]
	}
	for len(s) > 0 && isFWS(s[len(s)-1]) {
		s = s[:len(s)-1]
	}
	return s
}

// stripFWS removes all whitespace (base64 values may be folded anywhere).
func StripFWS(s string) string {
	if strings.IndexFunc(s, func(r rune) bool { return r < 0x80 && isFWS(byte(r)) }) < 0 {
		return s
	}
	b := make([]byte, 0, len(s))
	for i := 0; i < len(s); i++ {
		if !isFWS(s[i]) {
			b = append(b, s[i])
		}
	}
	return string(b)
}

// listHas reports whether the colon-separated list l has item x.
func listHas(l, x string) bool {
	for it := range strings.SplitSeq(l, ":") {
		if trimFWS(it) == x {
			return true
		}
	}
	return false
}
