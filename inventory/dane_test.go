package inventory

import (
	"errors"
	"strings"
	"testing"
)

// TestDANEResolvConf: with outbound_tls: dane, the host's resolv.conf must
// name node.resolver and no other server; without dane it is not read.
func TestDANEResolvConf(t *testing.T) {
	users := func(string) (int, error) { return 999, nil }
	base := "node: {hostname: mx1.example.com}\ndomains: [{name: example.com}]\npostfix: {outbound_tls: %s}\n"
	for _, c := range []struct{ level, conf, want string }{
		{"dane", "# local\nnameserver 127.0.0.1\noptions edns0 trust-ad\n", ""},
		{"dane", "nameserver 127.0.0.1\nnameserver 192.0.2.53\n", `t.yaml:3: postfix.outbound_tls: dane: /etc/resolv.conf names nameserver 192.0.2.53: Postfix would take its DNSSEC verdict on TLSA records; it must name node.resolver only (nameserver 127.0.0.1)`},
		{"dane", "nameserver 127.0.0.53\n", `t.yaml:3: postfix.outbound_tls: dane: /etc/resolv.conf names nameserver 127.0.0.53:`},
		{"dane", "search example.com\n", `t.yaml:3: postfix.outbound_tls: dane: /etc/resolv.conf names no nameserver`},
		{"dane", "", `t.yaml:3: postfix.outbound_tls: dane: cannot read /etc/resolv.conf: gone`},
		{"may", "nameserver 192.0.2.53\n", ""},
	} {
		read := func() ([]byte, error) {
			if c.conf == "" {
				return nil, errors.New("gone")
			}
			return []byte(c.conf), nil
		}
		src := strings.Replace(base, "%s", c.level, 1)
		_, err := ParseWith([]byte(src), "t.yaml", LoadOptions{Host: &Host{LookupUser: users, ResolvConf: read}})
		if c.want == "" {
			if err != nil {
				t.Errorf("%s %q: %v", c.level, c.conf, err)
			}
			continue
		}
		if err == nil || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("%s %q: got %v\nwant prefix %s", c.level, c.conf, err, c.want)
		}
		// The daemons load without the host: the same inventory is fine.
		if _, err := Parse([]byte(src), "t.yaml"); err != nil {
			t.Errorf("%s %q without the host: %v", c.level, c.conf, err)
		}
	}
}
