package maillog

import (
	"strconv"
	"time"
)

// Line is one line of the mail log being filled in: a time stamp and the
// program's name, then name=value fields in the order they are added. It
// is a value: each method returns the line with one more field,
//
//	var buf [512]byte
//	ln := maillog.NewLine(buf[:0], at, "policyd")
//	ln = ln.String("queue_id", id).Addr("from", sender).Int("rcpt", 1)
//	log.Add(ln)
//
// Being a value (a pointer's stores would send the array to the heap), a
// line built in an array on the caller's stack, as above, costs no
// allocation until it outgrows it.
type Line struct {
	b []byte
}

// NewLine starts a line stamped at (written in UTC with milliseconds) for
// program ("policyd", "milterd"), in buf's storage.
func NewLine(buf []byte, at time.Time, program string) Line {
	return Line{b: appendHead(buf[:0], at, program)}
}

// String returns ln with name=v added: v bare when it is a plain word (no space, control
// character, quote, backslash or non-ASCII byte), Go-quoted otherwise; an
// empty v is written "".
func (ln Line) String(name, v string) Line {
	return Line{appendString(append(append(ln.b, ' '), name...), v)}
}

// Addr returns ln with name=<v> added, v an envelope address: v is written as it is unless it
// holds spaces, quotes, backslashes, control characters or '>', which are
// escaped as in a Go string literal (without its quotes).
func (ln Line) Addr(name, v string) Line {
	return Line{appendAddr(append(append(ln.b, ' '), name...), v)}
}

// Int returns ln with name=n added.
func (ln Line) Int(name string, n int) Line {
	return Line{appendInt(append(append(ln.b, ' '), name...), n)}
}

// Text returns the line as written so far, without a newline.
func (ln Line) Text() string { return string(ln.b) }

func appendHead(b []byte, at time.Time, program string) []byte {
	b = at.UTC().AppendFormat(b, "2006-01-02T15:04:05.000Z07:00")
	b = append(b, ' ')
	return append(b, program...)
}

// appendString writes "=v", v bare when it is a plain word, quoted
// otherwise. The methods write " name" themselves: inlined into the caller,
// whose names are constants, that costs no memmove call.
func appendString(b []byte, v string) []byte {
	if v == "" {
		return append(b, `=""`...)
	}
	b = append(b, '=')
	for i := 0; i < len(v); i++ {
		if c := v[i]; c <= ' ' || c == '"' || c == '\\' || c >= 0x7f {
			return strconv.AppendQuote(b, v)
		}
	}
	return append(b, v...)
}

// appendAddr writes "=<v>", v as it is or escaped as in a Go string
// literal (without its quotes).
func appendAddr(b []byte, v string) []byte {
	b = append(b, "=<"...)
	for i := 0; i < len(v); i++ {
		if c := v[i]; c <= ' ' || c == '"' || c == '\\' || c == 0x7f || c == '>' {
			q := strconv.Quote(v)
			return append(append(b, q[1:len(q)-1]...), '>')
		}
	}
	return append(append(b, v...), '>')
}

// appendInt writes "=n".
func appendInt(b []byte, n int) []byte {
	return strconv.AppendInt(append(b, '='), int64(n), 10)
}
