// Package arc implements the Authenticated Received Chain (RFC 8617): it
// reads and validates the ARC sets a message arrives with, and adds the
// next set (ARC-Authentication-Results, ARC-Message-Signature, ARC-Seal)
// for a node that forwards the message, signed with one of the node's
// RSA DKIM keys (rsa-sha256, relaxed/relaxed, the same key records as
// DKIM).
//
// Validation streams like DKIM verification (package dkim): the header is
// parsed and the key lookups start when the header is complete, the body
// is hashed chunk by chunk, and the chain is decided at the end.
package arc

import (
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/mailnode/mailnode/dkim"
)

// MaxInstance is the highest instance number a chain may have (RFC 8617
// section 4.2.1): a message with 50 sets gets no further one.
const MaxInstance = 50

// The header field names of an ARC set.
const (
	FieldAAR  = "ARC-Authentication-Results"
	FieldAMS  = "ARC-Message-Signature"
	FieldSeal = "ARC-Seal"
)

// CV is a chain validation status (the cv= of ARC-Seal, the arc= result of
// Authentication-Results).
type CV string

const (
	None CV = "none" // no ARC set
	Pass CV = "pass" // every seal and the latest message signature verify
	Fail CV = "fail" // anything else
)

// Set is one instance's three header fields as they are in the message.
type Set struct {
	Instance int
	AAR      dkim.Header
	AMS      dkim.Header
	Seal     dkim.Header
}

// Chain is what a message's header says about its ARC sets.
type Chain struct {
	// Sets are the complete sets, Sets[k] being instance k+1; set only when
	// Err is nil.
	Sets []Set
	// Highest is the highest instance number any ARC field carries (0: the
	// message has no ARC field, or none with a usable number).
	Highest int
	// Fields is how many ARC fields the message has.
	Fields int
	// Err says why the chain is malformed (it then fails validation).
	Err error
}

// fieldKind returns which ARC field name is, or "" for another field.
func fieldKind(name string) string {
	n := strings.TrimRight(name, " \t")
	for _, k := range []string{FieldAAR, FieldAMS, FieldSeal} {
		if strings.EqualFold(n, k) {
			return k
		}
	}
	return ""
}

// ParseChain collects the ARC sets of headers (all header fields, top to
// bottom, values as received). It never fails: a malformed chain comes
// back with Err set.
func ParseChain(headers []dkim.Header) Chain {
	var c Chain
	type slot struct{ aar, ams, seal []dkim.Header }
	var slots [MaxInstance + 1]slot
	for _, h := range headers {
		kind := fieldKind(h.Name)
		if kind == "" {
			continue
		}
		c.Fields++
		i, err := instanceOf(kind, h.Value)
		if err != nil {
			if c.Err == nil {
				c.Err = fmt.Errorf("%s: %w", kind, err)
			}
			continue
		}
		c.Highest = max(c.Highest, i)
		if i > MaxInstance {
			if c.Err == nil {
				c.Err = fmt.Errorf("%s: instance %d is above %d", kind, i, MaxInstance)
			}
			continue
		}
		s := &slots[i]
		switch kind {
		case FieldAAR:
			s.aar = append(s.aar, h)
		case FieldAMS:
			s.ams = append(s.ams, h)
		case FieldSeal:
			s.seal = append(s.seal, h)
		}
	}
	if c.Err != nil || c.Fields == 0 {
		return c
	}
	for i := 1; i <= c.Highest; i++ {
		s := slots[i]
		if len(s.aar) != 1 || len(s.ams) != 1 || len(s.seal) != 1 {
			c.Err = fmt.Errorf("instance %d has %d %s, %d %s and %d %s fields (one of each is required)",
				i, len(s.aar), FieldAAR, len(s.ams), FieldAMS, len(s.seal), FieldSeal)
			c.Sets = nil
			return c
		}
		c.Sets = append(c.Sets, Set{Instance: i, AAR: s.aar[0], AMS: s.ams[0], Seal: s.seal[0]})
	}
	return c
}

var errNoInstance = errors.New("no instance tag i=")

// instanceOf reads the i= of an ARC field: the first tag of
// ARC-Authentication-Results (i=N; authserv-id; ...), a tag of the other
// two.
func instanceOf(kind, value string) (int, error) {
	var v string
	if kind == FieldAAR {
		first, _, ok := strings.Cut(value, ";")
		if !ok {
			return 0, errNoInstance
		}
		name, val, ok := strings.Cut(first, "=")
		if !ok || dkim.StripFWS(name) != "i" {
			return 0, errNoInstance
		}
		v = dkim.StripFWS(val)
	} else {
		tags, err := dkim.ParseTags(value)
		if err != nil {
			return 0, err
		}
		var ok bool
		if v, ok = tags["i"]; !ok {
			return 0, errNoInstance
		}
	}
	if v == "" || len(v) > 4 || strings.Trim(v, "0123456789") != "" {
		return 0, fmt.Errorf("malformed instance i=%q", v)
	}
	n, _ := strconv.Atoi(v)
	if n < 1 {
		return 0, fmt.Errorf("instance i=%d is below 1", n)
	}
	return n, nil
}
