package daemon

import (
	"bytes"
	"log/slog"
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

func TestMetricsHandlerHealthz(t *testing.T) {
	serving, warning := true, ""
	h := MetricsHandler(prometheus.NewRegistry(), func() bool { return serving }, func() string { return warning })
	get := func() (int, string) {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest("GET", "/healthz", nil))
		return rec.Code, rec.Body.String()
	}
	if code, body := get(); code != 200 || body != "ok\n" {
		t.Errorf("serving: %d %q", code, body)
	}
	warning = "inventory drift: running sha256:a, installed Postfix config rendered from sha256:b"
	if code, body := get(); code != 200 || body != "ok\nwarning: "+warning+"\n" {
		t.Errorf("drifting: %d %q", code, body)
	}
	serving = false
	if code, _ := get(); code != 503 {
		t.Errorf("draining: %d", code)
	}
}
