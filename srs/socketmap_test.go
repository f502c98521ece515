package srs

import (
	"bufio"
	"bytes"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/mailnode/mailnode/internal/testpeer"
)

func startSocketmap(t *testing.T, lookup Lookup, idle time.Duration) (*SocketmapServer, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "srs.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	s := &SocketmapServer{Lookup: lookup, IdleTimeout: idle}
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	t.Cleanup(func() {
		s.Close()
		if err := <-done; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s, path
}

func echoLookup(name, key string) (string, string) {
	switch {
	case name != "reverse":
		return StatusPerm, "no map " + name
	case key == "found@example.com":
		return StatusOK, "orig@elsewhere.example"
	case key == "temp@example.com":
		return StatusTemp, "try later"
	}
	return StatusNotFound, ""
}

func ask(t *testing.T, r *bufio.Reader, w io.Writer, req string) string {
	t.Helper()
	if err := WriteNetstring(w, []byte(req)); err != nil {
		t.Fatal(err)
	}
	b, err := ReadNetstring(r, MaxReply)
	if err != nil {
		t.Fatalf("reply to %q: %v", req, err)
	}
	return string(b)
}

// TestSocketmapServer: several lookups on one connection, each answered in
// order; a request that is not "NAME KEY" gets PERM; a broken netstring
// closes the connection; an idle one is closed; Close ends everything.
func TestSocketmapServer(t *testing.T) {
	s, path := startSocketmap(t, echoLookup, 300*time.Millisecond)
	c, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	for _, x := range []struct{ req, want string }{
		{"reverse found@example.com", "OK orig@elsewhere.example"},
		{"reverse other@example.com", "NOTFOUND "},
		{"reverse temp@example.com", "TEMP try later"},
		{"forward x@y", "PERM no map forward"},
		{"nokey", "PERM request is not NAME KEY"},
		{" x", "PERM request is not NAME KEY"},
		{"reverse found@example.com", "OK orig@elsewhere.example"},
	} {
		if got := ask(t, r, c, x.req); got != x.want {
			t.Errorf("%q: got %q, want %q", x.req, got, x.want)
		}
	}
	// Pipelined requests are answered in order.
	var b bytes.Buffer
	WriteNetstring(&b, []byte("reverse found@example.com"))
	WriteNetstring(&b, []byte("reverse none@example.com"))
	c.Write(b.Bytes())
	for _, want := range []string{"OK orig@elsewhere.example", "NOTFOUND "} {
		if got, err := ReadNetstring(r, MaxReply); err != nil || string(got) != want {
			t.Errorf("pipelined: %q %v, want %q", got, err, want)
		}
	}
	// Idle: closed by the server.
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := r.ReadByte(); !errors.Is(err, io.EOF) {
		t.Errorf("an idle connection: %v, want EOF", err)
	}

	for _, bad := range []string{"x:abc,", "3:abcd", "01:a,", "99999999:", ":", "5:ab"} {
		c, err := net.Dial("unix", path)
		if err != nil {
			t.Fatal(err)
		}
		c.Write([]byte(bad))
		if strings.HasPrefix(bad, "5:") {
			c.(*net.UnixConn).CloseWrite()
		}
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := c.Read(make([]byte, 10)); !errors.Is(err, io.EOF) {
			t.Errorf("%q: read %d, %v; want the connection closed", bad, n, err)
		}
		c.Close()
	}

	open, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer open.Close()
	ask(t, bufio.NewReader(open), open, "reverse x@y") // the server holds it
	done := make(chan struct{})
	go func() { s.Close(); close(done) }()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Close waits for an open connection")
	}
}

func TestNetstring(t *testing.T) {
	var b bytes.Buffer
	for _, s := range []string{"", "a", "hello world", strings.Repeat("x", 1000)} {
		b.Reset()
		WriteNetstring(&b, []byte(s))
		got, err := ReadNetstring(bufio.NewReader(&b), 1000)
		if err != nil || string(got) != s {
			t.Errorf("%q: %q %v", s, got, err)
		}
	}
	b.Reset()
	WriteNetstring(&b, []byte("reverse a@b"))
	if got := b.String(); got != "11:reverse a@b," {
		t.Errorf("encoding: %q", got)
	}
	for _, bad := range []string{"1001:", "10000:", "0", "", "2:ab", "2:abc", "-1:", "1a:", "00:,"} {
		if _, err := ReadNetstring(bufio.NewReader(strings.NewReader(bad)), 1000); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if got, err := ReadNetstring(bufio.NewReader(strings.NewReader("0:,")), 1000); err != nil || len(got) != 0 {
		t.Errorf("0:, %q %v", got, err)
	}
}

func FuzzReadNetstring(f *testing.F) {
	for _, s := range []string{"0:,", "5:hello,", "01:a,", "9999:", "3:ab", "12:reverse a@b,"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		r := bufio.NewReader(bytes.NewReader(in))
		got, err := ReadNetstring(r, 100)
		if err != nil {
			return
		}
		// What was read writes back as the prefix of the input it came from.
		var b bytes.Buffer
		WriteNetstring(&b, got)
		if !bytes.HasPrefix(in, b.Bytes()) {
			t.Fatalf("read %q from %q, which writes as %q", got, in, b.Bytes())
		}
	})
}

// TestPostmapQuery: Postfix's own socketmap client (postmap -q) gets the
// answers, found and not found, from the server.
func TestPostmapQuery(t *testing.T) {
	if _, err := exec.LookPath("postmap"); err != nil {
		testpeer.Missing(t, "postmap not installed (apt-get install postfix)")
	}
	_, path := startSocketmap(t, echoLookup, 0)
	cfg := t.TempDir()
	// postmap reads main.cf only for its defaults; an empty one will do.
	if err := os.WriteFile(filepath.Join(cfg, "main.cf"), []byte("compatibility_level = 3.6\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// A main.cf written this very second makes Postfix's programs wait
	// for its time stamp to pass.
	old := time.Now().Add(-time.Hour)
	os.Chtimes(filepath.Join(cfg, "main.cf"), old, old)
	table := "socketmap:unix:" + path + ":reverse"
	out, err := exec.Command("postmap", "-c", cfg, "-q", "found@example.com", table).CombinedOutput()
	if err != nil || string(out) != "orig@elsewhere.example\n" {
		t.Errorf("postmap -q found@example.com: %v %q", err, out)
	}
	out, err = exec.Command("postmap", "-c", cfg, "-q", "other@example.com", table).CombinedOutput()
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() != 1 || len(out) != 0 {
		t.Errorf("postmap -q other@example.com: %v %q, want exit 1 and nothing", err, out)
	}
}

// BenchmarkSocketmapRoundTrip: one lookup over a kept unix connection, as
// Postfix asks for each recipient (the common answer, NOTFOUND).
func BenchmarkSocketmapRoundTrip(b *testing.B) {
	path := filepath.Join(b.TempDir(), "srs.sock")
	ln, err := net.Listen("unix", path)
	if err != nil {
		b.Fatal(err)
	}
	s := &SocketmapServer{Lookup: echoLookup}
	go s.Serve(ln)
	defer s.Close()
	c, err := net.Dial("unix", path)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	var req bytes.Buffer
	WriteNetstring(&req, []byte("reverse bob@example.com"))
	b.ResetTimer()
	for b.Loop() {
		if _, err := c.Write(req.Bytes()); err != nil {
			b.Fatal(err)
		}
		if _, err := ReadNetstring(r, MaxReply); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReverse: checking a valid SRS0 address (the hash with one secret).
func BenchmarkReverse(b *testing.B) {
	s, _ := New(vectorSecrets...)
	s.Now = func() time.Time { return vectorDay }
	a, _ := s.Forward("alice@orig.example", "example.com")
	for b.Loop() {
		if _, err := s.Reverse(a); err != nil {
			b.Fatal(err)
		}
	}
}
