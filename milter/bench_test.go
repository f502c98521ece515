package milter

import (
	"bytes"
	"github.com/mailnode/mailnode/antivirus"
	"github.com/mailnode/mailnode/antivirus/clamdtest"
	"github.com/mailnode/mailnode/milter/miltertest"
	"io"
	"log/slog"
	"testing"
)

// BenchmarkSubmit runs whole messages through milterd over a unix socket
// with go-milter's client (client and server in this process), one milter
// session per message as Postfix does.
func BenchmarkSubmit(b *testing.B) {
	for _, size := range []int{2 << 10, 64 << 10, 1 << 20} {
		b.Run(sizeLabel(size), func(b *testing.B) {
			f, _ := testFilter(b)
			f.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
			path := startServer(b, f, nil)
			c := miltertest.NewClient("unix", path)
			m := localMessage("alice@example.com")
			m.Body = bytes.Repeat([]byte("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusm\r\n"), size/71+1)[:size]
			f.Keys["example.com"] = f.Keys["example.com"][:1] // RSA only, like the OpenDKIM comparison
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				r, err := miltertest.Submit(c, m)
				if err != nil || len(r.Mods) != 1 {
					b.Fatal(err, r)
				}
			}
		})
	}
}

func sizeLabel(n int) string {
	if n >= 1<<20 {
		return "1MiB"
	}
	return map[int]string{2 << 10: "2KiB", 64 << 10: "64KiB"}[n]
}

// BenchmarkSubmitAntivirus is BenchmarkSubmit's 2 KiB and 64 KiB messages
// with spam.antivirus on a real clamd (the test database): beside
// BenchmarkSubmit it shows what the scan adds to milterd, clamd's time
// included.
func BenchmarkSubmitAntivirus(b *testing.B) {
	cd := clamdtest.StartT(b, clamdtest.Options{})
	for _, size := range []int{2 << 10, 64 << 10} {
		b.Run(sizeLabel(size), func(b *testing.B) {
			f, _ := testFilter(b)
			f.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
			f.Antivirus = &Antivirus{Clamd: &antivirus.Clamd{Address: cd.Address}, Tempfail: true, ScanOutbound: true}
			path := startServer(b, f, nil)
			c := miltertest.NewClient("unix", path)
			m := localMessage("alice@example.com")
			m.Body = bytes.Repeat([]byte("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusm\r\n"), size/71+1)[:size]
			f.Keys["example.com"] = f.Keys["example.com"][:1]
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				r, err := miltertest.Submit(c, m)
				if err != nil || len(r.Mods) != 1 {
					b.Fatal(err, r)
				}
			}
		})
	}
}
