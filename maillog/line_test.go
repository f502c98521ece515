package maillog

import (
	"testing"
	"time"
)

var at = time.Date(2026, 11, 24, 17, 3, 5, 123456789, time.FixedZone("CET", 3600))

func TestLine(t *testing.T) {
	for _, c := range []struct {
		name string
		add  func(Line) Line
		want string
	}{
		{"plain words", func(ln Line) Line {
			return ln.String("queue_id", "4XyZ1").String("client", "mail.example.org[198.51.100.7]").String("action", "DUNNO")
		}, ` queue_id=4XyZ1 client=mail.example.org[198.51.100.7] action=DUNNO`},
		{"empty value", func(ln Line) Line { return ln.String("sasl_user", "") }, ` sasl_user=""`},
		{"spaces quote", func(ln Line) Line { return ln.String("action", "550 5.7.1 Sorry, relay for <a@b> not permitted") },
			` action="550 5.7.1 Sorry, relay for <a@b> not permitted"`},
		{"quote, backslash, control, non-ASCII", func(ln Line) Line {
			return ln.String("a", `x"y`).String("b", `x\y`).String("c", "x\ty").String("d", "bücher")
		}, ` a="x\"y" b="x\\y" c="x\ty" d="bücher"`},
		{"addresses", func(ln Line) Line {
			return ln.Addr("from", "a@example.org").Addr("to", "").Addr("x", "bücher@b.example")
		},
			` from=<a@example.org> to=<> x=<bücher@b.example>`},
		{"addresses escaped, never quoted", func(ln Line) Line {
			return ln.Addr("from", `a b@c`).Addr("to", "x>y@z").Addr("q", `"a\b"@c`).Addr("c", "a\x7f\n@c")
		}, ` from=<a b@c> to=<x>y@z> q=<\"a\\b\"@c> c=<a\x7f\n@c>`},
		{"numbers", func(ln Line) Line { return ln.Int("rcpt", 1).Int("n", -12).Int("big", 1234567) }, ` rcpt=1 n=-12 big=1234567`},
		{"no fields", func(ln Line) Line { return ln }, ``},
	} {
		t.Run(c.name, func(t *testing.T) {
			want := "2026-11-24T16:03:05.123Z policyd" + c.want
			if got := c.add(NewLine(nil, at, "policyd")).Text(); got != want {
				t.Errorf("line\n%q\nwant\n%q", got, want)
			}
		})
	}
}

// TestLineNoAllocation: a line built in a large enough array of the
// caller's costs no allocation.
func TestLineNoAllocation(t *testing.T) {
	var out [512]byte
	n := testing.AllocsPerRun(100, func() {
		var buf [512]byte
		ln := NewLine(buf[:0], at, "policyd")
		ln = ln.String("queue_id", "4XyZ1").Addr("from", "a@b").Int("rcpt", 3).String("action", "550 5.7.1 no")
		copy(out[:], ln.b)
	})
	if n != 0 {
		t.Errorf("%v allocations per line", n)
	}
}
