package arc

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/mailnode/mailnode/dkim"
)

// Why Seal adds no set.
var (
	// ErrNotRSA: ARC signatures are rsa-sha256 (RFC 8617 section 4.1.3);
	// an Ed25519 key cannot seal.
	ErrNotRSA = errors.New("arc: the key is not an RSA key (ARC seals with rsa-sha256 only)")
	// ErrTerminated: the latest seal says cv=fail (RFC 8617 section 5.1).
	ErrTerminated = errors.New("arc: the chain has ended with cv=fail")
	// ErrInstanceLimit: the chain has MaxInstance sets already, or a field
	// claims a higher instance.
	ErrInstanceLimit = fmt.Errorf("arc: the chain has reached instance %d", MaxInstance)
	// ErrUnnumbered: the message has ARC fields, none with an instance
	// number, so there is nothing to number the next set after.
	ErrUnnumbered = errors.New("arc: ARC fields without a usable instance number")
)

// Sealer adds ARC sets under one ADMD's name with one key.
type Sealer struct {
	Key        dkim.Key // an RSA key ("rsa"): d= and s= of the set
	AuthServID string   // the authserv-id of ARC-Authentication-Results
}

// Seal returns the next ARC set for a message whose header fields, as the
// message will leave (top to bottom, without the new set), are headers,
// whose relaxed body hash is bodyHash and whose arriving chain validated as
// prior. results are the node's method results (RFC 8601 resinfo, e.g.
// "dkim=pass header.d=example.org"), written to ARC-Authentication-Results
// one per line. The fields come top first, as they go on top of the
// message: ARC-Seal, ARC-Message-Signature, ARC-Authentication-Results.
//
// The new set's cv= is prior's status; with cv=fail the seal covers only
// its own set (RFC 8617 section 5.1.2).
func (s Sealer) Seal(headers []dkim.Header, bodyHash []byte, prior Result, results []string, t time.Time) ([]dkim.Header, error) {
	if s.Key.Algorithm != "rsa" {
		return nil, ErrNotRSA
	}
	switch {
	case prior.Terminated:
		return nil, ErrTerminated
	case prior.Chain.Highest >= MaxInstance:
		return nil, ErrInstanceLimit
	case prior.Chain.Fields > 0 && prior.Chain.Highest == 0:
		return nil, ErrUnnumbered
	}
	cv := prior.CV
	if cv == "" {
		cv = None
	}
	if prior.Chain.Fields == 0 {
		cv = None
	}
	inst := strconv.Itoa(prior.Chain.Highest + 1)
	ts := strconv.FormatInt(t.Unix(), 10)
	if len(results) == 0 {
		results = []string{"none"}
	}

	aar := dkim.Header{Name: FieldAAR, Value: " i=" + inst + "; " + s.AuthServID + ";\r\n\t" + strings.Join(results, ";\r\n\t")}

	picked, names := pick(headers)
	var w folder
	w.tag("i=" + inst + ";")
	w.tag("a=rsa-sha256;")
	w.tag("c=relaxed/relaxed;")
	w.tag("d=" + s.Key.Domain + ";")
	w.tag("s=" + s.Key.Selector + ";")
	w.tag("t=" + ts + ";")
	w.tag("h=" + strings.Join(names, ":") + ";")
	w.tag("bh=" + base64.StdEncoding.EncodeToString(bodyHash) + ";")
	w.tag("b=")
	ams := dkim.Header{Name: FieldAMS, Value: w.String()}
	h := sha256.New()
	var buf []byte
	for _, p := range picked {
		buf = dkim.RelaxedHeader(buf[:0], p.Name, p.Value, true)
		h.Write(buf)
	}
	h.Write(dkim.RelaxedHeader(buf[:0], ams.Name, ams.Value, false))
	b, err := s.sign(h.Sum(nil))
	if err != nil {
		return nil, err
	}
	ams.Value += fold(b, w.line)

	w = folder{}
	w.tag("i=" + inst + ";")
	w.tag("a=rsa-sha256;")
	w.tag("cv=" + string(cv) + ";")
	w.tag("d=" + s.Key.Domain + ";")
	w.tag("s=" + s.Key.Selector + ";")
	w.tag("t=" + ts + ";")
	w.tag("b=")
	seal := dkim.Header{Name: FieldSeal, Value: w.String()}
	sets := []Set{{AAR: aar, AMS: ams, Seal: seal}}
	if cv != Fail {
		sets = append(append([]Set(nil), prior.Chain.Sets...), sets[0])
	}
	if b, err = s.sign(sealDigest(sets)); err != nil {
		return nil, err
	}
	seal.Value += fold(b, w.line)
	return []dkim.Header{seal, ams, aar}, nil
}

func (s Sealer) sign(digest []byte) (string, error) {
	b, err := s.Key.Signer.Sign(rand.Reader, digest, crypto.SHA256)
	if err != nil {
		return "", fmt.Errorf("arc: sign with %s/%s: %w", s.Key.Domain, s.Key.Selector, err)
	}
	return base64.StdEncoding.EncodeToString(b), nil
}

// pick chooses the fields the message signature covers: those DKIM signing
// covers (dkim.SignedHeaders), each as often as it occurs, taken from the
// bottom as a verifier does (RFC 6376 section 5.4.2), and From once more
// than it occurs, so that a From added later breaks the signature.
func pick(headers []dkim.Header) (picked []dkim.Header, names []string) {
	byName := map[string][]int{}
	for i, h := range headers {
		n := strings.ToLower(strings.TrimRight(h.Name, " \t"))
		byName[n] = append(byName[n], i)
	}
	for _, name := range dkim.SignedHeaders {
		n := strings.ToLower(name)
		idx := byName[n]
		reps := len(idx)
		if n == "from" {
			reps++
		}
		for r := 0; r < reps; r++ {
			names = append(names, n)
			if k := len(idx) - 1 - r; k >= 0 {
				picked = append(picked, headers[idx[k]])
			}
		}
	}
	return picked, names
}

// folder writes tags separated by spaces, starting a new line (CRLF TAB)
// before a tag that would take the line past 76 characters.
type folder struct {
	b    strings.Builder
	line int
}

func (f *folder) tag(t string) {
	if f.line == 0 {
		f.line = len(FieldAMS) + 1
	}
	if f.line > 1 && f.line+1+len(t) > 76 {
		f.b.WriteString("\r\n\t")
		f.line = 1
	} else {
		f.b.WriteByte(' ')
		f.line++
	}
	f.b.WriteString(t)
	f.line += len(t)
}

func (f *folder) String() string { return f.b.String() }

// fold returns a base64 value broken into lines of at most 76 characters,
// the first continuing a line that has line characters already.
func fold(b64 string, line int) string {
	var out strings.Builder
	for len(b64) > 0 {
		room := 76 - line
		if room < 8 {
			out.WriteString("\r\n\t")
			line, room = 1, 75
		}
		n := min(room, len(b64))
		out.WriteString(b64[:n])
		line += n
		b64 = b64[n:]
	}
	return out.String()
}
