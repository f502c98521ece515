package maillog

import (
	"strconv"
	"time"
)

// Record is one line of the mail log.
type Record struct {
	Time    time.Time // written in UTC with milliseconds
	Program string    // the daemon: "policyd", "milterd"
	Fields  []Field
}

// Field is one name=value pair of a Record.
type Field struct {
	Name string
	kind kind
	s    string
	n    int64
}

type kind uint8

const (
	kindString kind = iota
	kindAddr
	kindInt
)

// String is name=v: v bare when it is a plain word (no space, control
// character, quote, backslash or non-ASCII byte), Go-quoted otherwise; an
// empty v is written "".
func String(name, v string) Field { return Field{Name: name, kind: kindString, s: v} }

// Addr is name=<v>, an envelope address: v is written as it is unless it
// holds spaces, quotes, backslashes, control characters or '>', which are
// escaped as in a Go string (without the surrounding quotes).
func Addr(name, v string) Field { return Field{Name: name, kind: kindAddr, s: v} }

// Int is name=n.
func Int(name string, n int) Field { return Field{Name: name, kind: kindInt, n: int64(n)} }

// AppendTo appends the line, ended by a newline, to b.
func (r *Record) AppendTo(b []byte) []byte {
	b = r.Time.UTC().AppendFormat(b, "2006-01-02T15:04:05.000Z07:00")
	b = append(b, ' ')
	b = append(b, r.Program...)
	for i := range r.Fields {
		f := &r.Fields[i]
		b = append(b, ' ')
		b = append(b, f.Name...)
		b = append(b, '=')
		switch f.kind {
		case kindAddr:
			b = append(b, '<')
			b = appendBare(b, f.s)
			b = append(b, '>')
		case kindInt:
			b = strconv.AppendInt(b, f.n, 10)
		default:
			b = appendValue(b, f.s)
		}
	}
	return append(b, '\n')
}

// appendValue writes v bare when it is a plain word, quoted otherwise.
func appendValue(b []byte, v string) []byte {
	if v == "" {
		return append(b, `""`...)
	}
	for i := 0; i < len(v); i++ {
		if c := v[i]; c <= ' ' || c == '"' || c == '\\' || c >= 0x7f {
			return strconv.AppendQuote(b, v)
		}
	}
	return append(b, v...)
}

// appendBare writes an address inside <>: as it is, or escaped as in a Go
// string literal (without its quotes) when it holds spaces, quotes,
// backslashes, control characters or '>'.
func appendBare(b []byte, v string) []byte {
	for i := 0; i < len(v); i++ {
		if c := v[i]; c <= ' ' || c == '"' || c == '\\' || c == 0x7f || c == '>' {
			q := strconv.Quote(v)
			return append(b, q[1:len(q)-1]...)
		}
	}
	return append(b, v...)
}
