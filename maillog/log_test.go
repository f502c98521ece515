package maillog

import (
	"bytes"
	"strings"
	"sync"
	"testing"
	"time"
)

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestFlush: lines reach the destination within a few FlushIntervals
// without Close, in order, records and written lines alike.
func TestFlush(t *testing.T) {
	var out syncBuffer
	l := New(&out)
	defer l.Close()
	l.Add(NewLine(nil, at, "policyd").Int("n", 1))
	l.Write([]byte("level=INFO msg=hello\n"))
	l.Add(NewLine(nil, at, "policyd").Int("n", 2))
	want := "2026-11-24T16:03:05.123Z policyd n=1\nlevel=INFO msg=hello\n2026-11-24T16:03:05.123Z policyd n=2\n"
	deadline := time.Now().Add(20 * FlushInterval)
	for out.String() != want {
		if time.Now().After(deadline) {
			t.Fatalf("after %v:\n%q\nwant\n%q", 20*FlushInterval, out.String(), want)
		}
		time.Sleep(FlushInterval / 10)
	}
}

// TestClose: Close writes what is pending; lines after it are dropped.
func TestClose(t *testing.T) {
	var out syncBuffer
	l := New(&out)
	for i := 0; i < 1000; i++ {
		l.Add(NewLine(nil, at, "milterd").Int("n", i))
	}
	l.Close()
	if n := strings.Count(out.String(), "\n"); n != 1000 {
		t.Errorf("%d lines after Close, want 1000", n)
	}
	l.Add(NewLine(nil, at, "milterd"))
	l.Close()
	if l.Dropped() != 1 {
		t.Errorf("Dropped() %d after one line past Close", l.Dropped())
	}
}

type writerFunc func([]byte) (int, error)

func (f writerFunc) Write(p []byte) (int, error) { return f(p) }

// TestDropsWhenStalled: a stalled destination never blocks a caller; lines
// past MaxPending are dropped and counted.
func TestDropsWhenStalled(t *testing.T) {
	block := make(chan struct{})
	l := New(writerFunc(func(p []byte) (int, error) { <-block; return len(p), nil }))
	drops := 0
	l.OnDrop = func() { drops++ }
	from := strings.Repeat("x", 1000)
	start := time.Now()
	for i := 0; i < 2*MaxPending/1000; i++ {
		l.Add(NewLine(nil, at, "policyd").Addr("from", from).String("action", "DUNNO"))
	}
	if time.Since(start) > 5*time.Second {
		t.Error("logging blocked on a stalled writer")
	}
	if drops == 0 || l.Dropped() != uint64(drops) {
		t.Errorf("drops %d, Dropped() %d", drops, l.Dropped())
	}
	close(block)
	l.Close()
}
