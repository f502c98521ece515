// Package srs is the Sender Rewriting Scheme as libsrs2 and postsrsd spell
// it, so that addresses made here and by those are read alike:
//
//	SRS0=HHHH=TT=domain=local@forwarder
//	SRS1=HHHH=first-forwarder==HHHH=TT=domain=local@forwarder
//
// An envelope sender a node forwards with is rewritten into an address of
// the forwarder's own domain (Forward), so that the next hop checks SPF
// against the forwarder, and a bounce to that address is turned back into
// the original sender (Reverse). A sender that already is an SRS0 address
// of another forwarder becomes SRS1, which names that first forwarder and
// keeps its SRS0 part whole; reversing an SRS1 address gives the first
// forwarder's SRS0 address back.
//
// HHHH is the first four characters of the standard base64 of an
// HMAC-SHA1, keyed with a secret, over the other fields lower-cased and
// concatenated (timestamp, domain, local part for SRS0; first forwarder
// and the rest for SRS1). It is compared ignoring case, because mail
// systems fold the case of addresses (Postfix's table lookups do). TT is
// the day the address was made (days since the Unix epoch, modulo 1024)
// in two base32 characters; an address is valid for MaxAge days after
// that day (and on the next day, for clocks a little ahead). Several
// secrets may be given: the first makes addresses, every one verifies, so
// that a secret can be replaced without refusing the bounces of the
// addresses the old one made.
//
// socketmap.go serves Reverse to Postfix over its socketmap protocol.
package srs

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha1"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"time"
)

// Defaults.
const (
	// MaxAge is how many days after the day it was made an SRS0 address
	// is reversed (postsrsd's and libsrs2's default).
	MaxAge = 21
	// MinSecretLen is the shortest secret accepted, in bytes.
	MinSecretLen = 16
	// HashLen is the length of the hash field, in characters.
	HashLen = 4
)

// The errors of Forward and Reverse (wrapped, with details).
var (
	// ErrNotSRS: the address is not an SRS0 or SRS1 address.
	ErrNotSRS = errors.New("srs: not an SRS address")
	// ErrMalformed: it looks like one but a field is missing or invalid.
	ErrMalformed = errors.New("srs: malformed SRS address")
	// ErrHash: its hash verifies with none of the secrets (forged, or
	// made by another forwarder).
	ErrHash = errors.New("srs: hash does not verify")
	// ErrExpired: its timestamp is older than MaxAge days.
	ErrExpired = errors.New("srs: address expired")
)

const (
	day        = 24 * 60 * 60
	timeChars  = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567" // base32, 5 bits each
	timeSlots  = 1 << 10                            // two characters
	separators = "=-+"                              // after SRS0/SRS1, as libsrs2 accepts
)

// SRS forwards and reverses with a set of secrets.
type SRS struct {
	secrets [][]byte
	// MaxAge is how many days an SRS0 address stays valid (MaxAge when 0).
	MaxAge int
	// Now is the clock (time.Now when nil).
	Now func() time.Time
}

// New returns an SRS that makes addresses with secrets[0] and verifies
// them with every one. Each secret must be at least MinSecretLen bytes.
func New(secrets ...[]byte) (*SRS, error) {
	if len(secrets) == 0 {
		return nil, errors.New("srs: no secret")
	}
	s := &SRS{}
	for i, k := range secrets {
		if len(k) < MinSecretLen {
			return nil, fmt.Errorf("srs: secret %d is %d bytes, at least %d are needed", i+1, len(k), MinSecretLen)
		}
		s.secrets = append(s.secrets, bytes.Clone(k))
	}
	return s, nil
}

// Secrets reports how many secrets s verifies with.
func (s *SRS) Secrets() int { return len(s.secrets) }

func (s *SRS) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

func (s *SRS) maxAge() int {
	if s.MaxAge > 0 {
		return s.MaxAge
	}
	return MaxAge
}

// IsSRS reports whether an address (or its local part) is an SRS0 or
// SRS1 address by its form: "SRS0" or "SRS1" in any case, then one of
// "=", "-", "+", then at least one character.
func IsSRS(addr string) bool { return isTag(localPart(addr), '0') || isTag(localPart(addr), '1') }

func isTag(local string, n byte) bool {
	return len(local) > 5 && (local[0]|0x20) == 's' && (local[1]|0x20) == 'r' && (local[2]|0x20) == 's' &&
		local[3] == n && strings.IndexByte(separators, local[4]) >= 0
}

// localPart is what precedes the last '@' (all of addr without one).
func localPart(addr string) string {
	if i := strings.LastIndexByte(addr, '@'); i >= 0 {
		return addr[:i]
	}
	return addr
}

// Forward returns the address sender (local@domain) is rewritten to when
// it is forwarded by aliasDomain: SRS0 for an ordinary sender, SRS1 for
// one that is an SRS0 or SRS1 address already.
func (s *SRS) Forward(sender, aliasDomain string) (string, error) {
	at := strings.LastIndexByte(sender, '@')
	if at <= 0 || at == len(sender)-1 {
		return "", fmt.Errorf("%w: sender %q is not local@domain", ErrMalformed, sender)
	}
	if aliasDomain == "" {
		return "", fmt.Errorf("%w: no forwarder domain", ErrMalformed)
	}
	user, host := sender[:at], sender[at+1:]
	switch {
	case isTag(user, '1'):
		// SRS1=HHHH=first==rest@previous: keep the first forwarder and
		// the rest, drop the previous forwarder's hash and domain.
		rest := user[5:]
		i := strings.IndexByte(rest, '=')
		if i < 0 {
			return "", fmt.Errorf("%w: SRS1 sender without a forwarder", ErrMalformed)
		}
		first, srsUser, ok := strings.Cut(rest[i+1:], "=")
		if !ok || first == "" || srsUser == "" {
			return "", fmt.Errorf("%w: SRS1 sender without a forwarder or local part", ErrMalformed)
		}
		return "SRS1=" + s.hash(0, first, srsUser) + "=" + first + "=" + srsUser + "@" + aliasDomain, nil
	case isTag(user, '0'):
		// SRS0 of another forwarder: that forwarder is the first, and its
		// local part from the separator on is kept whole.
		srsUser := user[4:]
		return "SRS1=" + s.hash(0, host, srsUser) + "=" + host + "=" + srsUser + "@" + aliasDomain, nil
	}
	stamp := Timestamp(s.now())
	return "SRS0=" + s.hash(0, stamp, host, user) + "=" + stamp + "=" + host + "=" + user + "@" + aliasDomain, nil
}

// Reverse returns the address an SRS address stands for: the original
// sender for SRS0, the first forwarder's SRS0 address for SRS1. Only an
// address whose hash verifies with one of the secrets, and (SRS0) whose
// timestamp is within MaxAge days, is reversed. The domain of addr is not
// looked at: the caller decides which domains are its own.
func (s *SRS) Reverse(addr string) (string, error) {
	local := localPart(addr)
	switch {
	case isTag(local, '1'):
		rest := local[5:]
		hash, rest, ok := strings.Cut(rest, "=")
		if !ok {
			return "", fmt.Errorf("%w: SRS1 without a forwarder", ErrMalformed)
		}
		first, user, ok := strings.Cut(rest, "=")
		if !ok || first == "" || user == "" {
			return "", fmt.Errorf("%w: SRS1 without a forwarder or local part", ErrMalformed)
		}
		if err := s.verify(hash, first, user); err != nil {
			return "", err
		}
		return "SRS0" + user + "@" + first, nil
	case isTag(local, '0'):
		f := strings.SplitN(local[5:], "=", 4)
		if len(f) != 4 || f[2] == "" || f[3] == "" {
			return "", fmt.Errorf("%w: SRS0 needs hash, timestamp, domain and local part", ErrMalformed)
		}
		hash, stamp, host, user := f[0], f[1], f[2], f[3]
		if err := s.checkStamp(stamp); err != nil {
			return "", err
		}
		if err := s.verify(hash, stamp, host, user); err != nil {
			return "", err
		}
		return user + "@" + host, nil
	}
	return "", ErrNotSRS
}

// hash is the HashLen-character hash of the fields with secret i.
func (s *SRS) hash(i int, fields ...string) string {
	m := hmac.New(sha1.New, s.secrets[i])
	for _, f := range fields {
		m.Write(lowerASCII(f))
	}
	return base64.StdEncoding.EncodeToString(m.Sum(nil))[:HashLen]
}

// verify checks a hash against every secret, ignoring case.
func (s *SRS) verify(hash string, fields ...string) error {
	if len(hash) != HashLen {
		return fmt.Errorf("%w: hash %q is not %d characters", ErrMalformed, hash, HashLen)
	}
	got := lowerASCII(hash)
	ok := 0
	for i := range s.secrets {
		ok |= subtle.ConstantTimeCompare(got, lowerASCII(s.hash(i, fields...)))
	}
	if ok != 1 {
		return ErrHash
	}
	return nil
}

// Timestamp is the two-character SRS timestamp of t's day.
func Timestamp(t time.Time) string {
	d := t.Unix() / day
	return string([]byte{timeChars[(d>>5)&31], timeChars[d&31]})
}

// checkStamp accepts a timestamp of today, of the MaxAge days before, or
// of tomorrow (a clock of another node a little ahead); case is ignored.
func (s *SRS) checkStamp(stamp string) error {
	if len(stamp) != 2 {
		return fmt.Errorf("%w: timestamp %q is not 2 characters", ErrMalformed, stamp)
	}
	then := 0
	for i := 0; i < 2; i++ {
		c := stamp[i]
		if c >= 'a' && c <= 'z' {
			c -= 'a' - 'A'
		}
		v := strings.IndexByte(timeChars, c)
		if v < 0 {
			return fmt.Errorf("%w: timestamp %q is not base32", ErrMalformed, stamp)
		}
		then = then<<5 | v
	}
	now := int((s.now().Unix() / day) % timeSlots)
	age := ((now-then)%timeSlots + timeSlots) % timeSlots
	if age <= s.maxAge() || age == timeSlots-1 {
		return nil
	}
	return fmt.Errorf("%w: made %d days ago, valid for %d", ErrExpired, age, s.maxAge())
}

// lowerASCII lower-cases ASCII letters only, as libsrs2 does (C locale).
func lowerASCII(s string) []byte {
	b := []byte(s)
	for i, c := range b {
		if c >= 'A' && c <= 'Z' {
			b[i] = c + 'a' - 'A'
		}
	}
	return b
}
