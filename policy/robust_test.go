package policy

import (
	"bufio"
	"io"
	"net"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestAbuseDoesNotStallOthers opens 2,500 idle connections, 100 slowloris
// connections trickling a request a byte at a time, and a stream of clients
// sending malformed requests (NUL bytes, overlong lines, too many
// attributes, garbage); meanwhile one well-behaved client asks 2,000
// questions and must get every answer right and promptly.
func TestAbuseDoesNotStallOthers(t *testing.T) {
	if testing.Short() {
		t.Skip("opens thousands of connections")
	}
	const idle, slow = 2500, 100
	if lim := mustRaiseNoFile(t); lim < 2*(idle+slow)+200 {
		t.Skipf("open file limit %d too low", lim)
	}
	ts := startServer(t, "unix", func(s *Server) {
		s.RequestTimeout = 1500 * time.Millisecond
		s.IdleTimeout = time.Minute
	})

	var conns []net.Conn
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	for i := 0; i < idle; i++ {
		c, err := net.Dial(ts.network, ts.addr)
		if err != nil {
			t.Fatalf("idle connection %d: %v", i, err)
		}
		conns = append(conns, c)
	}
	waitFor(t, func() bool { return ts.OpenConnections() >= idle })

	stop := make(chan struct{})
	var wg sync.WaitGroup
	// slowloris: one byte every 20ms; the server cuts them at RequestTimeout.
	var slowCut atomic.Int32
	for i := 0; i < slow; i++ {
		c, err := net.Dial(ts.network, ts.addr)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for j := 0; ; j++ {
				select {
				case <-stop:
					return
				case <-time.After(20 * time.Millisecond):
				}
				if _, err := c.Write([]byte{inboundRequest[j%(len(inboundRequest)-2)]}); err != nil {
					slowCut.Add(1)
					return
				}
			}
		}()
	}
	// malformed requests, over and over, on fresh connections.
	bad := []string{
		"request=smtpd_access_policy\nsender=a\x00@example.com\nrecipient=frank@example.org\n\n",
		"request=smtpd_access_policy\nhelo_name=" + strings.Repeat("x", 10000) + "\n\n",
		"request=smtpd_access_policy\n" + strings.Repeat("a=b\n", 500) + "\n",
		"GET / HTTP/1.0\r\n\r\n",
		"\x00\x00\x00\x00\n\n",
	}
	var badAnswered, badSent atomic.Int32
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for i := w; ; i++ {
				select {
				case <-stop:
					return
				default:
				}
				c, err := net.Dial(ts.network, ts.addr)
				if err != nil {
					continue
				}
				io.WriteString(c, bad[i%len(bad)])
				badSent.Add(1)
				c.SetReadDeadline(time.Now().Add(5 * time.Second))
				if b, _ := io.ReadAll(c); len(b) > 0 {
					badAnswered.Add(1)
				}
				c.Close()
			}
		}(w)
	}

	// The well-behaved client.
	c := ts.dial(t)
	r := bufio.NewReader(c)
	var lat []time.Duration
	for i := 0; i < 2000; i++ {
		req, want := inboundRequest, "action=DUNNO\n\n"
		if i%3 == 0 {
			req, want = relayRequest, relayReply
		}
		start := time.Now()
		got, err := ask(c, r, req)
		lat = append(lat, time.Since(start))
		if err != nil || got != want {
			t.Fatalf("request %d: %q, %v; want %q", i, got, err, want)
		}
	}
	// Keep going until the slowloris clients have been cut off.
	waitFor(t, func() bool { return slowCut.Load() == slow })
	close(stop)
	wg.Wait()

	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	p99, max := lat[len(lat)*99/100], lat[len(lat)-1]
	t.Logf("well-behaved client: p50 %v p99 %v max %v; %d malformed requests sent", lat[len(lat)/2], p99, max, badSent.Load())
	// A stall behind an abusive client would last RequestTimeout (1.5s) or
	// more; 200ms leaves room for a busy shared CI machine.
	if p99 > 200*time.Millisecond {
		t.Errorf("p99 latency %v under abuse", p99)
	}
	if n := badAnswered.Load(); n != 0 {
		t.Errorf("%d malformed requests were answered", n)
	}
	if badSent.Load() < 20 {
		t.Errorf("only %d malformed requests sent", badSent.Load())
	}
	// The idle connections are still open and still served.
	if n := ts.OpenConnections(); n < idle {
		t.Errorf("%d connections open, want the %d idle ones", n, idle)
	}
	for _, i := range []int{0, idle / 2, idle - 1} {
		ic := conns[i]
		if got, err := ask(ic, bufio.NewReader(ic), relayRequest); err != nil || got != relayReply {
			t.Errorf("idle connection %d: %q, %v", i, got, err)
		}
	}
}

func mustRaiseNoFile(t testing.TB) uint64 {
	n, err := RaiseNoFile()
	if err != nil {
		t.Fatal(err)
	}
	return n
}
