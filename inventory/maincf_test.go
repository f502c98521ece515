package inventory

import (
	"strings"
	"testing"
)

// TestMainCFNames: with host checks, a postfix.main_cf name Postfix does not
// know is a problem (Postfix would ignore it); without them it loads.
func TestMainCFNames(t *testing.T) {
	host := &Host{
		LookupUser:        func(string) (int, error) { return 999, nil },
		PostfixParameters: func() (map[string]bool, error) { return map[string]bool{"smtpd_helo_required": true}, nil },
	}
	src := "node: {hostname: mx1.example.com}\npostfix: {main_cf: {smtpd_helo_required: \"no\", smtpd_helo_requird: \"no\"}}\ndomains: [{name: example.com}]\n"
	_, err := ParseWith([]byte(src), "t.yaml", LoadOptions{Host: host})
	want := "t.yaml:2: postfix.main_cf.smtpd_helo_requird: smtpd_helo_requird is not a parameter this host's Postfix knows (postconf -d)"
	if err == nil || !strings.HasPrefix(err.Error(), want) || strings.Count(err.Error(), "\n") > 0 {
		t.Errorf("got %v\nwant %s", err, want)
	}
	if _, err := Parse([]byte(src), "t.yaml"); err != nil {
		t.Errorf("without host checks: %v", err)
	}
	for name, owned := range map[string]bool{"virtual_transport": true, "smtp_sasl_mechanism_filter": true, "smtpd_sasl_path": true, "smtpd_authorized_xclient_hosts": true,
		"smtpd_helo_required": false, "smtp_tls_security_level": false, "header_checks": false} {
		if got := ownedMainCF(name) != ""; got != owned {
			t.Errorf("owned(%s) = %v", name, got)
		}
	}
}
