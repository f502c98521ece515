package dkim

import (
	"bytes"
	"crypto/sha256"
	"math/rand/v2"
	"regexp"
	"strings"
	"testing"
)

// relaxedRef is RFC 6376 section 3.4.4 written as plainly as possible, on
// the whole body at once: the reference the streaming canonicalizer must equal.
func relaxedRef(body []byte) []byte {
	// Lines end in CRLF or a lone LF; a lone CR is content.
	var lines [][]byte
	for len(body) > 0 {
		nl := bytes.IndexByte(body, '\n')
		if nl < 0 {
			lines = append(lines, body)
			break
		}
		line := body[:nl]
		if len(line) > 0 && line[len(line)-1] == '\r' {
			line = line[:len(line)-1]
		}
		lines = append(lines, line)
		body = body[nl+1:]
	}
	wsp := regexp.MustCompile(`[ \t]+`)
	var out []string
	for _, l := range lines {
		s := wsp.ReplaceAllString(string(l), " ")
		s = strings.TrimRight(s, " ")
		out = append(out, s)
	}
	for len(out) > 0 && out[len(out)-1] == "" {
		out = out[:len(out)-1]
	}
	if len(out) == 0 {
		return nil
	}
	return []byte(strings.Join(out, "\r\n") + "\r\n")
}

// canonChunks runs the streaming canonicalizer with b cut at the given points.
func canonChunks(b []byte, cuts []int) []byte {
	var out bytes.Buffer
	c := NewRelaxedBody(&out)
	prev := 0
	for _, k := range cuts {
		c.Write(b[prev:k])
		prev = k
	}
	c.Write(b[prev:])
	c.Close()
	return out.Bytes()
}

var canonCases = []string{
	"",
	"\r\n",
	"\r\n\r\n\r\n",
	" \r\n\t\r\n",
	"a",
	"a\r\n",
	"a  ",
	"a \r\n",
	"a\t\r\n",
	" a\r\n",
	"  a  b\t\tc \r\n",
	"a\r\n\r\n",
	"a\r\n\r\nb\r\n",
	"a\r\n \r\nb\r\n",
	"a\r\n\r\n\r\n \t \r\n\r\n",
	"a\rb\r\n",
	"a \rb\r\n",
	"a\r",
	"a \r",
	"\r",
	"\r\r\n",
	"a\nb\n",
	"a \nb\n\n",
	"a\n\r\nb",
	"line one\r\nline two \r\n\r\nline  four\r\n\r\n",
	"x\r\n\r\n\r\ny \r\n\r\n\r\nz",
}

func TestRelaxedBodyCases(t *testing.T) {
	for _, tc := range canonCases {
		want := relaxedRef([]byte(tc))
		for cut := 0; cut <= len(tc); cut++ {
			got := canonChunks([]byte(tc), []int{cut})
			if !bytes.Equal(got, want) {
				t.Errorf("%q cut at %d: got %q, want %q", tc, cut, got, want)
			}
		}
		// One byte per Write.
		var cuts []int
		for k := 1; k < len(tc); k++ {
			cuts = append(cuts, k)
		}
		if got := canonChunks([]byte(tc), cuts); !bytes.Equal(got, want) {
			t.Errorf("%q byte by byte: got %q, want %q", tc, got, want)
		}
	}
}

// randomBody builds bodies from the byte classes that matter.
func randomBody(r *rand.Rand, n int) []byte {
	atoms := []string{"a", "b", "word", " ", " ", "  ", "\t", "\r\n", "\r\n", "\r\n\r\n", "\r", "\n", " \r\n", "xyz \t "}
	var b []byte
	for len(b) < n {
		b = append(b, atoms[r.IntN(len(atoms))]...)
	}
	return b
}

func TestRelaxedBodyRandom(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for iter := 0; iter < 3000; iter++ {
		b := randomBody(r, r.IntN(300))
		var cuts []int
		for k := 0; k < len(b); k += 1 + r.IntN(40) {
			cuts = append(cuts, k)
		}
		want := relaxedRef(b)
		if got := canonChunks(b, cuts); !bytes.Equal(got, want) {
			t.Fatalf("%q cuts %v:\n got %q\nwant %q", b, cuts, got, want)
		}
	}
}

// Bodies canonicalized at the same time, and a canonicalizer reused after
// Close, each keep their own gathering buffer: Close gives it back to a pool
// the others draw from.
func TestRelaxedBodyInterleaved(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	const n = 3
	var outs [n]bytes.Buffer
	var cs [n]*RelaxedBody
	for i := range cs {
		cs[i] = NewRelaxedBody(&outs[i])
	}
	for iter := 0; iter < 100; iter++ {
		var bodies [n][]byte
		for i := range bodies {
			bodies[i] = randomBody(r, r.IntN(40000))
			outs[i].Reset()
			cs[i].Reset(&outs[i])
		}
		for pos := 0; ; pos += 700 {
			more := false
			for i, b := range bodies {
				if pos < len(b) {
					cs[i].Write(b[pos:min(pos+700, len(b))])
					more = true
				}
			}
			if !more {
				break
			}
		}
		for i, c := range cs {
			c.Close()
			if want := relaxedRef(bodies[i]); !bytes.Equal(outs[i].Bytes(), want) {
				t.Fatalf("body %d of round %d differs from the reference", i, iter)
			}
		}
	}
}

func FuzzRelaxedBody(f *testing.F) {
	for _, tc := range canonCases {
		f.Add([]byte(tc), uint8(3))
	}
	f.Fuzz(func(t *testing.T, b []byte, step uint8) {
		var cuts []int
		if step > 0 {
			for k := int(step); k < len(b); k += int(step) {
				cuts = append(cuts, k)
			}
		}
		want := relaxedRef(b)
		if got := canonChunks(b, cuts); !bytes.Equal(got, want) {
			t.Fatalf("%q step %d:\n got %q\nwant %q", b, step, got, want)
		}
	})
}

// benchBody is typical text mail: 72-column lines, some with trailing
// spaces (format=flowed), a quoted block with double spaces.
func benchBody(size int) []byte {
	var b bytes.Buffer
	lines := []string{
		"Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusmod",
		"tempor incididunt ut labore et dolore magna aliqua. Ut enim ad minim ",
		"veniam, quis nostrud exercitation ullamco laboris nisi ut aliquip ex ea",
		"",
		"> commodo consequat.  Duis aute irure dolor in reprehenderit in voluptate",
		"dGhpcyBpcyBiYXNlNjQgZW5jb2RlZCBhdHRhY2htZW50IGRhdGEgdGhhdCBpcyBsb25nIGVu",
	}
	for i := 0; b.Len() < size; i++ {
		b.WriteString(lines[i%len(lines)])
		b.WriteString("\r\n")
	}
	// Postfix hands over whole lines: end on a line end.
	out := b.Bytes()[:size-2]
	return append(out, '\r', '\n')
}

func BenchmarkRelaxedBodySHA256(b *testing.B) {
	body := benchBody(1 << 20)
	h := sha256.New()
	c := NewRelaxedBody(h)
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		h.Reset()
		c.Reset(h)
		for k := 0; k < len(body); k += 65535 {
			c.Write(body[k:min(k+65535, len(body))])
		}
		c.Close()
		h.Sum(nil)
	}
}

func BenchmarkSHA256Only(b *testing.B) {
	body := benchBody(1 << 20)
	b.SetBytes(int64(len(body)))
	for b.Loop() {
		sha256.Sum256(body)
	}
}
