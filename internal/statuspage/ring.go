package statuspage

import (
	"sync"
	"time"
)

// Rejection is one refused recipient as the page lists it.
type Rejection struct {
	Time      time.Time
	QueueID   string // "" before Postfix had one (NOQUEUE)
	Client    string // name[address]
	Sender    string
	Recipient string
	Cell      string // the matrix cell, e.g. outside/none->outside
	Reply     string // what the client was told
}

// Query is what the page asks /why about: the queue id when there is one,
// else the recipient, else the sender ("<>" for the null sender).
func (r Rejection) Query() string {
	switch {
	case r.QueueID != "":
		return r.QueueID
	case r.Recipient != "":
		return r.Recipient
	case r.Sender != "":
		return r.Sender
	}
	return "<>"
}

// Ring keeps the latest rejections, a fixed number of them.
type Ring struct {
	mu   sync.Mutex
	buf  []Rejection
	next int
	full bool
}

// NewRing keeps the last size rejections (at least one).
func NewRing(size int) *Ring {
	return &Ring{buf: make([]Rejection, max(size, 1))}
}

// Add records a rejection, dropping the oldest when full.
func (r *Ring) Add(x Rejection) {
	r.mu.Lock()
	r.buf[r.next] = x
	r.next++
	if r.next == len(r.buf) {
		r.next, r.full = 0, true
	}
	r.mu.Unlock()
}

// Latest returns the kept rejections, newest first.
func (r *Ring) Latest() []Rejection {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := r.next
	if r.full {
		n = len(r.buf)
	}
	out := make([]Rejection, 0, n)
	for i := range n {
		out = append(out, r.buf[(r.next-1-i+len(r.buf))%len(r.buf)])
	}
	return out
}
