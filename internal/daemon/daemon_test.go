package daemon

import (
	"bytes"
	"context"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// SIGUSR1 makes a daemon log one status line with its figures.
func TestStatusOnSIGUSR1(t *testing.T) {
	var mu syncBuf
	log := slog.New(slog.NewTextHandler(&mu, nil))
	stop := StatusOnSIGUSR1(log, "testd", func() int { return 3 })
	defer stop()
	syscall.Kill(syscall.Getpid(), syscall.SIGUSR1)
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(10 * time.Millisecond) {
		if s := mu.String(); strings.Contains(s, "testd: status") {
			for _, f := range []string{"goroutines=", "heap_inuse_bytes=", "open_fds=", "open_connections=3"} {
				if !strings.Contains(s, f) {
					t.Errorf("status line without %s: %s", f, s)
				}
			}
			return
		}
	}
	t.Fatalf("no status line: %q", mu.String())
}

// syncBuf is a bytes.Buffer safe for the logging goroutine and the test.
type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// fakeInventory stands in for drift.Gauges.
type fakeInventory struct{ running, installed, warning string }

func (f *fakeInventory) Digests() (string, string) { return f.running, f.installed }
func (f *fakeInventory) Warning() string           { return f.warning }

func TestMetricsHandlerHealthz(t *testing.T) {
	serving := true
	inv := &fakeInventory{running: "sha256:a", installed: "sha256:a"}
	h := MetricsHandler(prometheus.NewRegistry(), func() bool { return serving }, inv)
	get := func(path string) (int, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", path, nil))
		return rec.Code, rec.Body.String()
	}
	if code, body := get("/healthz"); code != 200 || body != "ok\n" {
		t.Errorf("serving: %d %q", code, body)
	}
	if code, body := get("/healthz?format=json"); code != 200 || body != `{"status":"ok","digest":"sha256:a","installed_digest":"sha256:a"}`+"\n" {
		t.Errorf("serving, JSON: %d %q", code, body)
	}
	inv.installed = "sha256:b"
	inv.warning = "inventory drift: running sha256:a, installed Postfix config rendered from sha256:b"
	if code, body := get("/healthz"); code != 200 || body != "ok\nwarning: "+inv.warning+"\n" {
		t.Errorf("drifting: %d %q", code, body)
	}
	if code, body := get("/healthz?format=json"); code != 200 || !strings.Contains(body, `"installed_digest":"sha256:b","warning":"inventory drift: `) {
		t.Errorf("drifting, JSON: %d %q", code, body)
	}
	if code, body := get("/healthz?format=yaml"); code != 400 || !strings.Contains(body, "json or text") {
		t.Errorf("unknown format: %d %q", code, body)
	}
	serving = false
	if code, body := get("/healthz"); code != 503 || body != "not serving\n" {
		t.Errorf("draining: %d %q", code, body)
	}
	if code, body := get("/healthz?format=json"); code != 503 || !strings.HasPrefix(body, `{"status":"not serving","digest":"sha256:a"`) {
		t.Errorf("draining, JSON: %d %q", code, body)
	}
}

// ProbeHealth reads a live /healthz over HTTP, draining included, and
// says what is wrong with anything else.
func TestProbeHealth(t *testing.T) {
	serving := true
	srv := httptest.NewServer(MetricsHandler(prometheus.NewRegistry(), func() bool { return serving }, &fakeInventory{running: "sha256:c"}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	ctx := context.Background()
	h, err := ProbeHealth(ctx, srv.Client(), addr)
	if err != nil || h != (Health{Status: "ok", Digest: "sha256:c"}) {
		t.Errorf("up: %+v %v", h, err)
	}
	serving = false
	if h, err = ProbeHealth(ctx, srv.Client(), addr); err != nil || h.Status != "not serving" {
		t.Errorf("draining: %+v %v", h, err)
	}
	other := httptest.NewServer(http.NotFoundHandler())
	defer other.Close()
	if _, err := ProbeHealth(ctx, other.Client(), strings.TrimPrefix(other.URL, "http://")); err == nil || !strings.Contains(err.Error(), "404") {
		t.Errorf("not a daemon: %v", err)
	}
	srv.Close()
	if _, err := ProbeHealth(ctx, srv.Client(), addr); err == nil {
		t.Error("down: no error")
	}
}

// ServeMetrics warns when its listener is reachable beyond loopback: the
// metrics and the status page have no authentication.
func TestServeMetricsWarnsBeyondLoopback(t *testing.T) {
	for addr, warn := range map[string]bool{"127.0.0.1:0": false, "0.0.0.0:0": true} {
		var buf syncBuf
		log := slog.New(slog.NewTextHandler(&buf, nil))
		stop, err := ServeMetrics(log, "testd", addr, http.NotFoundHandler(), http.NotFoundHandler())
		if err != nil {
			t.Fatal(err)
		}
		stop()
		if got := strings.Contains(buf.String(), "level=WARN") && strings.Contains(buf.String(), "no authentication"); got != warn {
			t.Errorf("%s: warning %v, want %v:\n%s", addr, got, warn, buf.String())
		}
	}
}

func TestEvery(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	calls := make(chan struct{}, 100)
	done := make(chan struct{})
	go func() {
		Every(ctx, time.Millisecond, func() { calls <- struct{}{} })
		close(done)
	}()
	for range 3 {
		select {
		case <-calls:
		case <-time.After(5 * time.Second):
			t.Fatal("f was not called every interval")
		}
	}
	cancel()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("Every did not return when its context ended")
	}
}
