package main

import (
	"fmt"
	"log/slog"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/mailnode/mailnode/dkim"
	"github.com/mailnode/mailnode/internal/daemon"
	"github.com/mailnode/mailnode/internal/statuspage"
	"github.com/mailnode/mailnode/inventory"
	"github.com/mailnode/mailnode/milter"
)

// serveMilterMetrics serves /metrics and /healthz on --metrics, else on
// milter.metrics_listen; nothing when both are empty. It returns the stop
// function.
func serveMilterMetrics(c *cli.Context, inv *inventory.Inventory, m *milter.Metrics, page *statuspage.Page, healthy func() bool, log *slog.Logger) (func(), error) {
	addr := c.String("metrics")
	if !c.IsSet("metrics") {
		addr = inv.Milter.MetricsListen
	}
	if addr == "" {
		return func() {}, nil
	}
	stop, err := daemon.ServeMetrics(log, "milterd", addr, m.Handler(healthy), page)
	if err != nil {
		return nil, cli.Exit(fmt.Sprintf("milterd: --metrics: %v", err), 1)
	}
	return stop, nil
}

// milterdStatus fills in the status page's rows from the running inventory.
func milterdStatus(page *statuspage.Page, path, listen string, inv *inventory.Inventory, keys map[string][]dkim.Key) {
	var sel []string
	for _, d := range inv.LocalDomains() {
		for _, k := range keys[d.Name] {
			sel = append(sel, k.Domain+"/"+k.Selector+"/"+k.Algorithm)
		}
	}
	rsa := "crypto/rsa"
	if dkim.OpenSSLRSA {
		rsa = "openssl"
	}
	page.Set("inventory", path)
	page.Set("listen", listen)
	page.Set("mode", inv.Policy.Mode)
	page.Set("node.resolver", inv.Node.Resolver)
	page.Set("DKIM keys", strings.Join(sel, ", "))
	page.Set("RSA signer", rsa)
	page.Set("spam engine", inv.Spam.Engine)
	if inv.SRSActive() {
		page.Set("SRS", "on: forwarded mail's sender rewritten; reversal at unix:"+inv.SRSSocket())
	} else {
		page.Set("SRS", "off")
	}
	if a := inv.Spam.Antivirus; a != nil {
		page.Set("antivirus", fmt.Sprintf("%s at %s, on_failure %s, scan_outbound %v", a.Engine, a.Address, a.OnFailure, a.ScansOutbound()))
	}
}
