package main

import (
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/mailnode/mailnode/dkim"
	"github.com/mailnode/mailnode/internal/drift"
	"github.com/mailnode/mailnode/internal/statuspage"
)

// whyMaillogFlag: the mail log policyd's status page reads for /why (its
// own --maillog is where it writes its decisions).
func whyMaillogFlag() cli.Flag {
	return &cli.StringSliceFlag{Name: "why-maillog", Value: cli.NewStringSlice(defaultMailLog),
		Usage: "`FILE` or glob of the mail log the status page's /why reads, as `mailnode why --maillog` (repeatable; .gz read through gzip)"}
}

// peerMetricsFlag: where the other daemon's /healthz is, for the status page.
func peerMetricsFlag(peer, key string) cli.Flag {
	return &cli.StringFlag{Name: "peer-metrics", Usage: "`HOST:PORT` of " + peer + "'s metrics listener, probed by the status page (default: " + key + ")"}
}

// peerOf is the other daemon as the status page probes it: at
// --peer-metrics, else at its metrics_listen in the inventory; not at all
// when the inventory turns it off or gives it no listener.
func peerOf(c *cli.Context, name string, enabled bool, enabledKey, addr, addrKey string) *statuspage.Peer {
	p := &statuspage.Peer{Name: name, Addr: addr}
	switch {
	case c.IsSet("peer-metrics"):
		p.Addr = c.String("peer-metrics")
	case !enabled:
		p.Addr, p.Note = "", enabledKey+" is false: not part of this node"
	case addr == "":
		p.Note = "not probed: " + addrKey + " is not set (or give --peer-metrics)"
	}
	return p
}

// guardDigests gives the status page the digests of the guard's last
// comparison.
func guardDigests(g *drift.Guard) func() (string, string) {
	return func() (string, string) {
		s := g.State()
		return s.Running, s.Installed
	}
}

// selectorRows are milterd's DKIM selectors for the status page, as the
// publisher last saw them in DNS.
func selectorRows(states []dkim.SelectorState) []statuspage.Selector {
	out := make([]statuspage.Selector, 0, len(states))
	for _, s := range states {
		row := statuspage.Selector{Domain: s.Domain, Selector: s.Selector, Algorithm: s.Algorithm, DNS: string(s.DNS), Signing: s.Signing, Why: s.Why()}
		if s.Detail != "" && !strings.Contains(row.Why, s.Detail) {
			if row.Why != "" {
				row.Why += "; "
			}
			row.Why += s.Detail
		}
		out = append(out, row)
	}
	return out
}
