package resolver

import (
	"context"
	"fmt"
	"os"
	"sync"
	"testing"
	"time"
)

// openFDs counts the process's open file descriptors.
func openFDs(t testing.TB) int {
	t.Helper()
	es, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip("no /proc/self/fd:", err)
	}
	return len(es)
}

// ask asks n uncached names at once, so that the Client opens (and
// keeps) several sockets.
func askMany(t *testing.T, r *Client, n int, prefix string) {
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.LookupTXT(context.Background(), fmt.Sprintf("%s%d.test", prefix, i))
		}()
	}
	wg.Wait()
}

// TestClose: Close closes the idle sockets; questions in flight and after
// Close still get their answers and close their own sockets, so nothing
// stays open.
func TestClose(t *testing.T) {
	r, _ := testResolver(t)
	base := openFDs(t)
	askMany(t, r, 8, "a")
	if n := openFDs(t); n <= base {
		t.Fatalf("no idle socket kept: %d fds, %d before", n, base)
	}
	r.Close()
	if n := openFDs(t); n != base {
		t.Errorf("after Close: %d fds, want %d", n, base)
	}

	r, d := testResolver(t)
	d.Drop("slow.test", 0)
	base = openFDs(t)
	askMany(t, r, 4, "b")
	done := make(chan error)
	go func() { _, err := r.LookupTXT(context.Background(), "slow.test"); done <- err }()
	time.Sleep(50 * time.Millisecond) // let it send its question
	r.Close()
	if err := <-done; !IsTemporary(err) {
		t.Errorf("unanswered question in flight at Close: %v, want a temporary error", err)
	}
	if _, err := r.LookupIPAddr(context.Background(), "helo.test"); err != nil {
		t.Errorf("after Close: %v", err)
	}
	askMany(t, r, 4, "c")
	if n := openFDs(t); n != base {
		t.Errorf("after Close and more questions: %d fds, want %d", n, base)
	}
}
