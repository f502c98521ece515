package inventory

import (
	"strings"
)

// Transport security the node asks of its peers (postfix.outbound_tls) and
// offers to them (domains[].mta_sts, domains[].tlsrpt).

// The values of postfix.outbound_tls.
const (
	OutboundMay    = "may"
	OutboundDANE   = "dane"
	OutboundMTASTS = "mta-sts"
)

// OutboundTLSLevels are the values postfix.outbound_tls accepts.
var OutboundTLSLevels = []string{OutboundMay, OutboundDANE, OutboundMTASTS}

// MTASTSModes are the values of domains[].mta_sts.mode (RFC 8461 §5).
var MTASTSModes = []string{"enforce", "testing", "none"}

// Defaults of domains[].mta_sts.
const (
	DefaultMTASTSMode   = "testing"
	DefaultMTASTSMaxAge = 86400
	MaxMTASTSMaxAge     = 31557600 // RFC 8461 §3.2: at most a year
)

// applySecurityDefaults fills outbound_tls and each mta_sts's defaults.
func (inv *Inventory) applySecurityDefaults() {
	if inv.Postfix.OutboundTLS == "" {
		inv.Postfix.OutboundTLS = OutboundMay
	}
	for i := range inv.Domains {
		if m := inv.Domains[i].MTASTS; m != nil {
			if m.Mode == "" {
				m.Mode = DefaultMTASTSMode
			}
			if m.MaxAge == 0 {
				m.MaxAge = DefaultMTASTSMaxAge
			}
		}
	}
}

func (inv *Inventory) checkSecurity(v *validator) {
	if lv := inv.Postfix.OutboundTLS; !contains(OutboundTLSLevels, lv) {
		v.add([]any{"postfix", "outbound_tls"}, "%q is not one of: %s", lv, strings.Join(OutboundTLSLevels, ", "))
	} else if lv != OutboundMay && inv.NullClient() {
		v.add([]any{"postfix", "outbound_tls"}, "%q: a null client sends everything to postfix.relayhost, whose TLS is postfix.relayhost_tls", lv)
	}
	inv.checkDANE(v)
	if inv.NullClient() {
		for i := range inv.Domains {
			if inv.Domains[i].MTASTS != nil {
				v.add([]any{"domains", i, "mta_sts"}, "a null client receives no mail for %s: publish MTA-STS from its MX", inv.Domains[i].Name)
			}
		}
	}
}

// checkDomainSecurity checks one domain's mta_sts and tlsrpt as it is
// decoded (p prefixes its fields' paths); defaults are not applied yet.
func checkDomainSecurity(v *validator, d *Domain, p func(rest ...any) []any) {
	if m := d.MTASTS; m != nil {
		if d.Class == "relay" {
			v.add(p("mta_sts"), "%s is a relay domain: its MTA-STS policy is published by its own mail servers", d.Name)
		}
		if m.Mode != "" && !contains(MTASTSModes, m.Mode) {
			v.add(p("mta_sts", "mode"), "%q is not one of: %s", m.Mode, strings.Join(MTASTSModes, ", "))
		}
		if m.MaxAge < 0 || m.MaxAge > MaxMTASTSMaxAge {
			v.add(p("mta_sts", "max_age"), "%d: max_age is seconds, from 1 to %d (a year)", m.MaxAge, MaxMTASTSMaxAge)
		}
	}
	if d.TLSRPT == "" {
		return
	}
	if d.Class == "relay" {
		v.add(p("tlsrpt"), "%s is a relay domain: its TLS-RPT record is published by its own mail servers", d.Name)
	}
	for _, u := range strings.Split(d.TLSRPT, ",") {
		u = strings.TrimSpace(u)
		lu := strings.ToLower(u)
		switch {
		case strings.HasPrefix(lu, "mailto:") && strings.Contains(u[len("mailto:"):], "@") && !strings.ContainsAny(u, " ;\"\\") && !hasControl(u):
		case strings.HasPrefix(lu, "https://") && len(u) > len("https://") && !strings.ContainsAny(u, " ;\"\\") && !hasControl(u):
		default:
			v.add(p("tlsrpt"), "%q: each report address is mailto:user@domain or https://host/path (RFC 8460), comma-separated", u)
		}
	}
}

// MTASTSResolverProgram is the MTA-STS resolver outbound_tls: mta-sts
// needs on the host (Debian package postfix-mta-sts-resolver).
const MTASTSResolverProgram = "mta-sts-daemon"

// checkSecurityHost checks that the host has what outbound_tls asks for.
func (inv *Inventory) checkSecurityHost(v *validator, h *Host) {
	if inv.Postfix.OutboundTLS == OutboundMTASTS && h.HasProgram != nil && !h.HasProgram(MTASTSResolverProgram) {
		v.add([]any{"postfix", "outbound_tls"}, "%q needs Postfix's MTA-STS resolver, which is not installed on this host (no %s): apt-get install postfix-mta-sts-resolver", OutboundMTASTS, MTASTSResolverProgram)
	}
}
