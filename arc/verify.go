package arc

import (
	"context"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"hash"
	"strconv"
	"strings"
	"time"

	"github.com/mailnode/mailnode/dkim"
	"github.com/mailnode/mailnode/resolver"
)

// Result is the validation of the chain a message arrived with.
type Result struct {
	CV     CV
	Reason string // why, when CV is Fail
	Chain  Chain
	// Terminated: the latest seal says cv=fail, so the chain has ended
	// and no set may be added (RFC 8617 section 5.1, step 1).
	Terminated bool
	// Domain and Selector are those of the latest seal, when there is one.
	Domain, Selector string
}

// sig is one parsed ARC-Message-Signature or ARC-Seal.
type sig struct {
	field       dkim.Header
	domain      string
	selector    string
	cv          CV       // ARC-Seal only
	names       []string // h=, ARC-Message-Signature only
	relaxedHead bool
	relaxedBody bool
	bh, b       []byte
	err         error // unusable signature: the chain fails with it
	key         *keyFetch
}

// keyFetch is one key record lookup, shared by the signatures that name
// the same selector.
type keyFetch struct {
	done   chan struct{}
	key    *dkim.PublicKey // RSA
	status dkim.Status
	reason string
}

// Validator checks the ARC chain of one message as it streams by.
type Validator struct {
	headers []dkim.Header
	chain   Chain
	ams     *sig   // the latest instance's message signature
	seals   []*sig // every instance's seal, Sets' order
	cancel  context.CancelFunc

	relaxed *dkim.BodyHasher // always: the body hash of the set a sealer adds
	simple  hash.Hash        // when the latest AMS uses simple body canonicalization
	simpleC dkim.SimpleBody
	bodySum []byte
}

// NewValidator parses the ARC fields of headers (all header fields of the
// message, top to bottom, values as received) and starts the key lookups
// of the latest message signature and of every seal, which end at the
// latest when Result returns, Abort is called or ctx ends. Where ctx is
// marked resolver.CacheFirst (lookup honours resolver.CacheOnly), a key
// already in lookup's cache is taken at once, without a goroutine.
func NewValidator(ctx context.Context, headers []dkim.Header, lookup dkim.LookupTXTFunc, now time.Time) *Validator {
	ctx, cancel := context.WithCancel(ctx)
	v := &Validator{headers: headers, chain: ParseChain(headers), cancel: cancel, relaxed: dkim.NewBodyHasher()}
	if v.chain.Err != nil || len(v.chain.Sets) == 0 {
		return v
	}
	fetches := map[string]*keyFetch{}
	fetch := func(s *sig) {
		if s.err != nil {
			return
		}
		name := s.selector + "._domainkey." + s.domain
		if f, ok := fetches[name]; ok {
			s.key = f
			return
		}
		f := &keyFetch{done: make(chan struct{})}
		fetches[name] = f
		s.key = f
		resolver.Start(ctx, f.done, func(ctx context.Context) {
			f.key, f.status, f.reason = dkim.LookupKey(ctx, lookup, name, "rsa")
		})
	}
	latest := v.chain.Sets[len(v.chain.Sets)-1]
	v.ams = parseAMS(latest.AMS, now)
	if v.ams.err == nil && !v.ams.relaxedBody {
		v.simple = sha256.New()
		v.simpleC.Reset(v.simple)
	}
	fetch(v.ams)
	for _, s := range v.chain.Sets {
		seal := parseSeal(s.Seal, now)
		v.seals = append(v.seals, seal)
		fetch(seal)
	}
	return v
}

// Write takes the next body chunk (CRLF line ends). It never fails.
func (v *Validator) Write(p []byte) (int, error) {
	v.relaxed.Write(p)
	if v.simple != nil {
		v.simpleC.Write(p)
	}
	return len(p), nil
}

// BodyHash ends the body and returns its relaxed SHA-256 hash, the bh= of
// the set a sealer adds.
func (v *Validator) BodyHash() []byte {
	if v.bodySum == nil {
		v.bodySum = v.relaxed.Sum()
	}
	return v.bodySum
}

// Abort stops the key lookups of a message that will not end.
func (v *Validator) Abort() { v.cancel() }

// Result ends the body and decides the chain (RFC 8617 section 5.2),
// waiting for the key lookups until ctx ends (a lookup still running then
// fails the chain).
func (v *Validator) Result(ctx context.Context) Result {
	defer v.cancel()
	v.BodyHash()
	r := Result{Chain: v.chain}
	fail := func(format string, a ...any) Result {
		r.CV, r.Reason = Fail, fmt.Sprintf(format, a...)
		return r
	}
	switch {
	case v.chain.Fields == 0:
		r.CV = None
		return r
	case v.chain.Err != nil:
		return fail("malformed chain: %v", v.chain.Err)
	}
	n := len(v.seals)
	latest := v.seals[n-1]
	r.Domain, r.Selector = latest.domain, latest.selector
	if latest.err == nil && latest.cv == Fail {
		r.Terminated = true
		return fail("ARC-Seal i=%d says cv=fail: the chain has ended", n)
	}
	for i, s := range v.seals {
		if s.err != nil {
			return fail("ARC-Seal i=%d: %v", i+1, s.err)
		}
		if (i == 0 && s.cv != None) || (i > 0 && s.cv != Pass) {
			return fail("ARC-Seal i=%d says cv=%s", i+1, s.cv)
		}
	}
	if err := v.verifyAMS(ctx); err != nil {
		return fail("ARC-Message-Signature i=%d: %v", n, err)
	}
	for i := n - 1; i >= 0; i-- {
		if err := v.verifySeal(ctx, i); err != nil {
			return fail("ARC-Seal i=%d: %v", i+1, err)
		}
	}
	r.CV = Pass
	return r
}

// awaitKey waits for s's key.
func awaitKey(ctx context.Context, s *sig) (*dkim.PublicKey, error) {
	select {
	case <-s.key.done:
	case <-ctx.Done():
		return nil, errors.New("key lookup timed out")
	}
	if s.key.key == nil {
		return nil, fmt.Errorf("key %s._domainkey.%s: %s (%s)", s.selector, s.domain, s.key.reason, s.key.status)
	}
	return s.key.key, nil
}

func (v *Validator) verifyAMS(ctx context.Context) error {
	s := v.ams
	if s.err != nil {
		return s.err
	}
	sum := v.bodySum
	if !s.relaxedBody {
		v.simpleC.Close()
		sum = v.simple.Sum(nil)
	}
	if subtle.ConstantTimeCompare(sum, s.bh) != 1 {
		return errors.New("body hash does not match")
	}
	key, err := awaitKey(ctx, s)
	if err != nil {
		return err
	}
	h := sha256.New()
	var buf []byte
	used := make(map[string]int, len(s.names))
	for _, name := range s.names {
		n := used[name]
		used[name] = n + 1
		for i := len(v.headers) - 1; i >= 0; i-- {
			if !strings.EqualFold(strings.TrimRight(v.headers[i].Name, " \t"), name) {
				continue
			}
			if n > 0 {
				n--
				continue
			}
			buf = canon(buf[:0], s.relaxedHead, v.headers[i], true)
			h.Write(buf)
			break
		}
	}
	buf = canon(buf[:0], s.relaxedHead, dkim.Header{Name: s.field.Name, Value: dkim.WithoutB(s.field.Value)}, false)
	h.Write(buf)
	return verifyRSA(key, h.Sum(nil), s.b)
}

// verifySeal checks the seal of Sets[k]: it signs the sets 1..k+1 in
// order, AAR, AMS, ARC-Seal each, relaxed, its own b= left empty.
func (v *Validator) verifySeal(ctx context.Context, k int) error {
	s := v.seals[k]
	key, err := awaitKey(ctx, s)
	if err != nil {
		return err
	}
	return verifyRSA(key, sealDigest(v.chain.Sets[:k+1]), s.b)
}

// sealDigest is the SHA-256 an ARC-Seal signs over sets, the last of which
// is its own (RFC 8617 section 5.1.1).
func sealDigest(sets []Set) []byte {
	h := sha256.New()
	var buf []byte
	for i, s := range sets {
		buf = dkim.RelaxedHeader(buf[:0], s.AAR.Name, s.AAR.Value, true)
		h.Write(buf)
		buf = dkim.RelaxedHeader(buf[:0], s.AMS.Name, s.AMS.Value, true)
		h.Write(buf)
		if i == len(sets)-1 {
			buf = dkim.RelaxedHeader(buf[:0], s.Seal.Name, dkim.WithoutB(s.Seal.Value), false)
		} else {
			buf = dkim.RelaxedHeader(buf[:0], s.Seal.Name, s.Seal.Value, true)
		}
		h.Write(buf)
	}
	return h.Sum(nil)
}

func verifyRSA(key *dkim.PublicKey, digest, b []byte) error {
	if !key.Verify(digest, b) {
		return errors.New("signature does not verify")
	}
	return nil
}

// canon appends one field in the simple or relaxed header form.
func canon(dst []byte, relaxed bool, h dkim.Header, withCRLF bool) []byte {
	if relaxed {
		return dkim.RelaxedHeader(dst, h.Name, h.Value, withCRLF)
	}
	dst = append(dst, h.Name...)
	dst = append(dst, ':')
	dst = dkim.AppendCRLF(dst, h.Value)
	if withCRLF {
		dst = append(dst, '\r', '\n')
	}
	return dst
}

// parseCommon reads the tags both signatures share. The instance was
// checked by ParseChain.
func parseCommon(f dkim.Header, required []string, now time.Time) (*sig, map[string]string) {
	s := &sig{field: f}
	tags, err := dkim.ParseTags(f.Value)
	if err != nil {
		s.err = fmt.Errorf("malformed: %v", err)
		return s, nil
	}
	for _, t := range required {
		if tags[t] == "" {
			s.err = fmt.Errorf("no %s= tag", t)
			return s, nil
		}
	}
	s.domain = strings.ToLower(tags["d"])
	s.selector = tags["s"]
	if a := tags["a"]; a != "rsa-sha256" {
		s.err = fmt.Errorf("algorithm a=%s is not rsa-sha256", a)
		return s, nil
	}
	if x, ok := tags["x"]; ok {
		xv, err := strconv.ParseInt(x, 10, 64)
		if err != nil || xv < 0 {
			s.err = errors.New("malformed x=")
			return s, nil
		}
		if now.Unix() > xv {
			s.err = errors.New("expired (x=)")
			return s, nil
		}
	}
	if s.b, err = base64.StdEncoding.DecodeString(dkim.StripFWS(tags["b"])); err != nil {
		s.err = errors.New("malformed b=")
		return s, nil
	}
	return s, tags
}

func parseAMS(f dkim.Header, now time.Time) *sig {
	s, tags := parseCommon(f, []string{"i", "a", "b", "bh", "d", "h", "s"}, now)
	if s.err != nil {
		return s
	}
	if _, ok := tags["l"]; ok {
		s.err = errors.New("body length l= leaves part of the body unsigned")
		return s
	}
	var ok bool
	if s.relaxedHead, s.relaxedBody, ok = dkim.ParseCanon(tags["c"]); !ok {
		s.err = fmt.Errorf("unknown canonicalization c=%s", tags["c"])
		return s
	}
	for _, n := range strings.Split(tags["h"], ":") {
		n = strings.ToLower(dkim.StripFWS(n))
		if n == "arc-seal" {
			s.err = errors.New("h= lists ARC-Seal")
			return s
		}
		s.names = append(s.names, n)
	}
	var err error
	if s.bh, err = base64.StdEncoding.DecodeString(dkim.StripFWS(tags["bh"])); err != nil {
		s.err = errors.New("malformed bh=")
	}
	return s
}

func parseSeal(f dkim.Header, now time.Time) *sig {
	s, tags := parseCommon(f, []string{"i", "a", "b", "cv", "d", "s"}, now)
	if s.err != nil {
		return s
	}
	if _, ok := tags["h"]; ok {
		s.err = errors.New("h= is not allowed in ARC-Seal")
		return s
	}
	switch cv := CV(strings.ToLower(tags["cv"])); cv {
	case None, Pass, Fail:
		s.cv = cv
	default:
		s.err = fmt.Errorf("unknown cv=%s", tags["cv"])
	}
	return s
}

// SplitMessage splits a raw message (CRLF or LF line ends) into its header
// fields, values as they are with their folding, and its body with CRLF
// line ends. A message without an empty line is all header.
func SplitMessage(raw []byte) ([]dkim.Header, []byte) {
	s := strings.ReplaceAll(string(raw), "\r\n", "\n")
	head, body, _ := strings.Cut(s, "\n\n")
	if strings.HasPrefix(s, "\n") {
		head, body = "", s[1:]
	}
	var hs []dkim.Header
	for _, line := range strings.SplitAfter(head, "\n") {
		if line == "" {
			continue
		}
		line = strings.TrimSuffix(line, "\n")
		if (line[0] == ' ' || line[0] == '\t') && len(hs) > 0 {
			hs[len(hs)-1].Value += "\r\n" + line
			continue
		}
		name, value, _ := strings.Cut(line, ":")
		hs = append(hs, dkim.Header{Name: name, Value: value})
	}
	return hs, []byte(strings.ReplaceAll(body, "\n", "\r\n"))
}

// Verify validates the chain of a whole message at once.
func Verify(ctx context.Context, raw []byte, lookup dkim.LookupTXTFunc, now time.Time) Result {
	hs, body := SplitMessage(raw)
	v := NewValidator(ctx, hs, lookup, now)
	v.Write(body)
	return v.Result(ctx)
}
