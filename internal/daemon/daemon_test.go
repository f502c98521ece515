package daemon

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
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
