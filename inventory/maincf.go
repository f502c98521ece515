package inventory

import (
	"regexp"
	"sort"
	"strings"
)

var mainCFNameRe = regexp.MustCompile(`^[a-z][A-Za-z0-9_]*$`)

// postfix.main_cf is the escape hatch: extra main.cf settings, written
// after everything mailnode renders (a setting mailnode also writes is
// taken out of its place and set there instead). The settings the
// contract rests on are mailnode's own and refused here, each with why;
// the others are the admin's business.

// OwnedMainCF lists, in the order the README documents them, the main.cf
// parameters postfix.main_cf may not set. A name ending in '*' is a prefix.
var OwnedMainCF = []struct{ Name, Why string }{
	{"smtpd_relay_restrictions", "it holds the ACL matrix (policyd) and Postfix's relay protection (permit_mynetworks, permit_sasl_authenticated, reject_unauth_destination)"},
	{"smtpd_recipient_restrictions", "the matrix and the relay protection live in smtpd_relay_restrictions; recipient restrictions could accept before them"},
	{"smtpd_relay_before_recipient_restrictions", "policyd's replies, not a recipient restriction's, must answer first"},
	{"smtpd_authorized_xclient_hosts", "XCLIENT lets the listed clients claim any client address, a trusted one included"},
	{"smtpd_client_restrictions", "the submission services set it (permit_sasl_authenticated, reject); a global value could open or close them"},
	{"mynetworks", "it is node.trusted_networks, nothing else"},
	{"mynetworks_style", "mynetworks is node.trusted_networks, nothing else"},
	{"smtpd_milters", "milterd signs and checks every message (milter.*)"},
	{"non_smtpd_milters", "milterd signs mail submitted on the node (milter.*)"},
	{"milter_default_action", "a failing milter must defer mail (tempfail), never pass it unchecked"},
	{"milter_protocol", "milterd speaks this protocol version"},
	{"relay_domains", "it is the relay domains of domains[]"},
	{"relay_recipient_maps", "it is domains[].recipients"},
	{"transport_maps", "it is domains[].nexthop"},
	{"virtual_*", "the local domains, mailboxes, aliases and lists of domains[]"},
	{"mydestination", "node.hostname's unix users (unix_users) are the only local(8) domain"},
	{"local_recipient_maps", "unknown unix users must be refused at RCPT"},
	{"local_transport", "local(8) delivers unix_users on a mail node, and a null client delivers nothing (node.role)"},
	{"alias_maps", "it is unix_users' aliases"},
	{"alias_database", "it is unix_users' aliases"},
	{"smtpd_reject_unlisted_recipient", "unknown users must be refused at RCPT, never accepted and bounced"},
	{"unknown_local_recipient_reject_code", "an unknown user is a permanent 550 5.1.1"},
	{"unknown_virtual_alias_reject_code", "an unknown user is a permanent 550 5.1.1"},
	{"unknown_virtual_mailbox_reject_code", "an unknown user is a permanent 550 5.1.1"},
	{"unknown_relay_recipient_reject_code", "an unknown relay recipient is a permanent 550 5.1.1"},
	{"parent_domain_matches_subdomains", "domains match exactly: a sub-domain of a local domain is outside"},
	{"smtpd_sasl_*", "SASL is Dovecot's, offered on the submission services only, after TLS"},
	{"smtpd_tls_auth_only", "AUTH is offered only after TLS"},
	{"broken_sasl_auth_clients", "AUTH is offered only as the standard extension"},
	{"smtpd_sender_login_maps", "it is the mailboxes and aliases (policy.sender_login)"},
	{"smtpd_restriction_classes", "it names the mailbox quota check at RCPT (dovecot.quota)"},
	{"compatibility_level", "the relay restrictions' order and the defaults mailnode relies on follow it"},
	{"myhostname", "use node.hostname"},
	{"relayhost", "use postfix.relayhost"},
	{"smtp_sasl_*", "use postfix.relayhost_auth"},
	{"smtp_tls_policy_maps", "use postfix.relayhost_tls"},
	{"recipient_delimiter", "use postfix.recipient_delimiter"},
	{"propagate_unmatched_extensions", "postfix.recipient_delimiter sets it"},
	{"inet_interfaces", "use postfix.inet_interfaces"},
	{"inet_protocols", "use postfix.inet_protocols"},
	{"message_size_limit", "use postfix.message_size_limit"},
	{"queue_directory", "use postfix.queue_directory"},
	{"data_directory", "use postfix.data_directory"},
	{"config_directory", "use postfix.config_directory"},
	{"maillog_file", "use postfix.maillog_file"},
	{"multi_instance_name", "use postfix.instance_name"},
	{"smtpd_tls_cert_file", "use postfix.tls"},
	{"smtpd_tls_key_file", "use postfix.tls"},
}

// ownedMainCF returns why mailnode owns a main.cf parameter, or "".
func ownedMainCF(name string) string {
	for _, o := range OwnedMainCF {
		if p, ok := strings.CutSuffix(o.Name, "*"); ok && strings.HasPrefix(name, p) || o.Name == name {
			return o.Why
		}
	}
	return ""
}

// balancedBraces reports whether every '{' of s is closed, in order.
func balancedBraces(s string) bool {
	depth := 0
	for i := 0; i < len(s); i++ {
		switch s[i] {
		case '{':
			depth++
		case '}':
			if depth--; depth < 0 {
				return false
			}
		}
	}
	return depth == 0
}

// MainCFKeys returns postfix.main_cf's names, sorted.
func (p *Postfix) MainCFKeys() []string {
	keys := make([]string, 0, len(p.MainCF))
	for k := range p.MainCF {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

func (inv *Inventory) checkMainCF(v *validator) {
	for _, k := range inv.Postfix.MainCFKeys() {
		path := []any{"postfix", "main_cf", k}
		if !mainCFNameRe.MatchString(k) {
			v.add(path, "%q is not a main.cf parameter name (a lower-case letter, then letters, digits and '_', as smtp_tls_CAfile)", k)
			continue
		}
		if why := ownedMainCF(k); why != "" {
			v.add(path, "mailnode owns %s: %s", k, why)
			continue
		}
		val := inv.Postfix.MainCF[k]
		for i := 0; i < len(val); i++ {
			if c := val[i]; c < ' ' || c >= 0x7f || c == '#' {
				what := describeByte(c)
				if c == '#' {
					what = "'#'"
				}
				v.add(path, "%q has %s at byte %d: main.cf values are printable ASCII without '#' (a line break would start a setting of its own)", val, what, i+1)
				break
			}
		}
		if strings.TrimSpace(val) != val {
			v.add(path, "%q starts or ends with white space, which main.cf drops", val)
		}
		if strings.ContainsRune(val, '"') || !balancedBraces(val) {
			v.add(path, "%q: quotes and unbalanced '{' '}' change how Postfix groups a main.cf value", val)
		}
	}
}
