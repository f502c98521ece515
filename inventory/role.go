package inventory

import (
	"net/netip"
	"reflect"
	"strings"
)

// node.role: a mail node (the default) or a null client. A null client is a
// host whose own programs send mail (an application server, a monitoring
// box): it takes no mail from the network, delivers nothing itself, and
// hands every message, for its local domains too, to postfix.relayhost.
// milterd still signs what leaves it. Its local domains are the domains it
// signs for; everything that would deliver or accept mail here is refused,
// with why, rather than silently ignored.

// nullClientWhy ends the messages about fields a null client cannot use.
const nullClientWhy = "a null client (node.role: nullclient) "

// checkRole normalizes node.role and, for a null client, refuses what it
// cannot do. It runs before the defaults are applied, so that it sees what
// the file itself sets.
func (inv *Inventory) checkRole(v *validator) {
	inv.Node.Role = strings.ToLower(strings.TrimSpace(inv.Node.Role))
	switch inv.Node.Role {
	case "":
		inv.Node.Role = RoleMailnode
	case RoleMailnode, RoleNullClient:
	default:
		v.add([]any{"node", "role"}, "%q is not one of: %s", inv.Node.Role, strings.Join(Roles, ", "))
		return
	}
	if !inv.NullClient() {
		return
	}
	p := &inv.Postfix
	if strings.TrimSpace(p.Relayhost) == "" {
		v.add([]any{"node", "role"}, nullClientWhy+"sends every message to postfix.relayhost, and none is set: name the mail node or smarthost, e.g. \"[mx1.example.com]:587\"")
	}
	if s := strings.TrimSpace(p.InetInterfaces); s != "" && !loopbackInterfaces(s) {
		v.add([]any{"postfix", "inet_interfaces"}, "%q: "+nullClientWhy+"listens on loopback only (loopback-only, the default, or loopback addresses): it takes no mail from the network", s)
	}
	for i, s := range p.SMTPListen {
		if e, ok := masterEndpoint(s); ok && e.host != "" && !loopbackHost(e.host) {
			v.add([]any{"postfix", "smtp_listen", i}, "%q: "+nullClientWhy+"takes no mail from the network; its smtpd listens on loopback only (a port, or a loopback address and port)", s)
		}
	}
	if len(p.SubmissionListen) > 0 {
		v.add([]any{"postfix", "submission_listen"}, nullClientWhy+"offers no submission service (it has no users to log in): programs submit with sendmail or to its loopback smtpd; remove the field")
	}
	if len(p.SubmissionsListen) > 0 {
		v.add([]any{"postfix", "submissions_listen"}, nullClientWhy+"offers no submission service (it has no users to log in): programs submit with sendmail or to its loopback smtpd; remove the field")
	}
	if !reflect.ValueOf(inv.Dovecot).IsZero() {
		v.add([]any{"dovecot"}, nullClientWhy+"runs no Dovecot: it keeps no mailboxes and logs nobody in; remove the section")
	}
	pol := &inv.Policy
	if pol.Enabled != nil && *pol.Enabled {
		v.add([]any{"policy", "enabled"}, nullClientWhy+"runs no policyd: its smtpd takes mail from node.trusted_networks on loopback only and relays nothing else")
	}
	for _, f := range []struct {
		key string
		set bool
	}{
		{"listen", pol.Listen != ""}, {"metrics_listen", pol.MetricsListen != ""},
		{"greylist", pol.Greylist != nil}, {"ratelimit", pol.Ratelimit != nil},
		{"state", pol.State != State{}},
	} {
		if f.set {
			v.add([]any{"policy", f.key}, nullClientWhy+"runs no policyd, which is all policy.%s configures; remove it", f.key)
		}
	}
	if len(inv.UnixUsers) > 0 {
		v.add([]any{"unix_users"}, nullClientWhy+"delivers nothing here (local delivery is disabled): mail to its unix users goes to the relayhost as user@node.hostname; remove unix_users")
	}
	for i := range inv.Domains {
		d := &inv.Domains[i]
		if d.Class == "relay" {
			v.add([]any{"domains", i, "class"}, nullClientWhy+"is nobody's backup MX: relay domain %s belongs on a mail node", d.Name)
			continue
		}
		for _, f := range []struct {
			key string
			n   int
		}{{"mailboxes", len(d.Mailboxes)}, {"aliases", len(d.Aliases)}, {"lists", len(d.Lists)}, {"transports", len(d.Transports)}} {
			if f.n > 0 {
				v.add([]any{"domains", i, f.key}, nullClientWhy+"delivers nothing and expands nothing: %s of %s belong on the mail node behind postfix.relayhost (here a local domain only names a domain milterd signs for)", f.key, d.Name)
			}
		}
	}
}

// loopbackInterfaces reports whether Postfix's inet_interfaces value s
// names loopback interfaces only.
func loopbackInterfaces(s string) bool {
	items := strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' })
	for _, it := range items {
		if strings.EqualFold(it, "loopback-only") {
			continue
		}
		if !loopbackHost(strings.Trim(it, "[]")) {
			return false
		}
	}
	return len(items) > 0
}

// loopbackHost reports whether h is a loopback address (127.0.0.0/8, ::1).
func loopbackHost(h string) bool {
	a, err := netip.ParseAddr(strings.Trim(h, "[]"))
	return err == nil && a.Unmap().IsLoopback()
}
