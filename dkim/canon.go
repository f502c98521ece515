package dkim

import (
	"bytes"
	"encoding/binary"
	"io"
	"math/bits"
	"sync"
)

// RelaxedBody is a streaming "relaxed" body canonicalizer (RFC 6376
// section 3.4.4). Whatever is written to it is canonicalized and passed on
// to W, typically a hash; Close finishes the body. It keeps a constant amount
// of state whatever the size of the body or of its lines.
//
// The rules, applied to lines ending in CRLF (a lone LF also ends a line, as
// go-msgauth and OpenDKIM treat it; a lone CR is ordinary content):
// whitespace at the end of a line is removed, every other run of spaces and
// tabs becomes one space, empty lines at the end of the body are removed,
// and a non-empty body ends in exactly one CRLF.
//
// Most lines of real mail are already canonical. Write therefore looks for
// the few byte patterns that need work (a tab, two spaces, a space before the
// line end, an empty line, a lone CR or LF) with the SIMD-backed searches of
// package bytes and hands whole runs of untouched lines to W in one call;
// only lines that need rewriting go through the byte-by-byte state machine.
type RelaxedBody struct {
	W io.Writer

	wsp     bool // whitespace seen and not yet written (dropped at line end)
	cr      bool // the last byte was a CR whose meaning depends on the next byte
	crlfs   int  // line ends seen since the last content byte
	written int  // how many of those line ends W already has (0 or 1)
	content bool // W has received content
	out     []byte
	pooled  *[]byte // where out came from in outBufs, if it did
	rs, re  int     // b[rs:re] of the current Write is output not yet passed to W
	err     error
}

// NewRelaxedBody returns a canonicalizer writing to w.
func NewRelaxedBody(w io.Writer) *RelaxedBody { return &RelaxedBody{W: w} }

// Reset prepares c for a new body written to w.
func (c *RelaxedBody) Reset(w io.Writer) {
	out := c.out[:0]
	*c = RelaxedBody{W: w, out: out, pooled: c.pooled}
}

var (
	crlf   = []byte("\r\n")
	loneCR = []byte{'\r'}
)

// outBufs are the gathering buffers of bodies being canonicalized. A body
// of short lines gathers up to 16 KiB before it reaches W, and growing that
// buffer anew for every message was the largest allocation of a signed
// message in milterd (5-6 KB of a 2 KiB body's ~30 KB); Write takes one,
// Close gives it back.
var outBufs = sync.Pool{New: func() any { b := make([]byte, 0, 4<<10); return &b }}

// maxPooledOut bounds the buffers kept: out is flushed at 16 KiB, plus at
// most one line squeezed or one run under 512 bytes past it.
const maxPooledOut = 64 << 10

// Write canonicalizes b. It never fails unless W does.
func (c *RelaxedBody) Write(b []byte) (int, error) {
	if c.out == nil {
		c.pooled = outBufs.Get().(*[]byte)
		c.out = (*c.pooled)[:0]
	}
	c.rs, c.re = 0, 0
	// The next tab and the next two spaces at or after i (len(b) when there
	// are none; -1 when not searched yet): what the fast path cannot copy.
	tab, dbl := -1, -1
	i := 0
	for i < len(b) {
		if c.cr || c.wsp {
			i = c.slow(b, i)
			continue
		}
		if tab < i {
			if tab = bytes.IndexByte(b[i:], '\t'); tab < 0 {
				tab = len(b)
			} else {
				tab += i
			}
		}
		if dbl < i {
			dbl = nextDoubleSpace(b, i)
		}
		special := min(tab, dbl)
		nl := bytes.IndexByte(b[i:], '\n')
		if nl < 0 {
			// The last, partial line of this chunk: write all but its
			// trailing whitespace, which stays pending for the next chunk.
			k := trimWSP(b, i, len(b))
			if special < k || bytes.IndexByte(b[i:], '\r') >= 0 {
				i = c.slow(b, i)
				continue
			}
			if k > i {
				c.pending(b)
				c.run(b, i, k)
				c.content, c.crlfs, c.written = true, 0, 0
			}
			c.wsp = k < len(b)
			break
		}
		end := i + nl // the LF
		if nl == 0 || b[end-1] != '\r' {
			i = c.slow(b, i) // a lone LF
			continue
		}
		if bytes.IndexByte(b[i:end-1], '\r') >= 0 {
			i = c.slow(b, i) // a lone CR
			continue
		}
		k := trimWSP(b, i, end-1)
		if special < k {
			// Tabs or runs of spaces to squeeze.
			c.pending(b)
			c.flushRun(b)
			c.squeeze(b[i:k])
			c.out = append(c.out, crlf...)
			c.content, c.crlfs, c.written = true, 1, 1
			i = end + 1
			continue
		}
		if k == i {
			// Nothing but whitespace (or nothing) before the line end: an
			// empty line, pending until content follows.
			c.crlfs++
			i = end + 1
			continue
		}
		c.pending(b)
		if k == end-1 {
			c.run(b, i, end+1)
		} else {
			c.run(b, i, k)
			c.flushRun(b)
			c.out = append(c.out, crlf...)
		}
		c.content, c.crlfs, c.written = true, 1, 1
		i = end + 1
	}
	if err := c.flushRun(b); err != nil {
		return 0, err
	}
	return len(b), c.flush()
}

// squeeze appends line, which has no line end and ends in content, with
// every run of spaces and tabs made one space.
func (c *RelaxedBody) squeeze(line []byte) {
	out := c.out
	for i := 0; i < len(line); {
		if line[i] == ' ' || line[i] == '\t' {
			out = append(out, ' ')
			for i++; line[i] == ' ' || line[i] == '\t'; i++ {
			}
			continue
		}
		s := i
		for i < len(line) && line[i] != ' ' && line[i] != '\t' {
			i++
		}
		out = append(out, line[s:i]...)
	}
	c.out = out
}

// trimWSP returns the end of b[i:k] without its trailing spaces and tabs.
func trimWSP(b []byte, i, k int) int {
	for k > i && (b[k-1] == ' ' || b[k-1] == '\t') {
		k--
	}
	return k
}

const (
	lsb  = 0x0101010101010101
	low7 = 0x7f7f7f7f7f7f7f7f
)

// eq has the top bit set in exactly those bytes of x that equal ch.
func eq(x uint64, ch byte) uint64 {
	v := x ^ (lsb * uint64(ch))
	return ^(((v & low7) + low7) | v | low7)
}

// nextDoubleSpace returns the position of the first two consecutive spaces
// at or after i, or len(b). It looks at eight bytes per step: eq finds the
// spaces, and a space whose right neighbour is a space is a hit.
func nextDoubleSpace(b []byte, i int) int {
	prev := uint64(0) // 0x80 when the byte before b[i] was a space
	for ; i+8 <= len(b); i += 8 {
		m := eq(binary.LittleEndian.Uint64(b[i:]), ' ')
		if m == 0 {
			prev = 0
			continue
		}
		if prev != 0 && m&0x80 != 0 {
			return i - 1
		}
		if p := m & (m >> 8); p != 0 {
			return i + bits.TrailingZeros64(p)>>3
		}
		prev = m >> 56
	}
	if prev != 0 && i < len(b) && b[i] == ' ' {
		return i - 1
	}
	for ; i+1 < len(b); i++ {
		if b[i] == ' ' && b[i+1] == ' ' {
			return i
		}
	}
	return len(b)
}

// pending writes the line ends that content now makes definite.
func (c *RelaxedBody) pending(b []byte) {
	if c.crlfs > c.written {
		c.flushRun(b)
		for n := c.crlfs - c.written; n > 0; n-- {
			c.out = append(c.out, crlf...)
		}
	}
	c.crlfs, c.written = 0, 0
}

// run adds b[s:e], already canonical, to the output.
func (c *RelaxedBody) run(b []byte, s, e int) {
	if c.rs != c.re && c.re == s {
		c.re = e
		return
	}
	c.flushRun(b)
	c.rs, c.re = s, e
}

// flushRun passes the pending run to the output: large runs go to W
// directly, small ones are gathered in out so that W sees few small writes.
func (c *RelaxedBody) flushRun(b []byte) error {
	if c.rs == c.re {
		return nil
	}
	p := b[c.rs:c.re]
	c.rs, c.re = 0, 0
	if len(p) < 512 {
		c.out = append(c.out, p...)
		if len(c.out) < 16<<10 {
			return nil
		}
		return c.flush()
	}
	if err := c.flush(); err != nil {
		return err
	}
	if _, err := c.W.Write(p); err != nil {
		c.err = err
		return err
	}
	return nil
}

// slow runs the state machine from b[i] through the next line end (or the
// end of b) and returns where it stopped.
func (c *RelaxedBody) slow(b []byte, i int) int {
	c.flushRun(b)
	for ; i < len(b); i++ {
		ch := b[i]
		if c.cr {
			c.cr = false
			if ch == '\n' {
				c.lineEnd()
				return i + 1
			}
			c.emit('\r') // a lone CR is content
		}
		switch ch {
		case ' ', '\t':
			c.wsp = true
		case '\r':
			c.cr = true
		case '\n': // a lone LF ends the line too
			c.lineEnd()
			return i + 1
		default:
			c.emit(ch)
		}
	}
	return i
}

func (c *RelaxedBody) lineEnd() {
	c.wsp = false
	c.crlfs++
}

// emit appends one content byte, preceded by the line ends and the single
// space it makes definite.
func (c *RelaxedBody) emit(ch byte) {
	for ; c.crlfs > c.written; c.crlfs-- {
		c.out = append(c.out, '\r', '\n')
	}
	c.crlfs, c.written = 0, 0
	if c.wsp {
		c.out = append(c.out, ' ')
		c.wsp = false
	}
	c.out = append(c.out, ch)
	c.content = true
}

func (c *RelaxedBody) flush() error {
	if c.err != nil {
		return c.err
	}
	if len(c.out) == 0 {
		return nil
	}
	_, err := c.W.Write(c.out)
	c.out = c.out[:0]
	if err != nil {
		c.err = err
	}
	return err
}

// Close ends the body: a pending lone CR is content, trailing empty lines
// are dropped, and a non-empty body gets its final CRLF.
func (c *RelaxedBody) Close() error {
	if c.cr {
		c.cr = false
		c.emit('\r')
	}
	if c.content && c.written == 0 {
		c.out = append(c.out, crlf...)
		c.written = 1
	}
	err := c.flush()
	if c.pooled != nil && cap(c.out) <= maxPooledOut {
		*c.pooled = c.out[:0]
		outBufs.Put(c.pooled)
		c.out = nil
	}
	c.pooled = nil
	return err
}

// SimpleBody is a streaming "simple" body canonicalizer (RFC 6376 section
// 3.4.3): the body unchanged but for the empty lines at its end, which are
// removed, and exactly one CRLF at its end (an empty body is one CRLF). A
// lone LF ends a line as CRLF does, as in RelaxedBody; a lone CR is content.
// Line ends are held back until content follows them, so the state is a
// count whatever the body.
type SimpleBody struct {
	W     io.Writer
	cr    bool // the last byte was a CR
	crlfs int  // line ends not yet passed on
}

// Reset prepares c for a new body written to w.
func (c *SimpleBody) Reset(w io.Writer) { *c = SimpleBody{W: w} }

// Write canonicalizes b. It passes on what W says.
func (c *SimpleBody) Write(b []byte) (int, error) {
	for i := 0; i < len(b); {
		switch b[i] {
		case '\n':
			c.cr = false
			c.crlfs++
			i++
			continue
		case '\r':
			if c.cr {
				if err := c.content(loneCR); err != nil {
					return i, err
				}
			}
			c.cr = true
			i++
			continue
		}
		j := bytes.IndexAny(b[i:], "\r\n")
		if j < 0 {
			j = len(b)
		} else {
			j += i
		}
		if c.cr {
			c.cr = false
			if err := c.content(loneCR); err != nil {
				return i, err
			}
		}
		if err := c.content(b[i:j]); err != nil {
			return i, err
		}
		i = j
	}
	return len(b), nil
}

// content passes on the held line ends, then p.
func (c *SimpleBody) content(p []byte) error {
	for ; c.crlfs > 0; c.crlfs-- {
		if _, err := c.W.Write(crlf); err != nil {
			return err
		}
	}
	_, err := c.W.Write(p)
	return err
}

// Close ends the body: a last lone CR is content, the held line ends go,
// and one CRLF ends the body.
func (c *SimpleBody) Close() error {
	if c.cr {
		c.cr = false
		if err := c.content(loneCR); err != nil {
			return err
		}
	}
	c.crlfs = 0
	_, err := c.W.Write(crlf)
	return err
}
