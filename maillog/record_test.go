package maillog

import (
	"testing"
	"time"
)

var at = time.Date(2026, 11, 24, 17, 3, 5, 123456789, time.FixedZone("CET", 3600))

func TestRecordLine(t *testing.T) {
	for _, c := range []struct {
		name   string
		fields []Field
		want   string
	}{
		{"plain words", []Field{String("queue_id", "4XyZ1"), String("client", "mail.example.org[198.51.100.7]"), String("action", "DUNNO")},
			` queue_id=4XyZ1 client=mail.example.org[198.51.100.7] action=DUNNO`},
		{"empty value", []Field{String("sasl_user", "")}, ` sasl_user=""`},
		{"space quotes", []Field{String("action", "550 5.7.1 Sorry, relay for <a@b> not permitted")},
			` action="550 5.7.1 Sorry, relay for <a@b> not permitted"`},
		{"quote, backslash, control, non-ASCII", []Field{String("a", `x"y`), String("b", `x\y`), String("c", "x\ty"), String("d", "bücher")},
			` a="x\"y" b="x\\y" c="x\ty" d="bücher"`},
		{"addresses", []Field{Addr("from", "a@example.org"), Addr("to", ""), Addr("x", "bücher@b.example")},
			` from=<a@example.org> to=<> x=<bücher@b.example>`},
		{"addresses escaped, never quoted", []Field{Addr("from", `a b@c`), Addr("to", "x>y@z"), Addr("q", `"a\b"@c`), Addr("c", "a\x7f\n@c")},
			` from=<a b@c> to=<x>y@z> q=<\"a\\b\"@c> c=<a\x7f\n@c>`},
		{"numbers", []Field{Int("rcpt", 1), Int("n", -12), Int("big", 1234567)}, ` rcpt=1 n=-12 big=1234567`},
		{"no fields", nil, ``},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := Record{Time: at, Program: "policyd", Fields: c.fields}
			want := "2026-11-24T16:03:05.123Z policyd" + c.want + "\n"
			if got := string(r.AppendTo(nil)); got != want {
				t.Errorf("line\n%q\nwant\n%q", got, want)
			}
		})
	}
}

func TestAppendToAllocates(t *testing.T) {
	r := Record{Time: at, Program: "policyd", Fields: []Field{String("queue_id", "4XyZ1"), Addr("from", "a@b"), Int("rcpt", 3)}}
	buf := make([]byte, 0, 512)
	if n := testing.AllocsPerRun(100, func() { r.AppendTo(buf[:0]) }); n != 0 {
		t.Errorf("%v allocations per line into a large enough buffer", n)
	}
}
