//go:build !linux

package policy

import "time"

// Parking idle connections needs epoll; elsewhere every connection keeps
// its goroutine.
type parker struct{ s *Server }

func (s *Server) parker() *parker          { return nil }
func (s *Server) parkerIfStarted() *parker { return nil }
func (p *parker) add(c *conn) bool         { return false }
func (p *parker) closeAll()                {}
func (p *parker) sweep(time.Time)          {}

// Parked returns how many connections are parked: none without epoll.
func (s *Server) Parked() int { return 0 }
