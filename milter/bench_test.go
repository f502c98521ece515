package milter

import (
	"bytes"
	"strconv"
	"time"

	"github.com/mailnode/mailnode/antivirus"
	"github.com/mailnode/mailnode/antivirus/clamdtest"
	"github.com/mailnode/mailnode/dkim"
	"github.com/mailnode/mailnode/dns/dnstest"
	"github.com/mailnode/mailnode/milter/miltertest"
	"github.com/mailnode/mailnode/resolver"
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

// BenchmarkInbound runs mail from outside through milterd's inbound chain
// the way the end-to-end bench's outside path does: an RSA-2048 DKIM
// signature, SPF and DMARC, all asked of a real resolver.Client on an
// in-process DNS server (so the answers come from the Client's cache after
// the first message, as for a sender seen again), then the builtin spam
// gate. One milter session per message, client in this process.
func BenchmarkInbound(b *testing.B) {
	for _, size := range []int{2 << 10, 64 << 10} {
		b.Run(sizeLabel(size), func(b *testing.B) {
			d, key := inboundDNS(b)
			res := resolver.NewClient(d.Addr, time.Second)
			b.Cleanup(func() { res.Close() })
			f := inboundFilter(b, res)
			c := miltertest.NewClient("unix", startServer(b, f, nil))
			m := signedInbound(b, key, size)
			r, err := miltertest.Submit(c, m)
			if err != nil {
				b.Fatal(err)
			}
			if got := arValue(b, r); got != inboundAR {
				b.Fatalf("A-R %q, want %q", got, inboundAR)
			}
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				if _, err := miltertest.Submit(c, m); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// inboundDNS serves sender.org's SPF, DMARC (p=reject) and DKIM key
// (bench, RSA-2048) records, and returns the key.
func inboundDNS(t testing.TB) (*dnstest.Server, dkim.Key) {
	local, _ := testKeys(t)
	key, err := dkim.NewKey("sender.org", "bench", "rsa", local["example.net"][0].Signer) // the test RSA key
	if err != nil {
		t.Fatal(err)
	}
	txt, _ := dkim.TXTValue(key.Signer)
	d := dnstest.Start(t, ". 3600 IN SOA ns.test. hostmaster.test. 1 3600 600 86400 60\n"+
		`sender.org. 3600 IN TXT "v=spf1 ip4:198.51.100.0/24 -all"`+"\n"+
		`_dmarc.sender.org. 3600 IN TXT "v=DMARC1; p=reject"`+"\n"+
		"bench._domainkey.sender.org. 3600 IN TXT "+strconv.Quote(txt)+"\n")
	return d, key
}

// inboundFilter is milterd's filter as the Builder makes it, on res.
func inboundFilter(t testing.TB, res resolver.Resolver) *Filter {
	inv := testInventory(t)
	local, _ := testKeys(t)
	f := NewFilter(inv, local, res.LookupTXT)
	f.Checks = InboundChecks(inv, res, res.LookupTXT)
	f.Now = func() time.Time { return fixedNow }
	f.CheckTimeout = 5 * time.Second
	f.Log = slog.New(slog.NewTextHandler(io.Discard, nil))
	return f
}

// signedInbound is inbound's message with a body of size bytes, signed
// with key.
func signedInbound(t testing.TB, key dkim.Key, size int) *miltertest.Message {
	m := inbound(t, false)
	m.Body = bytes.Repeat([]byte("Lorem ipsum dolor sit amet, consectetur adipiscing elit, sed do eiusm\r\n"), size/71+1)[:size]
	signWith(t, m, key)
	return m
}

// inboundAR is the Authentication-Results signedInbound's message gets.
const inboundAR = "mx1.example.com; spf=pass smtp.mailfrom=news@sender.org; dkim=pass header.d=sender.org header.i=@sender.org; dmarc=pass header.from=sender.org"
