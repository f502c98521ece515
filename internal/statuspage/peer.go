package statuspage

import (
	"context"
	"net/http"
	"time"

	"github.com/mailnode/mailnode/internal/daemon"
)

// Peer is the other daemon of the node, as this one's page shows it.
type Peer struct {
	Name string // policyd, milterd
	// Addr is its metrics listener (HOST:PORT); "" when it has none, Note
	// then says why it is not probed.
	Addr string
	Note string
	// Timeout bounds the probe; 1s when 0.
	Timeout time.Duration
}

// DaemonState is one line of the page's daemons table.
type DaemonState struct {
	Name     string
	Up       bool
	State    string // up, not serving (draining), down, unknown
	Digest   string // of the inventory it runs
	Note     string // the drift warning, the probe's error, a digest mismatch
	Mismatch bool   // its digest is not this daemon's
}

var probeClient = &http.Client{
	// Never follow a redirect: /healthz of a mailnode daemon has none.
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// daemons is this daemon's line and the peer's, probed now.
func (p *Page) daemons(ctx context.Context) []DaemonState {
	running, installed := p.Digest()
	self := DaemonState{Name: p.Daemon, Up: true, State: "up (this page)", Digest: running}
	if installed != running {
		self.Note = "the installed Postfix config was rendered from "
		if installed == "" {
			self.Note = "the installed Postfix config has no readable digest"
		} else {
			self.Note += installed
		}
		self.Mismatch = true
	}
	out := []DaemonState{self}
	var other *Peer
	if p.Peer != nil {
		other = p.Peer()
	}
	if other == nil {
		return out
	}
	peer := DaemonState{Name: other.Name, State: "unknown", Note: other.Note}
	if other.Addr != "" {
		timeout := other.Timeout
		if timeout <= 0 {
			timeout = time.Second
		}
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		h, err := daemon.ProbeHealth(ctx, probeClient, other.Addr)
		switch {
		case err != nil:
			peer.State, peer.Note = "down", other.Addr+": "+err.Error()
		default:
			peer.Up = h.Status == "ok"
			peer.State, peer.Digest, peer.Note = h.Status, h.Digest, h.Warning
			if h.Status != "ok" {
				peer.State += " (draining)"
			}
			if h.Digest != "" && h.Digest != running {
				peer.Mismatch = true
				peer.Note = "runs another inventory than " + p.Daemon + "; reload both"
				if h.Warning != "" {
					peer.Note += "; " + h.Warning
				}
			}
		}
	}
	return append(out, peer)
}
