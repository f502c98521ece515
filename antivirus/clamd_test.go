package antivirus_test

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/binary"
	"io"
	"net"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/mailnode/mailnode/antivirus"
	"github.com/mailnode/mailnode/antivirus/clamdtest"
)

func TestParseReply(t *testing.T) {
	for _, c := range []struct {
		reply, virus string
		err          bool
	}{
		{"stream: OK", "", false},
		{"stream: Win.Test.EICAR_HDB-1 FOUND", "Win.Test.EICAR_HDB-1", false},
		{"stream: Some Name With Spaces FOUND", "Some Name With Spaces", false},
		{"INSTREAM size limit exceeded. ERROR", "", true},
		{"stream:  FOUND", "", true},
		{"stream: OKAY", "", true},
		{"", "", true},
	} {
		v, err := antivirus.ParseReply(c.reply)
		if v != c.virus || (err != nil) != c.err {
			t.Errorf("ParseReply(%q) = %q, %v; want %q, error %v", c.reply, v, err, c.virus, c.err)
		}
	}
}

func TestReplyName(t *testing.T) {
	for in, want := range map[string]string{
		"Win.Test.EICAR_HDB-1":   "Win.Test.EICAR_HDB-1",
		"bad\r\n550 injected":    "bad??550 injected",
		"caf\xc3\xa9":            "caf??",
		"":                       "unnamed",
		strings.Repeat("A", 300): strings.Repeat("A", 97) + "...",
		"  spaced  ":             "spaced",
		"100%.Sig":               "100?.Sig",
	} {
		if got := antivirus.ReplyName(in); got != want {
			t.Errorf("ReplyName(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestSplitAddress(t *testing.T) {
	for in, want := range map[string]string{
		"unix:/run/clamav/clamd.ctl": "unix /run/clamav/clamd.ctl",
		"127.0.0.1:3310":             "tcp 127.0.0.1:3310",
		"[::1]:3310":                 "tcp [::1]:3310",
		"unix:relative":              "error",
		"/run/clamav/clamd.ctl":      "error",
		"localhost":                  "error",
	} {
		n, a, err := antivirus.SplitAddress(in)
		got := n + " " + a
		if err != nil {
			got = "error"
		}
		if got != want {
			t.Errorf("SplitAddress(%q) = %q, want %q", in, got, want)
		}
	}
}

// fakeClamd serves INSTREAM (checking the chunk framing), in IDSESSION
// mode too, answering reply; it hands each reassembled stream to got. With
// oneScan it closes every connection after its first answer, as clamd
// does outside a session or after its IdleTimeout. It returns the address
// and a counter of the connections accepted.
func fakeClamd(t *testing.T, reply string, got chan<- []byte, oneScan bool) (string, *atomic.Int32) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "clamd.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	return "unix:" + sock, serveFakeOn(t, l, reply, got, oneScan)
}

// serveFakeOn answers every connection l accepts as fakeClamd does, until
// the test ends; it returns the counter of connections accepted.
func serveFakeOn(t *testing.T, l net.Listener, reply string, got chan<- []byte, oneScan bool) *atomic.Int32 {
	t.Cleanup(func() { l.Close() })
	var conns atomic.Int32
	go func() {
		for {
			c, err := l.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			go serveFake(t, c, reply, got, oneScan)
		}
	}()
	return &conns
}

func serveFake(t *testing.T, c net.Conn, reply string, got chan<- []byte, oneScan bool) {
	defer c.Close()
	r := bufio.NewReader(c)
	session, id := false, 0
	for {
		cmd, err := r.ReadString(0)
		if err != nil {
			return
		}
		if cmd == "zIDSESSION\x00" && !session {
			session = true
			continue
		}
		if cmd != "zINSTREAM\x00" {
			t.Errorf("command %q", cmd)
			return
		}
		id++
		var data []byte
		for {
			var size [4]byte
			if _, err := io.ReadFull(r, size[:]); err != nil {
				t.Errorf("chunk size: %v", err)
				return
			}
			n := binary.BigEndian.Uint32(size[:])
			if n == 0 {
				break
			}
			chunk := make([]byte, n)
			if _, err := io.ReadFull(r, chunk); err != nil {
				t.Errorf("chunk: %v", err)
				return
			}
			data = append(data, chunk...)
		}
		got <- data
		if reply == "" {
			return
		}
		prefix := ""
		if session {
			prefix = strconv.Itoa(id) + ": "
		}
		c.Write([]byte(prefix + reply + "\x00"))
		if oneScan || !session {
			return
		}
	}
}

func TestScanFraming(t *testing.T) {
	got := make(chan []byte, 1)
	addr, _ := fakeClamd(t, "stream: Fake.Sig FOUND", got, false)
	c := &antivirus.Clamd{Address: addr, MaxBytes: 3 << 20}
	s := c.Start(context.Background())
	want := strings.Repeat("0123456789abcdef", 1<<18) // 4 MiB: chunks split at 1 MiB, cut at 3 MiB
	for i := 0; i < len(want); i += 7000 {
		if err := s.Write([]byte(want[i:min(i+7000, len(want))])); err != nil {
			t.Fatal(err)
		}
	}
	s.Finish()
	res, err := s.Wait(context.Background())
	if err != nil || res.Virus != "Fake.Sig" || !res.Truncated || res.Bytes != 3<<20 {
		t.Fatalf("Wait = %+v, %v", res, err)
	}
	if d := <-got; string(d) != want[:3<<20] {
		t.Errorf("clamd got %d bytes, not the first 3 MiB of the message", len(d))
	}
}

func TestScanErrors(t *testing.T) {
	// Nobody listening: the error comes at the end, from Wait.
	c := &antivirus.Clamd{Address: "unix:" + filepath.Join(t.TempDir(), "none.sock")}
	s := c.Start(context.Background())
	s.Write([]byte("hello"))
	s.Finish()
	if _, err := s.Wait(context.Background()); err == nil || !strings.Contains(err.Error(), "clamd") {
		t.Errorf("no clamd: %v", err)
	}
	// clamd closing without an answer.
	got := make(chan []byte, 1)
	addr, _ := fakeClamd(t, "", got, false)
	c = &antivirus.Clamd{Address: addr}
	if _, err := c.ScanBytes(context.Background(), []byte("x")); err == nil {
		t.Error("no answer: no error")
	}
	// A slow clamd: the context ends the wait.
	sock := muteClamd(t)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	c = &antivirus.Clamd{Address: "unix:" + sock}
	start := time.Now()
	if _, err := c.ScanBytes(ctx, []byte("x")); err == nil || time.Since(start) > 5*time.Second {
		t.Errorf("slow clamd: %v after %v", err, time.Since(start))
	}
}

// TestSessions: scans reuse one clamd session; a session clamd closed
// meanwhile costs a new connection, not the scan; without sessions
// (MaxIdle < 0) every scan connects.
func TestSessions(t *testing.T) {
	for _, c := range []struct {
		name      string
		oneScan   bool
		maxIdle   int
		wantConns int32
	}{
		{"kept", false, 0, 1},
		{"closed by clamd", true, 0, 5},
		{"no sessions", false, -1, 5},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := make(chan []byte, 10)
			addr, conns := fakeClamd(t, "stream: OK", got, c.oneScan)
			cl := &antivirus.Clamd{Address: addr, MaxIdle: c.maxIdle}
			defer cl.Close()
			for i := range 5 {
				msg := []byte(strings.Repeat("x", 100*i+1))
				if res, err := cl.ScanBytes(context.Background(), msg); err != nil || res.Virus != "" {
					t.Fatalf("scan %d: %+v, %v", i, res, err)
				}
				if d := <-got; string(d) != string(msg) {
					t.Fatalf("scan %d: clamd got %q", i, d)
				}
				if c.oneScan {
					time.Sleep(20 * time.Millisecond) // let the fake close it
				}
			}
			if n := conns.Load(); n != c.wantConns {
				t.Errorf("%d connections, want %d", n, c.wantConns)
			}
		})
	}
}

// TestRealClamd scans with Debian's clamd and the test database: a clean
// message, the EICAR file as a base64 attachment, and a stream over
// clamd's StreamMaxLength.
func TestRealClamd(t *testing.T) {
	d := clamdtest.StartT(t, clamdtest.Options{StreamMaxLength: "1M", IdleTimeout: 1})
	c := &antivirus.Clamd{Address: d.Address}
	ctx := context.Background()
	if err := c.Ping(ctx); err != nil {
		t.Fatal(err)
	}
	if res, err := c.ScanBytes(ctx, []byte("Subject: hi\r\n\r\nLunch on Thursday?\r\n")); err != nil || res.Virus != "" {
		t.Errorf("clean: %+v, %v", res, err)
	}
	msg := "Subject: report\r\nMIME-Version: 1.0\r\nContent-Type: multipart/mixed; boundary=b1\r\n\r\n--b1\r\n" +
		"Content-Type: text/plain\r\n\r\nsee attachment\r\n--b1\r\nContent-Type: application/octet-stream; name=x.com\r\n" +
		"Content-Transfer-Encoding: base64\r\n\r\n" + base64.StdEncoding.EncodeToString([]byte(clamdtest.EICAR())) + "\r\n--b1--\r\n"
	if res, err := c.ScanBytes(ctx, []byte(msg)); err != nil || res.Virus != clamdtest.VirusName {
		t.Errorf("EICAR attachment: %+v, %v", res, err)
	}
	// The session went back to the pool; one idle past clamd's
	// IdleTimeout (1 s here) was closed by clamd, and the scan goes on over
	// a new one.
	defer c.Close()
	if n := c.Idle(); n != 1 {
		t.Errorf("%d idle sessions, want 1", n)
	}
	time.Sleep(1500 * time.Millisecond)
	if res, err := c.ScanBytes(ctx, []byte(msg)); err != nil || res.Virus != clamdtest.VirusName {
		t.Errorf("after clamd's IdleTimeout: %+v, %v", res, err)
	}
	// Over StreamMaxLength: clamd's own error, not a clean result.
	res, err := c.ScanBytes(ctx, []byte(strings.Repeat("a", 2<<20)))
	if err == nil || !strings.Contains(err.Error(), "size limit") {
		t.Errorf("over StreamMaxLength: %+v, %v", res, err)
	}
}

// TestLongAnswer: an answer without its NUL within 4 KiB is an error, so
// that a session is never kept with bytes of it unread.
func TestLongAnswer(t *testing.T) {
	sock := filepath.Join(t.TempDir(), "clamd.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	go func() {
		c, err := l.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		r := bufio.NewReader(c)
		r.ReadString(0) // IDSESSION
		r.ReadString(0) // INSTREAM
		var size [4]byte
		io.ReadFull(r, size[:])
		io.ReadFull(r, make([]byte, binary.BigEndian.Uint32(size[:])))
		io.ReadFull(r, size[:])
		c.Write([]byte("1: stream: " + strings.Repeat("A", 5000) + " FOUND\x00"))
	}()
	c := &antivirus.Clamd{Address: "unix:" + sock}
	defer c.Close()
	if res, err := c.ScanBytes(context.Background(), []byte("x")); err == nil || c.Idle() != 0 {
		t.Errorf("long answer: %+v, %v, %d idle sessions", res, err, c.Idle())
	}
}

// TestRealClamdConcurrent: eight scans at a time share the kept sessions,
// each gets its own answer (clean and EICAR alternate), and no more than
// DefaultMaxIdle sessions stay open.
func TestRealClamdConcurrent(t *testing.T) {
	d := clamdtest.StartT(t, clamdtest.Options{})
	c := &antivirus.Clamd{Address: d.Address}
	defer c.Close()
	var wg sync.WaitGroup
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range 20 {
				want, data := "", "clean message "+strconv.Itoa(g*100+i)
				if (g+i)%2 == 0 {
					want, data = clamdtest.VirusName, clamdtest.EICAR()
				}
				if res, err := c.ScanBytes(context.Background(), []byte(data)); err != nil || res.Virus != want {
					t.Errorf("goroutine %d scan %d: %+v, %v; want %q", g, i, res, err, want)
					return
				}
			}
		}()
	}
	wg.Wait()
	if n := c.Idle(); n < 1 || n > antivirus.DefaultMaxIdle {
		t.Errorf("%d idle sessions", n)
	}
}

// TestScanTCP: clamd over TCP (HOST:PORT) scans and keeps its sessions as
// over the unix socket.
func TestScanTCP(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Skip(err)
	}
	got := make(chan []byte, 10)
	conns := serveFakeOn(t, l, "stream: Fake.Sig FOUND", got, false)
	c := &antivirus.Clamd{Address: l.Addr().String()}
	defer c.Close()
	for i := range 3 {
		msg := []byte(strings.Repeat("y", 10000*i+1))
		if res, err := c.ScanBytes(context.Background(), msg); err != nil || res.Virus != "Fake.Sig" {
			t.Fatalf("scan %d: %+v, %v", i, res, err)
		}
		if d := <-got; string(d) != string(msg) {
			t.Fatalf("scan %d: clamd got %d bytes", i, len(d))
		}
	}
	if n := conns.Load(); n != 1 {
		t.Errorf("%d connections, want 1", n)
	}
}

// TestScanTimeout: a clamd that reads the stream and never answers costs
// the scan Clamd.Timeout, not more, without a context deadline.
func TestScanTimeout(t *testing.T) {
	sock := muteClamd(t)
	c := &antivirus.Clamd{Address: "unix:" + sock, Timeout: 200 * time.Millisecond}
	start := time.Now()
	_, err := c.ScanBytes(context.Background(), []byte("x"))
	if took := time.Since(start); err == nil || took < 150*time.Millisecond || took > 5*time.Second {
		t.Errorf("mute clamd: %v after %v", err, took)
	}
}

// muteClamd listens on a unix socket of the test that takes one
// connection, reads all it is sent and never answers; it returns the path.
func muteClamd(t *testing.T) string {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "mute.sock")
	l, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	go func() {
		c, err := l.Accept()
		if err == nil {
			io.Copy(io.Discard, c)
		}
	}()
	return sock
}
