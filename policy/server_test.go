package policy

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/mailnode/mailnode/internal/promtest"
	"github.com/mailnode/mailnode/internal/statuspage"
	"github.com/mailnode/mailnode/inventory"
	"github.com/mailnode/mailnode/maillog"
	"github.com/mailnode/mailnode/state"
	"github.com/mailnode/mailnode/test/harness"
)

// testServer runs a Server on a fresh listener and stops it at the end of the test.
type testServer struct {
	*Server
	network, addr string
	logs          *harness.SyncBuffer
	done          chan error
}

func startServer(t testing.TB, network string, configure func(*Server)) *testServer {
	t.Helper()
	inv := loadInventory(t)
	var ln net.Listener
	var err error
	if network == "unix" {
		dir, err := os.MkdirTemp("", "policyd")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.RemoveAll(dir) })
		ln, err = Listen("unix:" + filepath.Join(dir, "policy"))
	} else {
		ln, err = net.Listen("tcp", "127.0.0.1:0") // Listen wants a fixed port
	}
	if err != nil {
		t.Fatal(err)
	}
	ts := &testServer{Server: NewServer(inv), network: ln.Addr().Network(), addr: ln.Addr().String(),
		logs: &harness.SyncBuffer{}, done: make(chan error, 1)}
	ts.Log = slog.New(slog.NewTextHandler(ts.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	if configure != nil {
		configure(ts.Server)
	}
	go func() { ts.done <- ts.Serve(ln) }()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		ts.Shutdown(ctx)
		if err := <-ts.done; !errors.Is(err, ErrServerClosed) {
			t.Errorf("Serve returned %v", err)
		}
	})
	return ts
}

func (ts *testServer) dial(t testing.TB) net.Conn {
	t.Helper()
	c, err := net.Dial(ts.network, ts.addr)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// stripComments removes the leading "#" lines that document a .req file.
func stripComments(b []byte) []byte {
	for bytes.HasPrefix(b, []byte("#")) {
		i := bytes.IndexByte(b, '\n')
		if i < 0 {
			return nil
		}
		b = b[i+1:]
	}
	return b
}

// TestTranscripts sends each testdata/NN-name.req over one connection (unix
// socket and TCP), half-closes, and compares every byte the server sends
// until it closes with NN-name.want. An empty .want means: no reply at all.
func TestTranscripts(t *testing.T) {
	files, err := filepath.Glob("testdata/[0-9][0-9]-*.req")
	if err != nil || len(files) < 20 {
		t.Fatalf("transcripts: %d files, %v", len(files), err)
	}
	for _, network := range []string{"unix", "tcp"} {
		ts := startServer(t, network, nil)
		for _, f := range files {
			name := strings.TrimSuffix(filepath.Base(f), ".req")
			t.Run(network+"/"+name, func(t *testing.T) {
				req, err := os.ReadFile(f)
				if err != nil {
					t.Fatal(err)
				}
				want, err := os.ReadFile(strings.TrimSuffix(f, ".req") + ".want")
				if err != nil {
					t.Fatal(err)
				}
				c := ts.dial(t)
				c.SetDeadline(time.Now().Add(10 * time.Second))
				if _, err := c.Write(stripComments(req)); err != nil {
					t.Fatal(err)
				}
				closeWrite(c)
				got, err := io.ReadAll(c)
				if err != nil && !isReset(err) {
					t.Fatalf("reading replies: %v", err)
				}
				if !bytes.Equal(got, want) {
					t.Errorf("replies differ\n--- got\n%q\n--- want\n%q", got, want)
				}
			})
		}
	}
}

func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
}

// isReset: a server that closes with unread input makes TCP send a reset.
func isReset(err error) bool {
	return err != nil && (strings.Contains(err.Error(), "connection reset") || errors.Is(err, io.ErrUnexpectedEOF))
}

const inboundRequest = "request=smtpd_access_policy\nprotocol_state=RCPT\nsender=eve@example.org\nrecipient=bob@example.com\nclient_address=198.51.100.7\n\n"
const relayRequest = "request=smtpd_access_policy\nprotocol_state=RCPT\nsender=eve@example.org\nrecipient=frank@example.org\nclient_address=198.51.100.7\n\n"
const relayReply = "action=550 5.7.1 Sorry, relay for <frank@example.org> not permitted\n\n"

// ask sends one request and reads one reply (up to its empty line).
func ask(c net.Conn, r *bufio.Reader, req string) (string, error) {
	c.SetDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.WriteString(c, req); err != nil {
		return "", err
	}
	var b strings.Builder
	for {
		line, err := r.ReadString('\n')
		b.WriteString(line)
		if err != nil {
			return b.String(), err
		}
		if line == "\n" {
			return b.String(), nil
		}
	}
}

// TestRequestByRequest: Postfix waits for each reply before the next request.
func TestRequestByRequest(t *testing.T) {
	ts := startServer(t, "unix", nil)
	c := ts.dial(t)
	r := bufio.NewReader(c)
	for i := 0; i < 100; i++ {
		req, want := inboundRequest, "action=DUNNO\n\n"
		if i%2 == 1 {
			req, want = relayRequest, relayReply
		}
		got, err := ask(c, r, req)
		if err != nil || got != want {
			t.Fatalf("request %d: %q, %v; want %q", i, got, err, want)
		}
	}
}

// TestByteByByte: a request trickling in one byte at a time is still one request.
func TestByteByByte(t *testing.T) {
	ts := startServer(t, "tcp", nil)
	c := ts.dial(t)
	c.(*net.TCPConn).SetNoDelay(true)
	for i := 0; i < len(relayRequest); i++ {
		if _, err := c.Write([]byte{relayRequest[i]}); err != nil {
			t.Fatal(err)
		}
		if i%10 == 0 {
			time.Sleep(time.Millisecond)
		}
	}
	r := bufio.NewReader(c)
	if got, err := ask(c, r, ""); err != nil || got != relayReply {
		t.Fatalf("trickled request: %q, %v; want %q", got, err, relayReply)
	}
	if got, err := ask(c, r, inboundRequest); err != nil || got != "action=DUNNO\n\n" {
		t.Fatalf("next request: %q, %v", got, err)
	}
}

// TestMalformedIsLogged: no reply, a warning, a closed connection, and a metric.
func TestMalformedIsLogged(t *testing.T) {
	m := NewMetrics()
	ts := startServer(t, "unix", func(s *Server) { s.Metrics = m })
	c := ts.dial(t)
	io.WriteString(c, "request=smtpd_access_policy\nsender=a\x00b\n\n")
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	got, err := io.ReadAll(c)
	if len(got) != 0 || err != nil {
		t.Fatalf("got %q, %v; want no reply and EOF", got, err)
	}
	if logs := ts.logs.String(); !strings.Contains(logs, "level=WARN") || !strings.Contains(logs, "NUL byte") {
		t.Errorf("no warning logged:\n%s", logs)
	}
	if v := counterValue(t, m, "mailnode_policy_malformed_requests_total", nil); v != 1 {
		t.Errorf("malformed counter %v, want 1", v)
	}
}

// TestIdleTimeout: a connection silent between requests is closed after
// IdleTimeout; one that starts a request and stalls after RequestTimeout.
func TestIdleTimeout(t *testing.T) {
	ts := startServer(t, "unix", func(s *Server) {
		s.IdleTimeout = 200 * time.Millisecond
		s.RequestTimeout = 300 * time.Millisecond
	})
	dialed := time.Now() // before the idle connection: its wait begins after
	idle := ts.dial(t)
	slow := ts.dial(t)
	io.WriteString(slow, "request=smtpd_access_policy\nprotocol_state=RCPT\n")
	start := time.Now()
	for _, c := range []net.Conn{idle, slow} {
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		got, err := io.ReadAll(c)
		if len(got) != 0 || err != nil {
			t.Fatalf("got %q, %v; want a silent close", got, err)
		}
		if el := time.Since(dialed); c == idle && el < 200*time.Millisecond {
			t.Errorf("the idle connection was closed after %v, before IdleTimeout", el)
		}
	}
	if el := time.Since(start); el > 3*time.Second {
		t.Errorf("closing took %v", el)
	}
	// A connection that keeps asking stays open past the idle timeout.
	c := ts.dial(t)
	r := bufio.NewReader(c)
	for i := 0; i < 5; i++ {
		if got, err := ask(c, r, inboundRequest); err != nil || got != "action=DUNNO\n\n" {
			t.Fatalf("request %d after %v: %q, %v", i, time.Since(start), got, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestReloadKeepsConnections: SetInventory changes later decisions on a
// connection that stays open.
func TestReloadKeepsConnections(t *testing.T) {
	ts := startServer(t, "unix", nil)
	c := ts.dial(t)
	r := bufio.NewReader(c)
	if got, _ := ask(c, r, relayRequest); got != relayReply {
		t.Fatalf("before reload: %q", got)
	}
	data, err := os.ReadFile("testdata/inventory.yaml")
	if err != nil {
		t.Fatal(err)
	}
	// example.org becomes a relay domain: frank@example.org is now relayed for.
	data = append(data, "  - name: example.org\n    class: relay\n"...)
	inv, err := inventory.Parse(data, "reloaded.yaml")
	if err != nil {
		t.Fatal(err)
	}
	ts.SetInventory(inv)
	want := "action=550 5.7.1 Please use own mail service for send mail from <eve@example.org>\n\n"
	if got, err := ask(c, r, relayRequest); got != want {
		t.Fatalf("after reload on the same connection: %q, %v; want %q", got, err, want)
	}
}

// TestShutdownDrains: Shutdown closes idle connections, lets a request in
// flight get its reply, and refuses new connections.
func TestShutdownDrains(t *testing.T) {
	inv := loadInventory(t)
	dir := t.TempDir()
	ln, err := Listen("unix:" + filepath.Join(dir, "p"))
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(inv)
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	idle, err := net.Dial("unix", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	busy, err := net.Dial("unix", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	// Half a request: the connection is busy when Shutdown starts.
	half := len(relayRequest) / 2
	io.WriteString(busy, relayRequest[:half])
	waitFor(t, func() bool { return s.OpenConnections() == 2 })
	time.Sleep(50 * time.Millisecond) // let the server read the first half
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		shut <- s.Shutdown(ctx)
	}()
	idle.SetReadDeadline(time.Now().Add(5 * time.Second))
	if b, err := io.ReadAll(idle); len(b) != 0 || err != nil {
		t.Fatalf("idle connection: %q, %v; want closed", b, err)
	}
	io.WriteString(busy, relayRequest[half:])
	busy.SetReadDeadline(time.Now().Add(5 * time.Second))
	if b, _ := io.ReadAll(busy); string(b) != relayReply {
		t.Fatalf("request in flight got %q, want its reply and a close", b)
	}
	if err := <-shut; err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	if err := <-done; !errors.Is(err, ErrServerClosed) {
		t.Fatalf("Serve: %v", err)
	}
	if _, err := net.Dial("unix", ln.Addr().String()); err == nil {
		t.Fatal("still accepting after Shutdown")
	}
}

func waitFor(t testing.TB, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10s")
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func TestListenRefusesLiveSocketAndRemovesStale(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "policy")
	ln, err := Listen("unix:" + p)
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(p); err != nil || fi.Mode().Perm() != 0o666 {
		t.Fatalf("socket mode: %v, %v", fi.Mode(), err)
	}
	if _, err := Listen("unix:" + p); err == nil || !strings.Contains(err.Error(), "another process") {
		t.Fatalf("second listener: %v", err)
	}
	// Leave a stale socket file behind, as a killed policyd would.
	ln.(*net.UnixListener).SetUnlinkOnClose(false)
	ln.Close()
	ln2, err := Listen("unix:" + p)
	if err != nil {
		t.Fatalf("stale socket not replaced: %v", err)
	}
	ln2.Close()
	if err := os.WriteFile(p, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := Listen("unix:" + p); err == nil {
		t.Fatal("a regular file was replaced")
	}
	if _, err := Listen("tcp:1.2.3.4:5"); err == nil {
		t.Fatal("bad spec accepted")
	}
}

// TestMailLogLine: one line per decision with queue id, client, login,
// sender, recipient, cell and action.
func TestMailLogLine(t *testing.T) {
	var out harness.SyncBuffer
	ml := maillog.New(&out)
	ts := startServer(t, "unix", func(s *Server) { s.MailLog = ml })
	c := ts.dial(t)
	r := bufio.NewReader(c)
	req := "request=smtpd_access_policy\nprotocol_state=RCPT\nqueue_id=4XyZ1\ninstance=a.b.c\nclient_name=mail.client.test\n" +
		"client_address=198.51.100.7\nsasl_username=\nsender=eve@example.org\nrecipient=frank@example.org\n\n"
	if _, err := ask(c, r, req); err != nil {
		t.Fatal(err)
	}
	if _, err := ask(c, r, strings.Replace(inboundRequest, "\n\n", "\ninstance=a.b.c\n\n", 1)); err != nil {
		t.Fatal(err)
	}
	// The server logs a decision after writing its reply; the log flushes every maillog.FlushInterval.
	waitFor(t, func() bool { return strings.Count(out.String(), "\n") == 2 })
	ml.Close()
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("%d lines, want 2:\n%s", len(lines), out.String())
	}
	want := ` policyd queue_id=4XyZ1 client=mail.client.test[198.51.100.7] sasl_user="" from=<eve@example.org> to=<frank@example.org> state=RCPT cell=outside/none->outside rcpt=1 action="550 5.7.1 Sorry, relay for <frank@example.org> not permitted" reason=relay-denied`
	if _, rest, _ := strings.Cut(lines[0], " "); " "+rest != want {
		t.Errorf("line\n%s\nwant (after the time stamp)\n%s", lines[0], want)
	}
	if _, err := time.Parse(time.RFC3339, strings.Fields(lines[0])[0]); err != nil {
		t.Errorf("time stamp: %v", err)
	}
	if !strings.Contains(lines[1], " rcpt=2 action=DUNNO reason=inbound spam_check=on") {
		t.Errorf("second line: %s", lines[1])
	}
}

// counterValue reads one series of a metric (promtest.Value); -1 when it
// does not exist.
func counterValue(t testing.TB, m *Metrics, name string, labels map[string]string) float64 {
	t.Helper()
	v, ok, err := promtest.Value(m.Registry, name, labels)
	if err != nil {
		t.Fatal(err)
	}
	if !ok {
		return -1
	}
	return v
}

func TestMetrics(t *testing.T) {
	m := NewMetrics()
	ts := startServer(t, "unix", func(s *Server) { s.Metrics = m })
	c := ts.dial(t)
	r := bufio.NewReader(c)
	for i := 0; i < 3; i++ {
		ask(c, r, relayRequest)
	}
	ask(c, r, inboundRequest)
	// The server counts a decision after writing its reply.
	waitFor(t, func() bool { return counterValue(t, m, "mailnode_policy_decision_seconds", nil) == 4 })
	if v := counterValue(t, m, "mailnode_policy_decisions_total", map[string]string{"cell": "outside/none->outside", "action": "reject", "reason": "relay-denied"}); v != 3 {
		t.Errorf("relay-denied decisions %v, want 3", v)
	}
	if v := counterValue(t, m, "mailnode_policy_decisions_total", map[string]string{"cell": "outside/none->local", "action": "dunno"}); v != 1 {
		t.Errorf("inbound decisions %v, want 1", v)
	}
	if v := counterValue(t, m, "mailnode_policy_decision_seconds", nil); v != 4 {
		t.Errorf("latency samples %v, want 4", v)
	}
	if v := counterValue(t, m, "mailnode_policy_open_connections", nil); v != 1 {
		t.Errorf("open connections %v, want 1", v)
	}
	h := m.Handler(func() bool { return true })
	for path, want := range map[string]string{"/healthz": "ok\n", "/metrics": "mailnode_policy_decisions_total{"} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		if rec.Code != 200 || !strings.Contains(rec.Body.String(), want) {
			t.Errorf("%s: %d %q", path, rec.Code, rec.Body.String())
		}
	}
	rec := httptest.NewRecorder()
	m.Handler(func() bool { return false }).ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
	if rec.Code != 503 {
		t.Errorf("unhealthy /healthz: %d", rec.Code)
	}

	// An inventory drift: still 200, with the warning; the gauges follow.
	m.Inventory("sha256:bb", "sha256:aa", "inventory drift: running sha256:bb")
	get := func(path string) string {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		return rec.Body.String()
	}
	if got := get("/healthz"); got != "ok\nwarning: inventory drift: running sha256:bb\n" {
		t.Errorf("/healthz in drift: %q", got)
	}
	for _, want := range []string{`mailnode_policy_inventory_info{digest="sha256:bb"} 1`,
		`mailnode_policy_inventory_installed_info{digest="sha256:aa"} 1`, "mailnode_policy_inventory_drift 1"} {
		if !strings.Contains(get("/metrics"), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
	m.Inventory("sha256:bb", "sha256:bb", "")
	if got, body := get("/healthz"), get("/metrics"); got != "ok\n" || !strings.Contains(body, "mailnode_policy_inventory_drift 0") || strings.Contains(body, `installed_info{digest="sha256:aa"}`) {
		t.Errorf("after the drift: /healthz %q", got)
	}
}

func ExampleDecide() {
	inv, err := inventory.Load("testdata/inventory.yaml")
	if err != nil {
		panic(err)
	}
	req := Request{Request: "smtpd_access_policy", ProtocolState: "RCPT",
		ClientAddress: "198.51.100.7", Sender: "alice@example.com", Recipient: "frank@example.org"}
	d := Decide(req, inv, OptionsFrom(inv))
	fmt.Println(d.Cell, d.Reason)
	fmt.Println("action=" + d.Reply)
	// Output:
	// local/none->outside auth-required
	// action=550 5.7.1 Please authenticate for send mail from domain <example.com>
}

// TestShutdownClosesAnswered: a connection waiting for its next request
// after an answered one is closed by Shutdown at once.
func TestShutdownClosesAnswered(t *testing.T) {
	inv := loadInventory(t)
	ln, err := Listen("unix:" + filepath.Join(t.TempDir(), "p"))
	if err != nil {
		t.Fatal(err)
	}
	s := NewServer(inv)
	done := make(chan error, 1)
	go func() { done <- s.Serve(ln) }()
	c, err := net.Dial("unix", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got, err := ask(c, bufio.NewReader(c), relayRequest); err != nil || got != relayReply {
		t.Fatalf("%q, %v", got, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := s.Shutdown(ctx); err != nil {
		t.Fatalf("Shutdown: %v", err)
	}
	<-done
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if b, err := io.ReadAll(c); len(b) != 0 || err != nil {
		t.Fatalf("answered connection after Shutdown: %q, %v", b, err)
	}
	if n := s.OpenConnections(); n != 0 {
		t.Errorf("%d open after Shutdown", n)
	}
}

// TestFramingAfterExchanges: on a connection that has already been
// answered like Postfix's (request, wait, reply), nothing a client may send
// goes unanswered: two requests in one write, a request in pieces, a
// request larger than the read buffer.
func TestFramingAfterExchanges(t *testing.T) {
	for _, network := range []string{"unix", "tcp"} {
		t.Run(network, func(t *testing.T) {
			ts := startServer(t, network, nil)
			c := ts.dial(t)
			r := bufio.NewReader(c)
			for i := 0; i < 3; i++ { // Postfix-like: one request, then its reply
				if got, err := ask(c, r, inboundRequest); err != nil || got != "action=DUNNO\n\n" {
					t.Fatalf("warm-up %d: %q, %v", i, got, err)
				}
			}
			// Two requests in one write: two replies.
			if got, err := ask(c, r, inboundRequest+relayRequest); err != nil || got != "action=DUNNO\n\n" {
				t.Fatalf("first of two: %q, %v", got, err)
			}
			if got, err := readReply(c, r); err != nil || got != relayReply {
				t.Fatalf("second of two: %q, %v", got, err)
			}
			// A request in three pieces with pauses between them.
			for _, piece := range []string{relayRequest[:10], relayRequest[10:50]} {
				io.WriteString(c, piece)
				time.Sleep(20 * time.Millisecond)
			}
			if got, err := ask(c, r, relayRequest[50:]); err != nil || got != relayReply {
				t.Fatalf("request in pieces: %q, %v", got, err)
			}
			// Larger than the pooled 2 KiB read buffer, in one write.
			big := strings.Replace(relayRequest, "client_address=", "ccert_subject="+strings.Repeat("x", 1500)+"\nhelo_name="+strings.Repeat("h", 1500)+"\nclient_address=", 1)
			if got, err := ask(c, r, big); err != nil || got != relayReply {
				t.Fatalf("%d-byte request: %q, %v", len(big), got, err)
			}
			// And the plain exchange still works after all of that.
			if got, err := ask(c, r, inboundRequest); err != nil || got != "action=DUNNO\n\n" {
				t.Fatalf("after: %q, %v", got, err)
			}
		})
	}
}

// TestRequestThenClose: a client whose request and close arrive together,
// before the server's first read (a script piping into nc), gets its reply
// and the connection ends at once, not after a timeout. TCP_CORK makes the
// kernel send the request and the FIN in one segment.
func TestRequestThenClose(t *testing.T) {
	ts := startServer(t, "tcp", nil)
	c := ts.dial(t).(*net.TCPConn)
	rc, _ := c.SyscallConn()
	rc.Control(func(fd uintptr) { syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_CORK, 1) })
	start := time.Now()
	if _, err := io.WriteString(c, inboundRequest); err != nil {
		t.Fatal(err)
	}
	c.CloseWrite()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	got, err := io.ReadAll(c)
	if err != nil || string(got) != "action=DUNNO\n\n" {
		t.Fatalf("got %q, %v", got, err)
	}
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("the server closed %v after the request; want at once", el)
	}
}

// readReply reads one reply up to its empty line.
func readReply(c net.Conn, r *bufio.Reader) (string, error) {
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	var b strings.Builder
	for {
		line, err := r.ReadString('\n')
		b.WriteString(line)
		if err != nil || line == "\n" {
			return b.String(), err
		}
	}
}

// The status page's window and ring: what the server decided, per cell and
// outcome; the refusals with their request's fields.
func TestMetricsRecent(t *testing.T) {
	m := NewMetrics()
	ts := startServer(t, "unix", func(s *Server) { s.Metrics = m })
	c := ts.dial(t)
	r := bufio.NewReader(c)
	for i := 0; i < 2; i++ {
		ask(c, r, relayRequest)
	}
	ask(c, r, inboundRequest)
	ask(c, r, "request=smtpd_access_policy\nprotocol_state=DATA\nsender=eve@example.org\nclient_address=198.51.100.7\n\n")
	waitFor(t, func() bool { return counterValue(t, m, "mailnode_policy_decision_seconds", nil) == 4 })
	v := m.Recent().View(time.Now())
	names := CellNames()
	got := map[string][statuspage.NumOutcomes]int{}
	for i, s := range v.Series {
		if s != [statuspage.NumOutcomes]int{} {
			got[names[i]] = s
		}
	}
	want := map[string][statuspage.NumOutcomes]int{
		"outside/none->outside": {0, 2, 0, 0},
		"outside/none->local":   {1, 0, 0, 0},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("per cell %v, want %v (the DATA request is not a cell's)", got, want)
	}
	rej := m.Rejections().Latest()
	if len(rej) != 2 || rej[0].Recipient != "frank@example.org" || rej[0].Sender != "eve@example.org" || rej[0].Client != "198.51.100.7" ||
		rej[0].Cell != "outside/none->outside" || rej[0].Reply != "550 5.7.1 Sorry, relay for <frank@example.org> not permitted" || rej[0].Query() != "frank@example.org" {
		t.Errorf("rejections %+v", rej)
	}
}

// recentDecision sorts the 450s: greylisting's own, the rest (rate
// limits); and it allocates nothing for a decision that is not a 550.
func TestRecentDecision(t *testing.T) {
	m := NewMetrics()
	at := time.Now()
	req := &Request{ClientName: "mx.example.org", ClientAddress: "192.0.2.1", Sender: "s@example.org", Recipient: "bob@example.com", QueueID: "4ABCDEF12"}
	inbound := Cell{Sender: inventory.Outside, Auth: inventory.AuthNone, Recipient: inventory.Local}
	m.recentDecision(req, Decision{Cell: inbound, Action: Defer, Greylist: state.ReasonNew}, at)
	m.recentDecision(req, Decision{Cell: inbound, Action: Defer, Greylist: state.ReasonEarly}, at)
	auth := Cell{Sender: inventory.Local, Auth: inventory.AuthSASL, Recipient: inventory.Outside}
	m.recentDecision(req, Decision{Cell: auth, Action: Defer, RateLimit: state.ReasonOverMessages}, at)
	m.recentDecision(req, Decision{Cell: auth, Action: Dunno, RateLimit: state.ReasonWithinLimit}, at)
	m.recentDecision(req, Decision{Cell: inbound, Action: Reject, Reply: "550 5.7.1 no"}, at)
	v := m.Recent().View(at)
	if g := v.Series[cellIndex(inbound)]; g != [statuspage.NumOutcomes]int{0, 1, 2, 0} {
		t.Errorf("inbound %v", g)
	}
	if g := v.Series[cellIndex(auth)]; g != [statuspage.NumOutcomes]int{1, 0, 0, 1} {
		t.Errorf("authorized %v", g)
	}
	if r := m.Rejections().Latest(); len(r) != 1 || r[0].Client != "mx.example.org[192.0.2.1]" || r[0].Query() != "4ABCDEF12" || r[0].Cell != "outside/none->local" {
		t.Errorf("rejection %+v", r)
	}
	if n := testing.AllocsPerRun(1000, func() { m.recentDecision(req, Decision{Cell: inbound, Action: Defer, Greylist: state.ReasonNew}, at) }); n != 0 {
		t.Errorf("%v allocations per decision", n)
	}
	for i, name := range CellNames() {
		if name == "" || strings.Count(name, "/") != 1 || !strings.Contains(name, "->") {
			t.Errorf("cell %d named %q", i, name)
		}
	}
	if cellIndex(Cell{Sender: 7}) != -1 {
		t.Error("a cell out of range has an index")
	}
}
