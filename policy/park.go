//go:build linux

package policy

import (
	"runtime/debug"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// parker holds the connections that have been silent for Server.ParkAfter.
// A goroutine costs at least a 2 KiB stack; with ten thousand smtpd
// processes each holding an idle policy connection that is most of
// policyd's memory. A parked connection has no goroutine: its socket sits
// in one epoll set (level-triggered, one-shot) and the parker's single
// goroutine starts a new one for it when data (or EOF) arrives. It also
// closes parked connections that reach Server.IdleTimeout, and all of them
// on Shutdown.
type parker struct {
	s    *Server
	epfd int

	mu    sync.Mutex
	conns map[int]*conn // by socket

	newlyParked atomic.Int64 // since memory was last given back
}

// Giving memory back: the stacks of parked goroutines return to Go's heap,
// where the runtime keeps them for reuse. When many connections have parked
// since the last time (at most every releaseEvery), the parker hands the
// idle memory back to the kernel, so that RSS follows the connections.
const (
	releaseAfterParked = 1000
	releaseEvery       = 30 * time.Second
)

// parker returns the server's parker, starting it on first use; nil when
// parking is off or epoll is not available.
func (s *Server) parker() *parker {
	s.parkOnce.Do(func() {
		if s.ParkAfter <= 0 {
			return
		}
		fd, err := syscall.EpollCreate1(syscall.EPOLL_CLOEXEC)
		if err != nil {
			s.Log.Warn("policyd: no epoll; idle connections keep their goroutines", "err", err)
			return
		}
		p := &parker{s: s, epfd: fd, conns: map[int]*conn{}}
		s.mu.Lock()
		s.park = p
		s.mu.Unlock()
		go p.run()
	})
	return s.parkerIfStarted()
}

func (s *Server) parkerIfStarted() *parker {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.park
}

// add parks c; false when it cannot (the caller closes the connection).
func (p *parker) add(c *conn) bool {
	if p == nil || c.fd < 0 {
		return false
	}
	c.releaseBuffer()
	p.mu.Lock()
	if p.s.closing.Load() {
		p.mu.Unlock()
		return false
	}
	p.conns[c.fd] = c
	p.mu.Unlock()
	p.newlyParked.Add(1)
	ev := syscall.EpollEvent{Events: syscall.EPOLLIN | syscall.EPOLLRDHUP | syscall.EPOLLONESHOT, Fd: int32(c.fd)}
	if err := syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_ADD, c.fd, &ev); err != nil {
		p.mu.Lock()
		owned := p.conns[c.fd] == c
		delete(p.conns, c.fd)
		p.mu.Unlock()
		p.s.Log.Warn("policyd: cannot park a connection", "err", err)
		return !owned // someone else took it over already
	}
	return true
}

// take removes the connection on fd from the set and returns it, now
// owned by the caller; nil when another caller took it first.
func (p *parker) take(fd int) *conn {
	p.mu.Lock()
	c := p.conns[fd]
	delete(p.conns, fd)
	p.mu.Unlock()
	if c != nil {
		syscall.EpollCtl(p.epfd, syscall.EPOLL_CTL_DEL, fd, nil)
	}
	return c
}

func (p *parker) run() {
	events := make([]syscall.EpollEvent, 256)
	lastSweep := time.Now()
	var lastRelease time.Time
	for {
		n, err := syscall.EpollWait(p.epfd, events, 1000)
		if err != nil && err != syscall.EINTR {
			p.s.Log.Error("policyd: epoll_wait failed; parked connections are closed", "err", err)
			p.closeAll()
			return
		}
		for _, ev := range events[:max(n, 0)] {
			if c := p.take(int(ev.Fd)); c != nil {
				go c.run()
			}
		}
		if now := time.Now(); now.Sub(lastSweep) >= time.Second {
			lastSweep = now
			p.sweep(now)
			if p.newlyParked.Load() >= releaseAfterParked && now.Sub(lastRelease) >= releaseEvery {
				lastRelease = now
				p.newlyParked.Store(0)
				go debug.FreeOSMemory()
			}
		}
	}
}

// sweep closes the parked connections idle for IdleTimeout.
func (p *parker) sweep(now time.Time) {
	var expired []int
	p.mu.Lock()
	for fd, c := range p.conns {
		if now.Sub(c.lastActive) >= p.s.IdleTimeout {
			expired = append(expired, fd)
		}
	}
	p.mu.Unlock()
	for _, fd := range expired {
		if c := p.take(fd); c != nil {
			p.s.Log.Debug("policyd: connection timed out", "while", "parked", "remote", c.nc.RemoteAddr())
			c.close()
		}
	}
}

// closeAll closes every parked connection (Shutdown).
func (p *parker) closeAll() {
	p.mu.Lock()
	fds := make([]int, 0, len(p.conns))
	for fd := range p.conns {
		fds = append(fds, fd)
	}
	p.mu.Unlock()
	for _, fd := range fds {
		if c := p.take(fd); c != nil {
			c.close()
		}
	}
}

// Parked returns how many connections are parked.
func (s *Server) Parked() int {
	p := s.parkerIfStarted()
	if p == nil {
		return 0
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return len(p.conns)
}
