package maillog

import (
	"io"
	"sync"
	"sync/atomic"
	"time"
)

// Log is a mail log being written: lines are collected in memory and one
// goroutine writes them to the destination every FlushInterval.
type Log struct {
	w       io.Writer
	mu      sync.Mutex
	pending []byte
	spare   []byte
	dropped atomic.Uint64
	kick    chan struct{}
	done    chan struct{}
	closed  bool

	// OnDrop, when set, is called for every dropped line.
	OnDrop func()
}

// MaxPending bounds the memory held for a stalled log destination.
const MaxPending = 4 << 20

// FlushInterval is how long a line may wait in memory.
const FlushInterval = 100 * time.Millisecond

// New starts a mail log writing to w. Close flushes and stops it.
func New(w io.Writer) *Log {
	l := &Log{w: w, kick: make(chan struct{}, 1), done: make(chan struct{})}
	go l.run()
	return l
}

func (l *Log) run() {
	defer close(l.done)
	t := time.NewTicker(FlushInterval)
	defer t.Stop()
	for {
		select {
		case <-t.C:
		case <-l.kick:
		}
		if !l.flush() {
			return
		}
	}
}

// flush writes what is pending; it returns false once the log is closed and empty.
func (l *Log) flush() bool {
	l.mu.Lock()
	b := l.pending
	l.pending = l.spare[:0]
	closed := l.closed
	l.mu.Unlock()
	if len(b) > 0 {
		l.w.Write(b) // a failing log destination must not stop decisions
	}
	l.mu.Lock()
	l.spare = b[:0]
	empty := len(l.pending) == 0
	l.mu.Unlock()
	return !(closed && empty)
}

// Close writes every pending line and stops the writer.
func (l *Log) Close() {
	l.mu.Lock()
	if l.closed {
		l.mu.Unlock()
		return
	}
	l.closed = true
	l.mu.Unlock()
	select {
	case l.kick <- struct{}{}:
	default:
	}
	<-l.done
}

// Dropped returns how many lines were dropped because the destination stalled.
func (l *Log) Dropped() uint64 { return l.dropped.Load() }

// Add ends a line and logs it. It never blocks on the destination.
func (l *Log) Add(ln Line) {
	l.add(append(ln.b, '\n'))
}

// Write takes whole lines (as a log/slog handler writes one record) into
// the same buffer, so that a daemon's own log costs no system call per
// line either. It never fails; lines beyond MaxPending are dropped.
func (l *Log) Write(p []byte) (int, error) {
	l.add(p)
	return len(p), nil
}

// add appends a line to what the next flush writes.
func (l *Log) add(b []byte) {
	l.mu.Lock()
	if l.closed || len(l.pending)+len(b) > MaxPending {
		l.mu.Unlock()
		l.dropped.Add(1)
		if l.OnDrop != nil {
			l.OnDrop()
		}
		return
	}
	l.pending = append(l.pending, b...)
	big := len(l.pending) > 64<<10
	l.mu.Unlock()
	if big {
		select {
		case l.kick <- struct{}{}:
		default:
		}
	}
}
